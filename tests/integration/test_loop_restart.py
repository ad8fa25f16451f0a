"""A worker SIGKILLed three times at random points of a 100k-decision run and restarted each time
learns every example exactly once (the model is byte-identical to River's uninterrupted in-process
run), joins each decision exactly once, and archives every record exactly once (no duplicate, no
gap)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import duckdb
import pytest
from river import linear_model, metrics, preprocessing
from river.datasets import synth

from adaptloop.learners.spec import LearnerSpec
from adaptloop.learners.store import ModelStore, model_bytes
from adaptloop.schemas import ModelVersion, OutcomeEvent, PredictionEvent
from adaptloop.schemas.topics import MODEL_UPDATES, OUTCOMES, PREDICTIONS, TRAINING_EXAMPLES
from adaptloop.snapshots.archive import topic_glob
from adaptloop.streams import EventProducer
from adaptloop.worker import kill_worker_process

from .loop_helpers import (
    Worker,
    committed_offsets,
    loop_settings,
    read_until,
    running_worker,
    wait_for_archive,
)

pytestmark = pytest.mark.kafka

N = 100_000
KILLS = 3


def _versions(events) -> list[ModelVersion]:
    return [e for e in events if isinstance(e, ModelVersion)]


def test_sigkill_and_restart_learns_each_example_exactly_once(kafka_bootstrap, tmp_path):
    spec = LearnerSpec(
        name="hyperplane", metrics=["Accuracy"], checkpoint_every=1000, checkpoint_seconds=1
    )
    settings = loop_settings(kafka_bootstrap, tmp_path / "home", [spec], partitions=1)
    # Small archive batches, so the kills land while files are being written.
    settings = settings.model_copy(
        update={"archive_flush_seconds": 0.2, "archive_flush_rows": 700, "snapshot_seconds": None}
    )
    stream = [
        ({f"x{k}": v for k, v in x.items()}, bool(y))
        for x, y in synth.Hyperplane(seed=42, n_features=10).take(N)
    ]
    start = datetime.now(UTC)
    with EventProducer(kafka_bootstrap, topic_prefix=settings.topic_prefix) as producer:
        for i, (x, y) in enumerate(stream):
            at = start + timedelta(milliseconds=i)
            producer.send(
                PredictionEvent(
                    decision_id=f"d{i}",
                    model="hyperplane",
                    model_version="v0",
                    features=x,
                    timestamp=at,
                )
            )
            producer.send(OutcomeEvent(decision_id=f"d{i}", label=y, source="test", timestamp=at))

    # Random points (seeded, so a failure can be replayed) while the join and the learner are
    # mid-stream.
    thresholds = sorted(random.Random(7).sample(range(2_000, N - 10_000), KILLS))
    for kills, threshold in enumerate(thresholds):
        worker = Worker(settings, tmp_path / f"worker-{kills}.log")
        read_until(
            settings,
            [MODEL_UPDATES],
            lambda seen, threshold=threshold: any(
                v.examples_seen >= threshold for v in _versions(seen)
            ),
            timeout=240,
            worker=worker,
        )
        kill_worker_process(worker.process)
    with running_worker(settings, tmp_path / "worker-final.log") as worker:
        seen = read_until(
            settings,
            [MODEL_UPDATES],
            lambda seen: any(v.examples_seen == N for v in _versions(seen)),
            timeout=420,
            worker=worker,
        )
        kafka_offsets = {
            topic.name: committed_offsets(kafka_bootstrap, topic.full_name(settings.topic_prefix))
            for topic in (PREDICTIONS, OUTCOMES, TRAINING_EXAMPLES)
        }
        archived = wait_for_archive(
            settings, {name: len(offsets) for name, offsets in kafka_offsets.items()}
        )
    # The archive holds each record of Kafka exactly once, kills or not.
    for name, offsets in kafka_offsets.items():
        assert archived[name] == offsets, name
    assert len(kafka_offsets["predictions"]) == len(kafka_offsets["outcomes"]) == N
    # The join commits its outputs with its input offsets in one transaction: after the SIGKILLs
    # each decision has exactly one committed training example, not one more.
    with duckdb.connect() as db:
        rows, decisions, joined = db.execute(
            "SELECT count(*), count(DISTINCT decision_id), count(*) FILTER (WHERE status = "
            "'joined') "
            "FROM read_parquet(?)",
            [
                topic_glob(
                    settings.archive_location, TRAINING_EXAMPLES.full_name(settings.topic_prefix)
                )
            ],
        ).fetchone()
    assert rows == decisions == joined == N

    final = [v for v in _versions(seen) if v.examples_seen == N]
    assert final, f"never reached {N}: {[v.examples_seen for v in _versions(seen)][-5:]}"
    assert max(v.examples_seen for v in _versions(seen)) == N  # nothing learned twice

    reference = preprocessing.StandardScaler() | linear_model.LogisticRegression()
    accuracy = metrics.Accuracy()
    for x, y in stream:
        accuracy.update(y, reference.predict_one(x))
        reference.learn_one(x, y)
    store = ModelStore(settings.models_dir)
    assert store.load_bytes("hyperplane", final[-1].version) == model_bytes(reference)
    assert final[-1].metrics["shadow.Accuracy"] == accuracy.get()
    # The lineage is one unbroken chain of parents, crash or not: every version published is on it.
    chain = {v.version: v.parent for v in _versions(seen)}
    version, length = final[-1].version, 0
    while chain.get(version) is not None:
        version, length = chain[version], length + 1
    assert chain[version] is None and length == len(chain) - 1 and length >= 10
