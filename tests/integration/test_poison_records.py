"""Records that pass a naive contract but used to stop the worker for good: each is one dead letter
with its reason, no role stops, and every good decision before and after is learned exactly once."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from confluent_kafka import Producer

from adaptloop.learners.spec import LearnerSpec
from adaptloop.schemas import ClockTick, DeadLetter, ModelVersion, PredictionEvent, TrainingExample
from adaptloop.schemas.codec import encode
from adaptloop.schemas.topics import (
    DEAD_LETTERS,
    JOIN_CLOCK,
    MODEL_COMMANDS,
    MODEL_UPDATES,
    OUTCOMES,
    PREDICTIONS,
    TRAINING_EXAMPLES,
)
from adaptloop.streams import EventProducer

from .loop_helpers import (
    loop_settings,
    no_role_stopped,
    read_until,
    running_worker,
    send_decisions,
    wait_until_read,
)

pytestmark = pytest.mark.kafka

GOOD = 400


def _rows(offset: int) -> list[tuple[dict[str, float], bool]]:
    return [
        ({"x": (i % 17) / 17.0, "y": (i % 5) / 5.0}, i % 3 == 0)
        for i in range(offset, offset + GOOD)
    ]


def _command(to_version: str) -> bytes:
    return orjson.dumps(
        {"model": "m", "action": "rollback", "to_version": to_version, "actor": "mallory"}
    )


def test_each_poison_record_is_one_dead_letter_and_the_worker_learns_on(kafka_bootstrap, tmp_path):
    spec = LearnerSpec(
        name="m", recipe="logistic", horizon_seconds=600, checkpoint_every=100, checkpoint_seconds=1
    )
    settings = loop_settings(kafka_bootstrap, tmp_path / "home", [spec], partitions=2)
    prefix = settings.topic_prefix
    now = datetime.now(UTC)
    big = PredictionEvent(
        decision_id="big",
        model="m",
        model_version="v0",
        features={"note": "x" * 997_800},
        timestamp=now,
    )
    poison: list[tuple[str, bytes, bytes, str]] = [
        # (topic, key, value, what its dead letter says)
        (
            PREDICTIONS.name,
            b"year-0",
            (
                b'{"decision_id":"year-0","model":"m","model_version":"v0","features":{"x":1.0},'
                b'"timestamp":"0001-01-01T00:00:00+23:59"}'
            ),
            "1970",  # in UTC it falls in year 0: refused by the contract, never expired by the join
        ),
        # 998 KB: its state entry would not fit
        (PREDICTIONS.name, b"big", encode(big), "it can keep in its state"),
        (
            OUTCOMES.name,
            b"big",
            b'{"decision_id":"big","label":true,"source":"s"}',
            "prediction was rejected",
        ),
        (MODEL_COMMANDS.name, b"m", _command("a" * 300), "pattern"),
        (MODEL_COMMANDS.name, b"m", _command("0123456789abcde\x00"), "pattern"),
        (MODEL_COMMANDS.name, b"m", _command("0123456789abcdef"), "no version '0123456789abcdef'"),
    ]
    # a tick a day ahead would expire every pending decision; one a day behind is no tick either
    forged = [
        (
            ClockTick(source="mallory", timestamp=now + timedelta(days=1)),
            "ahead of this worker's clock",
        ),
        (ClockTick(source="mallory", timestamp=now - timedelta(days=1)), "behind what partition"),
    ]
    raw = Producer({"bootstrap.servers": kafka_bootstrap, "partitioner": "murmur2_random"})
    with running_worker(settings, tmp_path / "worker.log") as worker:
        with EventProducer(kafka_bootstrap, topic_prefix=prefix) as producer:
            send_decisions(producer, _rows(0), model="m")
            producer.flush()
            predictions = [  # pending when the forged ticks come; their outcomes follow them
                PredictionEvent(
                    decision_id=f"p{i}",
                    model="m",
                    model_version="v0",
                    features={"x": 0.5},
                    timestamp=now,
                )
                for i in range(20)
            ]
            for event in predictions:
                producer.send(event)
            producer.flush()
            # A tick is judged against what the join has read of its partition, whatever order its
            # consumer fetches the topics in: it has read every decision before the forged ticks
            # come.
            wait_until_read(settings, "join", [PREDICTIONS, OUTCOMES], worker)
            for tick, _ in forged:
                for partition in range(2):
                    producer.send(tick, partition=partition)
            for topic, key, value, _ in poison:
                raw.produce(f"{prefix}{topic}", value, key)
            assert raw.flush(30) == 0
            for event in predictions:
                producer.send_bytes(
                    OUTCOMES.full_name(prefix),
                    event.decision_id.encode(),
                    orjson.dumps({"decision_id": event.decision_id, "label": True, "source": "s"}),
                )
            send_decisions(producer, _rows(GOOD), first=GOOD, model="m")
        learned = GOOD * 2 + len(predictions)
        expected = len(poison) + 2 * len(forged)
        seen = read_until(
            settings,
            [MODEL_UPDATES, DEAD_LETTERS, TRAINING_EXAMPLES],
            lambda events: (
                sum(isinstance(e, DeadLetter) for e in events) >= expected
                and any(isinstance(e, ModelVersion) and e.examples_seen >= learned for e in events)
            ),
            timeout=300,
            worker=worker,
        )
    letters = [e for e in seen if isinstance(e, DeadLetter)]
    assert len(letters) == expected, [(d.source_topic, d.reason) for d in letters]
    for topic, _, _, says in poison:
        assert any(d.source_topic == f"{prefix}{topic}" and says in d.reason for d in letters), says
    for _, says in forged:
        assert (
            sum(
                d.source_topic == JOIN_CLOCK.full_name(prefix) and says in d.reason for d in letters
            )
            == 2
        )
    assert max(v.examples_seen for v in seen if isinstance(v, ModelVersion)) == learned
    statuses = Counter(e.status for e in seen if isinstance(e, TrainingExample))
    # the forged ticks expired nothing
    assert statuses["joined"] == learned and statuses["expired"] == 0
    assert no_role_stopped(tmp_path / "worker.log")
