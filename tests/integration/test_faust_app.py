"""A faust app as a service of the loop (adaptloop.faust.LoopModel): a real faust worker scores
orders in-stream, each with the version current when it came (swapped in by itself as the loop
learns), and logs decisions and outcomes that the loop learns, every one exactly once."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid

import orjson
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from confluent_kafka.admin import NewTopic

from adaptloop.learners.spec import LearnerSpec
from adaptloop.schemas import ModelVersion
from adaptloop.schemas.topics import MODEL_UPDATES
from adaptloop.streams.admin import delete_topics, wait_for_broker
from adaptloop.streams.versions import read_all
from adaptloop.worker import settings_env

from .loop_helpers import loop_settings, running_worker

pytestmark = pytest.mark.kafka

WAIT = 300.0
"""Seconds for an answer or a version to come: the first wave's wait holds the faust app's and the
worker's start-ups, which a loaded machine stretches several times over (a wait for what is
asserted, ended as soon as it comes)."""


class _Answers:
    """The app's answers, read as they come."""

    def __init__(self, bootstrap: str, topic: str, app: subprocess.Popen, log) -> None:
        self.consumer = Consumer(
            {"bootstrap.servers": bootstrap, "group.id": f"answers-{uuid.uuid4().hex}"}
        )
        self.consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        self.app, self.log, self.got = app, log, []

    def read(self, want: int, timeout: float = WAIT) -> list[dict]:
        deadline = time.monotonic() + timeout
        while len(self.got) < want and time.monotonic() < deadline:
            assert self.app.poll() is None, self.log.read_text()[-3000:]
            self.got += [
                orjson.loads(m.value())
                for m in self.consumer.consume(500, 0.5)
                if m.error() is None
            ]
        assert len(self.got) >= want, f"{len(self.got)} of {want} orders answered"
        return self.got


def test_a_faust_app_scores_with_the_current_version_and_its_decisions_are_learned(
    kafka_bootstrap, tmp_path
):
    spec = LearnerSpec(
        name="orders",
        recipe="logistic",
        min_examples=50,
        default_prediction=False,
        checkpoint_every=100,
        checkpoint_seconds=1,
    )
    settings = loop_settings(kafka_bootstrap, tmp_path / "home", [spec], partitions=2)
    app_id = f"faustapp{uuid.uuid4().hex[:8]}"
    orders_topic, answers_topic = f"{app_id}.orders", f"{app_id}.answers"
    env = {
        **os.environ,
        **settings_env(settings),
        "FAUST_APP_ID": app_id,
        "FAUST_BROKER": kafka_bootstrap,
        "FAUST_MODEL": "orders",
        "FAUST_ORDERS": orders_topic,
        "FAUST_ANSWERS": answers_topic,
    }
    log = tmp_path / "faust.log"
    admin = wait_for_broker(kafka_bootstrap)
    for future in admin.create_topics(
        [NewTopic(t, 1, 1) for t in (orders_topic, answers_topic)]
    ).values():
        future.result()
    with running_worker(settings, tmp_path / "worker.log") as worker:
        with open(log, "wb") as out:
            app = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tests.integration.faust_scoring_app",
                    "worker",
                    "--loglevel",
                    "warn",
                ],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        try:
            producer, sent = Producer({"bootstrap.servers": kafka_bootstrap}), 0
            answers = _Answers(kafka_bootstrap, answers_topic, app, log)

            def send(count: int) -> None:
                nonlocal sent
                for i in range(sent, sent + count):
                    features = {"basket": float(i % 9), "visits": float(i % 4)}
                    order = {"id": f"order-{i}", "features": features, "label": i % 9 < 3}
                    producer.produce(orders_topic, orjson.dumps(order), key=order["id"].encode())
                sent += count
                producer.flush(30)
                answers.read(sent)

            def published(examples: int) -> ModelVersion:
                deadline = time.monotonic() + WAIT
                while time.monotonic() < deadline:
                    worker.check_alive()
                    versions = read_all(kafka_bootstrap, MODEL_UPDATES, settings.topic_prefix)
                    learned = [
                        v
                        for v in versions
                        if isinstance(v, ModelVersion) and v.examples_seen >= examples
                    ]
                    if learned:
                        return learned[0]
                    time.sleep(0.5)
                raise AssertionError(f"no version learned {examples} examples within {WAIT:.0f} s")

            def since(version: ModelVersion) -> set[str]:
                """``version`` and those the learner published after it: it goes on publishing
                as it learns the waves (once a second), meanwhile the app swaps."""
                return {
                    v.version
                    for v in read_all(kafka_bootstrap, MODEL_UPDATES, settings.topic_prefix)
                    if isinstance(v, ModelVersion) and v.examples_seen >= version.examples_seen
                }

            # Waves: each one scored after the loop learned the one before; the app swaps versions
            # by itself.
            send(200)
            published(200)
            send(200)
            newer = published(400)
            deadline = time.monotonic() + 120
            while answers.got[-1]["version"] not in since(newer) and time.monotonic() < deadline:
                send(20)
            final = published(sent)
        finally:
            app.terminate()
            app.wait(60)
            delete_topics(kafka_bootstrap, f"{app_id}")

    got = answers.got
    assert sorted(a["decision_id"] for a in got) == sorted(f"order-{i}" for i in range(sent))
    assert final.examples_seen == sent  # every decision and outcome it logged, learned once
    versions = {v.version for v in read_all(kafka_bootstrap, MODEL_UPDATES, settings.topic_prefix)}
    served = [a["version"] for a in got if not a["fallback"]]
    assert {a["version"] for a in got if a["fallback"]} <= {"default"}
    assert set(served) <= versions and len(set(served)) >= 2  # new versions swapped in while it ran
    assert got[-1]["version"] in since(newer)
