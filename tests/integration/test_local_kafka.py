"""The launcher itself: idempotent up, down that stops, data kept across restarts."""

from __future__ import annotations

import uuid

import pytest
from confluent_kafka import Consumer

from adaptloop.localkafka import LocalKafka
from adaptloop.schemas import OutcomeEvent, decode
from adaptloop.schemas.topics import OUTCOMES
from adaptloop.settings import Settings
from adaptloop.streams import EventProducer, ensure_topics
from adaptloop.testing import free_ports

pytestmark = pytest.mark.kafka


def _read_all(bootstrap: str, topic: str, expected: int) -> list[bytes]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": uuid.uuid4().hex, "auto.offset.reset": "earliest"})
    consumer.subscribe([topic])
    values: list[bytes] = []
    for _ in range(60):
        values.extend(m.value() for m in consumer.consume(100, 0.5) if m.error() is None)
        if len(values) >= expected:
            break
    consumer.close()
    return values


def test_up_is_idempotent_down_stops_and_data_survives(tmp_path):
    port, controller_port = free_ports(2)
    kafka = LocalKafka(tmp_path / "kafka", Settings().cache_dir, port=port, controller_port=controller_port)
    try:
        first = kafka.up()
        assert first.running and not first.already_running
        again = kafka.up()
        assert again.already_running and again.pid == first.pid

        ensure_topics(kafka.bootstrap, topics=[OUTCOMES], partitions=1)
        with EventProducer(kafka.bootstrap) as producer:
            producer.send(OutcomeEvent(decision_id="kept", label=True, source="test"))

        assert kafka.down() is True
        assert kafka.status().running is False and kafka.pid() is None
        assert kafka.down() is False

        restarted = kafka.up()
        assert restarted.running and restarted.pid != first.pid
        values = _read_all(kafka.bootstrap, OUTCOMES.name, 1)
        assert [decode(OUTCOMES, value).decision_id for value in values] == ["kept"]
    finally:
        kafka.down()
