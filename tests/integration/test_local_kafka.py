"""The launcher itself: idempotent up, down that stops, data kept across restarts, a secure home
kept secure."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import uuid

import pytest
from confluent_kafka import Consumer, KafkaException
from confluent_kafka.admin import AdminClient

from adaptloop.localkafka import LocalKafka
from adaptloop.schemas import OutcomeEvent, decode
from adaptloop.schemas.topics import OUTCOMES
from adaptloop.settings import Settings
from adaptloop.streams import EventProducer, ensure_topics
from adaptloop.streams.admin import wait_for_broker
from adaptloop.testing import free_ports

pytestmark = pytest.mark.kafka


def _read_all(bootstrap: str, topic: str, expected: int) -> list[bytes]:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": uuid.uuid4().hex,
            "auto.offset.reset": "earliest",
        }
    )
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
    kafka = LocalKafka(
        tmp_path / "kafka", Settings().cache_dir, port=port, controller_port=controller_port
    )
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


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "adaptloop", "kafka", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    except OSError:
        return False
    return True


def test_a_home_made_secure_opens_no_plaintext_listener_unless_asked(tmp_path):
    port, controller_port, secure_port = free_ports(3)
    env = {
        **os.environ,
        "ADAPTLOOP_HOME": str(tmp_path / "home"),
        "ADAPTLOOP_KAFKA_PORT": str(port),
        "ADAPTLOOP_KAFKA_CONTROLLER_PORT": str(controller_port),
        "ADAPTLOOP_KAFKA_SECURE_PORT": str(secure_port),
        "COLUMNS": "200",
    }
    # the port is the home's
    plain = {k: v for k, v in env.items() if k != "ADAPTLOOP_KAFKA_SECURE_PORT"}
    try:
        made = _cli(env, "up", "--secure")
        assert made.returncode == 0, made.stdout + made.stderr
        assert _cli(env, "down").returncode == 0

        # Started again as a plain `kafka up`: the secured listener only, at the port the home was
        # made with.
        again = _cli(plain, "up")
        assert again.returncode == 0, again.stdout + again.stderr
        assert f"127.0.0.1:{secure_port}" in again.stdout and "warning" not in again.stdout
        assert not _listening(port) and _listening(secure_port)
        kafka = LocalKafka(
            tmp_path / "home" / "kafka",
            Settings().cache_dir,
            port=port,
            controller_port=controller_port,
        )
        assert (kafka.secure_port, kafka.plaintext) == (secure_port, False)
        assert (
            wait_for_broker(kafka.secure_connection("admin"), 60).list_topics(timeout=30)
            is not None
        )
        anonymous = AdminClient(
            {"bootstrap.servers": f"127.0.0.1:{port}", "socket.timeout.ms": 3000, "log_level": 0}
        )
        with pytest.raises(KafkaException):
            anonymous.list_topics(timeout=5)
        assert _cli(plain, "down").returncode == 0

        # Asked explicitly: the plaintext listener opens, with a warning that its clients are super
        # users.
        opened = _cli(plain, "up", "--plaintext")
        assert opened.returncode == 0, opened.stdout + opened.stderr
        assert "warning" in opened.stdout and "super user" in opened.stdout
        assert _listening(port) and _listening(secure_port)
    finally:
        _cli(plain, "down")
