"""Two workers in one group share the partitions; each model is still learned exactly once."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta

import pytest
from river import datasets

from adaptloop.learners.spec import LearnerSpec
from adaptloop.schemas import ModelVersion, OutcomeEvent, PredictionEvent
from adaptloop.schemas.topics import MODEL_UPDATES
from adaptloop.streams import EventProducer
from adaptloop.worker import stop_worker_process

from .loop_helpers import Worker, loop_settings, read_until

pytestmark = pytest.mark.kafka

MODELS = ("alpha", "beta", "gamma", "delta")


def test_two_workers_share_the_work_and_learn_each_example_once(kafka_bootstrap, tmp_path):
    specs = [
        LearnerSpec(name=name, metrics=["Accuracy"], checkpoint_every=250, checkpoint_seconds=1)
        for name in MODELS
    ]
    settings = loop_settings(kafka_bootstrap, tmp_path / "home", specs, partitions=2).model_copy(
        update={"log_level": "debug"}
    )
    rows = list(datasets.Phishing())
    workers = [Worker(settings, tmp_path / f"worker-{n}.log") for n in range(2)]
    try:
        deadline = time.monotonic() + 90
        while _assignments(workers) != [[0], [1]] and time.monotonic() < deadline:
            for worker in workers:
                worker.check_alive()
            time.sleep(0.5)
        assert _assignments(workers) == [[0], [1]], "the two learners did not split the partitions"
        _produce(settings, rows)
        seen = read_until(
            settings,
            [MODEL_UPDATES],
            lambda s: (
                {v.model for v in s if isinstance(v, ModelVersion) and v.examples_seen == len(rows)}
                == set(MODELS)
            ),
            timeout=240,
            worker=workers[0],
        )
        for worker in workers:
            worker.check_alive()
        assert _assignments(workers) == [[0], [1]]  # no rebalance moved the work meanwhile
    finally:
        for worker in workers:
            stop_worker_process(worker.process)

    versions = [v for v in seen if isinstance(v, ModelVersion)]
    for name in MODELS:
        assert max(v.examples_seen for v in versions if v.model == name) == len(rows), name
    # Each model was learned by one worker: the two never both publish a version with learning in
    # it.
    published = [
        {
            model
            for model, examples in re.findall(
                r"published (\w+) \w+ \((\d+) examples\)", w.log_file.read_text()
            )
            if int(examples) > 0
        }
        for w in workers
    ]
    assert published[0] | published[1] == set(MODELS) and not published[0] & published[1]


def _assignments(workers: list[Worker]) -> list[list[int]]:
    """The latest partitions of each worker's learner, sorted (training-examples and model-commands
    are co-partitioned: the "range" assignment gives a worker the same partition of both)."""
    latest = []
    for worker in workers:
        lines = (
            re.findall(r"learner assigned \[(.*?)\]", worker.log_file.read_text())
            if worker.log_file.exists()
            else []
        )
        latest.append(sorted({int(p) for p in re.findall(r"\((\d+),", lines[-1])}) if lines else [])
    return sorted(latest)


def _produce(settings, rows) -> None:
    start = datetime.now(UTC)
    with EventProducer(settings.bootstrap_address, topic_prefix=settings.topic_prefix) as producer:
        for i, (x, y) in enumerate(rows):
            for name in MODELS:
                at = start + timedelta(milliseconds=i)
                decision = f"{name}-{i}"
                producer.send(
                    PredictionEvent(
                        decision_id=decision,
                        model=name,
                        model_version="v0",
                        features=x,
                        timestamp=at,
                    )
                )
                producer.send(
                    OutcomeEvent(decision_id=decision, label=y, source="test", timestamp=at)
                )
