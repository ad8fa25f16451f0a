"""A small model publishes a version at every ``checkpoint_every`` examples, however slow its
checkpoints' writes."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime

import pytest
from river.datasets import synth

from adaptloop.learners.spec import LearnerSpec
from adaptloop.learners.store import ModelStore
from adaptloop.schemas import ModelVersion, TrainingExample
from adaptloop.schemas.topics import MODEL_UPDATES
from adaptloop.streams import EventProducer, ensure_topics
from adaptloop.streams.learner_agent import SMALL_MODEL_BYTES, LearnerAgent
from adaptloop.streams.versions import read_all

pytestmark = pytest.mark.kafka

N, EVERY = 600, 100
# a loaded host's fsync: over the 50 ms that once counted a checkpoint as costly
SLOW_WRITE_SECONDS = 0.08


def test_a_small_model_with_slow_checkpoints_versions_at_every_count(kafka_bootstrap, tmp_path):
    prefix = f"counts{uuid.uuid4().hex[:6]}."
    ensure_topics(kafka_bootstrap, prefix=prefix, partitions=1)
    at = datetime.now(UTC)
    with EventProducer(kafka_bootstrap, topic_prefix=prefix) as producer:
        for i, (x, y) in enumerate(synth.Hyperplane(seed=3, n_features=4).take(N)):
            producer.send(
                TrainingExample(
                    model="m",
                    decision_id=f"d{i}",
                    model_version="v0",
                    features={f"x{k}": v for k, v in x.items()},
                    prediction=True,
                    label=bool(y),
                    predicted_at=at,
                )
            )
    store = ModelStore(tmp_path / "models")
    write = store.storage.write
    slow_writes = []

    def slow_write(key: str, data: bytes) -> None:
        time.sleep(SLOW_WRITE_SECONDS)
        write(key, data)
        slow_writes.append(key)

    store.storage.write = slow_write  # type: ignore[method-assign]
    spec = LearnerSpec(
        name="m", recipe="logistic", checkpoint_every=EVERY, checkpoint_seconds=None, min_examples=0
    )
    agent = LearnerAgent(
        kafka_bootstrap, specs={"m": spec}, store=store, prefix=prefix, group="counts"
    )
    try:
        agent.publish_missing()
        deadline = time.monotonic() + 120
        while agent.learners["m"].progress.examples_seen < N and time.monotonic() < deadline:
            agent.step(0.2)
        agent.producer.flush()
    finally:
        agent.consumer.close()

    versions = [
        v for v in read_all(kafka_bootstrap, MODEL_UPDATES, prefix) if isinstance(v, ModelVersion)
    ]
    assert [v.examples_seen for v in versions] == list(range(0, N + 1, EVERY))
    assert all(v.size_bytes < SMALL_MODEL_BYTES for v in versions)
    # every version's model file and its checkpoint were written slowly (behind the learner, which
    # counts only the time it spent itself)
    assert len(slow_writes) >= 2 * len(versions)


def test_a_promotion_between_counts_moves_no_count_based_version(kafka_bootstrap, tmp_path):
    """Under the default ``challenger`` policy, a promotion publishes a version at whatever example
    the evidence came; the count-based versions still fall on multiples of ``checkpoint_every`` of
    the stream, so a stream of such a multiple ends on a version that learned all of it, and whoever
    waits for it (ingest, the demo, the bench, a service's script) finds it."""
    from adaptloop.learners.drift_eval import sine_stream
    from adaptloop.learners.spec import DriftSpec

    n, every = 7000, 700
    prefix = f"promoted{uuid.uuid4().hex[:6]}."
    ensure_topics(kafka_bootstrap, prefix=prefix, partitions=1)
    at = datetime.now(UTC)
    with EventProducer(kafka_bootstrap, topic_prefix=prefix) as producer:
        for i, (x, y) in enumerate(sine_stream(seed=7, n=n, drift_at=6000)):
            producer.send(
                TrainingExample(
                    model="sine",
                    decision_id=str(i),
                    model_version="v0",
                    features={f"x{k}": v for k, v in x.items()},
                    prediction=False,
                    label=y,
                    predicted_at=at,
                )
            )
    spec = LearnerSpec(
        name="sine",
        metrics=["Accuracy"],
        drift=DriftSpec(policy="challenger", data=False),
        checkpoint_every=every,
        checkpoint_seconds=None,
        min_examples=0,
    )
    agent = LearnerAgent(
        kafka_bootstrap,
        specs={"sine": spec},
        store=ModelStore(tmp_path / "models"),
        prefix=prefix,
        group="promoted",
    )
    try:
        agent.publish_missing()
        deadline = time.monotonic() + 120
        while agent.learners["sine"].progress.examples_seen < n and time.monotonic() < deadline:
            agent.step(0.2)
        agent.producer.flush()
        # read while the learner runs: closing it publishes what it has learned, whatever the count
        versions = [
            (v.examples_seen, v.reason)
            for v in read_all(kafka_bootstrap, MODEL_UPDATES, prefix)
            if isinstance(v, ModelVersion)
        ]
    finally:
        agent.consumer.close()

    # (the promotion's example: as in tests/unit/learners/test_promotion.py, the same stream)
    assert versions == [
        (0, "initial"),
        *[(count, "checkpoint") for count in range(every, 6300 + 1, every)],
        (6315, "promotion"),
        (n, "checkpoint"),
    ]
