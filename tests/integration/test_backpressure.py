"""Backpressure: a producer far faster than the loop neither crashes the worker nor grows its memory
without bound. Kafka holds the backlog; each role reads it in bounded batches."""

from __future__ import annotations

import subprocess
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from confluent_kafka import Consumer
from river.datasets import synth

from adaptloop.learners.spec import LearnerSpec
from adaptloop.roles import ROLES, process_name, roles_of
from adaptloop.schemas import ModelVersion, OutcomeEvent, PredictionEvent, encode
from adaptloop.schemas.topics import MODEL_UPDATES, OUTCOMES, PREDICTIONS
from adaptloop.streams import EventProducer
from adaptloop.streams.reader import watermarks

from .loop_helpers import loop_settings, read_until, running_worker

pytestmark = pytest.mark.kafka

N = 150_000
PEAK_RSS_MB = {"join": 600, "learn": 500, "archive": 900, "agents": 300}


def _roles(worker_pid: int) -> dict[str, int]:
    """The worker's role processes, by role (each names its process, see
    adaptloop.roles.process_name)."""
    names = {process_name(role): role for role in ROLES}
    found = {}
    for pid in subprocess.run(
        ["pgrep", "-P", str(worker_pid)], capture_output=True, text=True
    ).stdout.split():
        try:
            with open(f"/proc/{pid}/comm") as comm:
                name = comm.read().strip()
        except FileNotFoundError:
            continue
        if name in names:
            found[names[name]] = int(pid)
    return found


def _kb(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(f"{field}:"))


def _records(bootstrap: str, topic: str) -> int:
    """How many records ``topic`` holds (its partitions' high watermarks: nothing is compacted or
    deleted in a test's topics)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "backpressure-count"})
    try:
        partitions = consumer.list_topics(topic, timeout=30).topics[topic].partitions
        return sum(high for _, high in watermarks(consumer, topic, partitions, 30).values())
    finally:
        consumer.close()


def test_a_flood_far_faster_than_the_loop_is_absorbed_in_bounded_memory(kafka_bootstrap, tmp_path):
    spec = LearnerSpec(
        name="flood",
        recipe="logistic",
        metrics=["Accuracy"],
        checkpoint_every=10_000,
        checkpoint_seconds=2,
        horizon_seconds=2,
    )
    settings = loop_settings(kafka_bootstrap, tmp_path / "home", [spec], partitions=3)
    predictions, outcomes = (
        PREDICTIONS.full_name(settings.topic_prefix),
        OUTCOMES.full_name(settings.topic_prefix),
    )
    # The whole flood is in Kafka before the worker starts: a producer infinitely faster than the
    # loop, whatever the machine's load (a flood sent while the loop ran would outrun it only by
    # as much as the load allowed). The join's clock follows the events of a backlog, and a clock
    # tick moves it only once a partition is read to its end, so none of them expires waiting.
    start = datetime.now(UTC)
    with EventProducer(kafka_bootstrap, topic_prefix=settings.topic_prefix) as producer:
        for i, (x, y) in enumerate(synth.Hyperplane(seed=5, n_features=10).take(N)):
            at = start + timedelta(microseconds=i)
            key = f"d{i}".encode()
            features = {f"x{k}": v for k, v in x.items()}
            producer.send_bytes(
                predictions,
                key,
                encode(
                    PredictionEvent(
                        decision_id=f"d{i}",
                        model="flood",
                        model_version="v0",
                        features=features,
                        timestamp=at,
                    )
                ),
            )
            producer.send_bytes(
                outcomes,
                key,
                encode(
                    OutcomeEvent(decision_id=f"d{i}", label=bool(y), source="flood", timestamp=at)
                ),
            )
    assert _records(kafka_bootstrap, predictions) == _records(kafka_bootstrap, outcomes) == N
    began = time.monotonic()
    with running_worker(settings, tmp_path / "worker.log") as worker:
        deadline = time.monotonic() + 120
        while (
            set(roles := _roles(worker.process.pid)) != set(roles_of(settings))
            and time.monotonic() < deadline
        ):
            time.sleep(0.2)  # a role still starting has not named its process yet
        assert set(roles) == set(roles_of(settings)), roles  # no webhooks: no notify role
        peak: dict[str, int] = dict.fromkeys(roles, 0)
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                for name, pid in roles.items():
                    peak[name] = max(peak[name], _kb(pid, "VmRSS"))
                time.sleep(0.2)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        seen = read_until(
            settings,
            [MODEL_UPDATES],
            lambda seen: any(isinstance(v, ModelVersion) and v.examples_seen == N for v in seen),
            timeout=600,
            worker=worker,
        )
        learned_in = time.monotonic() - began
        stop.set()
        sampler.join()
        # the kernel's peak RSS, over each role's whole life
        high_water = {name: _kb(pid, "VmHWM") for name, pid in roles.items()}
    # every decision, once
    assert max(v.examples_seen for v in seen if isinstance(v, ModelVersion)) == N
    print(
        f"learned a backlog of {N:,} decisions in {learned_in:.1f}s; peak RSS MB",
        {role: round(kb / 1024) for role, kb in high_water.items()},
    )
    for role, kb in high_water.items():
        assert kb / 1024 < PEAK_RSS_MB[role], (
            f"{role} peaked at {kb / 1024:.0f} MB (sampled {peak[role] / 1024:.0f})"
        )
