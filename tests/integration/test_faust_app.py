"""A faust app as a service of the loop (adaptloop.faust.LoopModel): a real faust worker scores orders
in-stream, each with the version current when it came (swapped in by itself as the loop learns), and logs
decisions and outcomes that the loop learns, every one exactly once."""

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

N = 600


def _answers(bootstrap: str, topic: str, want: int, timeout: float, app: subprocess.Popen, log) -> list[dict]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"answers-{uuid.uuid4().hex}"})
    consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    got: list[dict] = []
    try:
        deadline = time.monotonic() + timeout
        while len(got) < want and time.monotonic() < deadline:
            assert app.poll() is None, log.read_text()[-3000:]
            got += [orjson.loads(m.value()) for m in consumer.consume(500, 0.5) if m.error() is None]
    finally:
        consumer.close()
    return got


def test_a_faust_app_scores_with_the_current_version_and_its_decisions_are_learned(kafka_bootstrap, tmp_path):
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
    for future in admin.create_topics([NewTopic(t, 1, 1) for t in (orders_topic, answers_topic)]).values():
        future.result()
    with running_worker(settings, tmp_path / "worker.log") as worker:
        with open(log, "wb") as out:
            app = subprocess.Popen(
                [sys.executable, "-m", "tests.integration.faust_scoring_app", "worker", "--loglevel", "warn"],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        try:
            producer = Producer({"bootstrap.servers": kafka_bootstrap})
            for i in range(N):
                features = {"basket": float(i % 9), "visits": float(i % 4)}
                order = {"id": f"order-{i}", "features": features, "label": i % 9 < 3}
                producer.produce(orders_topic, orjson.dumps(order), key=order["id"].encode())
                if i % 50 == 49:  # in waves, so that versions are published while the app scores
                    producer.flush(30)
                    time.sleep(1.0)
            producer.flush(30)
            answers = _answers(kafka_bootstrap, answers_topic, N, 180, app, log)
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                versions = [
                    v
                    for v in read_all(kafka_bootstrap, MODEL_UPDATES, settings.topic_prefix)
                    if isinstance(v, ModelVersion)
                ]
                if versions and max(v.examples_seen for v in versions) >= N:
                    break
                worker.check_alive()
                time.sleep(1)
        finally:
            app.terminate()
            app.wait(60)
            delete_topics(kafka_bootstrap, f"{app_id}")

    assert sorted(a["decision_id"] for a in answers) == sorted(f"order-{i}" for i in range(N))
    assert max(v.examples_seen for v in versions) == N  # every decision and outcome it logged, learned once
    published = {v.version for v in versions}
    served = [a["version"] for a in answers if not a["fallback"]]
    assert {a["version"] for a in answers if a["fallback"]} <= {"default"}
    assert set(served) <= published and len(set(served)) >= 2  # new versions swapped in while it ran
    assert served[-1] != served[0]
