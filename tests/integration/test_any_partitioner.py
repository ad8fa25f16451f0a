"""Producers with librdkafka's default partitioner (consistent_random: CRC32, the default of Go,
.NET, node-rdkafka and confluent-kafka clients) beside the SDK's murmur2, with two join workers: the
join sends each misplaced record on to its decision's partition, and every decision is joined and
learned exactly once."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta

import pytest
from confluent_kafka import Producer

from adaptloop.learners.spec import LearnerSpec
from adaptloop.schemas import ModelVersion, OutcomeEvent, PredictionEvent, TrainingExample
from adaptloop.schemas.codec import encode
from adaptloop.schemas.topics import (
    DEAD_LETTERS,
    MODEL_UPDATES,
    OUTCOMES,
    OUTCOMES_REPARTITION,
    PREDICTIONS,
    PREDICTIONS_REPARTITION,
    TRAINING_EXAMPLES,
    partition_for,
)
from adaptloop.streams import EventProducer
from adaptloop.worker import stop_worker_process

from .loop_helpers import Worker, committed_offsets, loop_settings, read_until

pytestmark = pytest.mark.kafka

N = 300
PARTITIONS = 2


def _join_assignments(workers: list[Worker]) -> list[list[int]]:
    latest = []
    for worker in workers:
        text = worker.log_file.read_text() if worker.log_file.exists() else ""
        lines = re.findall(r"join assigned \[(.*?)\]", text)
        latest.append(sorted(int(p) for p in re.findall(r"\d+", lines[-1])) if lines else [])
    return sorted(latest)


def test_records_on_other_partitions_are_joined_exactly_once_by_two_join_workers(
    kafka_bootstrap, tmp_path
):
    spec = LearnerSpec(name="mixed", recipe="logistic", checkpoint_every=100, checkpoint_seconds=1)
    settings = loop_settings(
        kafka_bootstrap, tmp_path / "home", [spec], partitions=PARTITIONS
    ).model_copy(update={"log_level": "info"})
    prefix = settings.topic_prefix
    workers = [Worker(settings, tmp_path / f"worker-{n}.log") for n in range(2)]
    try:
        deadline = time.monotonic() + 90
        while _join_assignments(workers) != [[0], [1]] and time.monotonic() < deadline:
            for worker in workers:
                worker.check_alive()
            time.sleep(0.5)
        assert _join_assignments(workers) == [[0], [1]], (
            "the two join members did not split the partitions"
        )

        # Even decisions: the prediction from a librdkafka client with its default partitioner, the
        # outcome from the SDK; odd decisions the other way round.
        landed: dict[tuple[str, str], int] = {}

        def delivered(error, message) -> None:
            assert error is None, error
            landed[(message.topic(), message.key().decode())] = message.partition()

        other = Producer({"bootstrap.servers": kafka_bootstrap})  # partitioner: consistent_random
        start = datetime.now(UTC)
        with EventProducer(kafka_bootstrap, topic_prefix=prefix) as sdk:
            for i in range(N):
                at = start + timedelta(milliseconds=i)
                decision = f"mixed-{i}"
                prediction = PredictionEvent(
                    decision_id=decision,
                    model="mixed",
                    model_version="v0",
                    features={"x": float(i % 10), "y": float(i % 3)},
                    timestamp=at,
                )
                outcome = OutcomeEvent(
                    decision_id=decision, label=i % 10 < 4, source="test", timestamp=at
                )
                foreign, own = (prediction, outcome) if i % 2 == 0 else (outcome, prediction)
                topic = PREDICTIONS if foreign is prediction else OUTCOMES
                other.produce(
                    topic.full_name(prefix),
                    encode(foreign),
                    key=decision.encode(),
                    on_delivery=delivered,
                )
                sdk.send(own)
        assert other.flush(30) == 0

        misplaced = {
            topic: sorted(
                key
                for (name, key), partition in landed.items()
                if name == topic.full_name(prefix)
                and partition != partition_for(key.encode(), PARTITIONS)
            )
            for topic in (PREDICTIONS, OUTCOMES)
        }
        # CRC32 and murmur2 disagree on about half
        assert misplaced[PREDICTIONS] and misplaced[OUTCOMES]

        events = read_until(
            settings,
            [TRAINING_EXAMPLES, MODEL_UPDATES],
            lambda seen: any(isinstance(v, ModelVersion) and v.examples_seen >= N for v in seen),
            timeout=180,
            worker=workers[0],
        )
        for worker in workers:
            worker.check_alive()
    finally:
        for worker in workers:
            stop_worker_process(worker.process)

    examples = [e for e in events if isinstance(e, TrainingExample)]
    assert sorted(e.decision_id for e in examples) == sorted(f"mixed-{i}" for i in range(N))
    assert {e.status for e in examples} == {"joined"}
    assert max(v.examples_seen for v in events if isinstance(v, ModelVersion)) == N
    # Exactly the misplaced records went through the repartition topics, once each.
    for source, repartition in (
        (PREDICTIONS, PREDICTIONS_REPARTITION),
        (OUTCOMES, OUTCOMES_REPARTITION),
    ):
        sent_on = committed_offsets(kafka_bootstrap, repartition.full_name(prefix))
        assert len(sent_on) == len(misplaced[source]), source.name
    assert not committed_offsets(kafka_bootstrap, DEAD_LETTERS.full_name(prefix))
