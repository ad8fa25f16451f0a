"""A broker restart mid-run: producers and workers resume, and no event is lost (idempotent producers, acks=all)."""

from __future__ import annotations

import time

import pytest
from river import datasets

from adaptloop.learners.spec import LearnerSpec
from adaptloop.localkafka import LocalKafka
from adaptloop.schemas import ModelVersion
from adaptloop.schemas.topics import MODEL_UPDATES
from adaptloop.settings import Settings
from adaptloop.streams import EventProducer
from adaptloop.testing import free_ports

from .loop_helpers import loop_settings, read_until, running_worker, send_decisions

pytestmark = pytest.mark.kafka


def test_producers_and_workers_resume_after_a_broker_restart(kafka_bootstrap, tmp_path):
    # A broker of its own (the session's broker serves the other tests); kafka_bootstrap only proves jars exist.
    base = Settings()
    port, controller = free_ports(2)
    kafka = LocalKafka(
        tmp_path / "kafka",
        base.cache_dir,
        port=port,
        controller_port=controller,
        heap=base.kafka_heap,
        start_timeout=base.kafka_start_timeout,
    )
    kafka.up()
    try:
        spec = LearnerSpec(
            name="phishing", recipe="logistic", metrics=["Accuracy"], checkpoint_every=250, checkpoint_seconds=1
        )
        settings = loop_settings(kafka.bootstrap, tmp_path / "home", [spec], partitions=2)
        rows = list(datasets.Phishing())
        with running_worker(settings, tmp_path / "worker.log") as worker:
            producer = EventProducer(kafka.bootstrap, topic_prefix=settings.topic_prefix)
            send_decisions(producer, rows[:600], 0)
            producer.flush()
            read_until(
                settings,
                [MODEL_UPDATES],
                lambda seen: any(isinstance(v, ModelVersion) and v.examples_seen >= 500 for v in seen),
                timeout=120,
                worker=worker,
            )
            kafka.down()  # the broker goes away mid-run...
            send_decisions(producer, rows[600:], 600)  # ...while the service keeps producing (buffered, retried)
            time.sleep(5)
            kafka.up()  # ...and comes back with its data
            producer.flush(120)  # every event is acknowledged: none was lost
            seen = read_until(
                settings,
                [MODEL_UPDATES],
                lambda seen: any(isinstance(v, ModelVersion) and v.examples_seen == len(rows) for v in seen),
                timeout=300,
                worker=worker,
            )
        versions = [v for v in seen if isinstance(v, ModelVersion)]
        assert max(v.examples_seen for v in versions) == len(rows)  # each decision learned once, none lost
    finally:
        kafka.down()
