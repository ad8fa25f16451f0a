"""Hostile input at a steady rate during a normal run: the worker never stops, every bad record is a
dead letter with its reason, every good record is learned."""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from confluent_kafka import Producer
from river import datasets

from adaptloop.learners.spec import LearnerSpec
from adaptloop.schemas import (
    DeadLetter,
    ModelVersion,
    OutcomeEvent,
    PredictionEvent,
    TrainingExample,
)
from adaptloop.schemas.topics import (
    DEAD_LETTERS,
    MODEL_UPDATES,
    OUTCOMES,
    PREDICTIONS,
    TRAINING_EXAMPLES,
)
from adaptloop.streams import EventProducer

from .loop_helpers import loop_settings, no_role_stopped, read_until, running_worker

pytestmark = pytest.mark.kafka


def _hostile(rng: random.Random, k: int) -> tuple[str, bytes, str]:
    """(topic, value, the dead-letter kind it must become), one of each shape in turn."""
    now = datetime.now(UTC).isoformat()
    shapes = [
        (PREDICTIONS, rng.randbytes(rng.randrange(1, 300)), "malformed"),
        (OUTCOMES, b"x" * 1_020_000, "too_large"),
        (PREDICTIONS, b"[" * 100_000, "malformed"),  # deep JSON
        (
            PREDICTIONS,
            b'{"decision_id":"h%d","model":"phishing","model_version":"v","features":{"x":NaN}}'
            % k,
            # NaN is no JSON token (the compiled core's parser says so; pydantic's read it)
            "malformed",
        ),
        (
            PREDICTIONS,
            b'{"decision_id":"h%d","model":"phishing","model_version":"v","features":{"x":1e999}}'
            % k,
            "invalid",
        ),
        (
            OUTCOMES,
            orjson.dumps(
                {"schema_version": 7, "decision_id": f"h{k}", "label": True, "source": "s"}
            ),
            "unsupported_schema_version",
        ),
        (OUTCOMES, orjson.dumps({"label": True, "source": "s", "timestamp": now}), "missing_key"),
        (
            TRAINING_EXAMPLES,
            orjson.dumps(
                TrainingExample(
                    model="no-such-model",
                    decision_id=f"h{k}",
                    model_version="v",
                    features={"x": 1.0},
                    label=True,
                    predicted_at=datetime.now(UTC),
                ).model_dump(mode="json")
            ),
            "rejected",
        ),
        (
            TRAINING_EXAMPLES,
            orjson.dumps(
                TrainingExample(  # valid, but a category for a model of numbers
                    model="phishing",
                    decision_id=f"h{k}",
                    model_version="v",
                    features={"x": "pro"},
                    label=True,
                    predicted_at=datetime.now(UTC),
                ).model_dump(mode="json")
            ),
            "rejected",
        ),
        (
            PREDICTIONS,
            b'{"decision_id":"h%d","model":"phishing","model_version":"v","features":{"x":1%s}}'
            % (k, b"0" * 400),
            "invalid",
        ),  # valid JSON, an integer of 401 digits
        (OUTCOMES, b"", "malformed"),
    ]
    topic, value, kind = shapes[k % len(shapes)]
    return topic.name, value, kind


def test_the_worker_survives_hostile_input_and_learns_every_good_record(kafka_bootstrap, tmp_path):
    spec = LearnerSpec(
        name="phishing",
        recipe="logistic",
        metrics=["Accuracy"],
        checkpoint_every=250,
        checkpoint_seconds=1,
    )
    settings = loop_settings(kafka_bootstrap, tmp_path / "home", [spec], partitions=2)
    prefix = settings.topic_prefix
    rng = random.Random(9)
    raw = Producer(
        {
            "bootstrap.servers": kafka_bootstrap,
            "message.max.bytes": 2_000_000,
            "compression.type": "none",
        }
    )
    expected: Counter = Counter()
    data = list(datasets.Phishing())
    with running_worker(settings, tmp_path / "worker.log") as worker:
        with EventProducer(kafka_bootstrap, topic_prefix=prefix) as producer:
            start = datetime.now(UTC)
            for n, (x, y) in enumerate(data):
                at = start + timedelta(milliseconds=n)
                producer.send(
                    PredictionEvent(
                        decision_id=f"d{n}",
                        model="phishing",
                        model_version="v0",
                        features=x,
                        timestamp=at,
                    )
                )
                producer.send(
                    OutcomeEvent(decision_id=f"d{n}", label=y, source="test", timestamp=at)
                )
                if n % 10 == 0:  # a bad record every tenth decision, all through the run
                    topic, value, kind = _hostile(rng, n // 10)
                    raw.produce(f"{prefix}{topic}", value=value, key=f"h{n}".encode())
                    expected[kind] += 1
                    raw.poll(0)
            assert raw.flush(30) == 0
        total = sum(expected.values())
        seen = read_until(
            settings,
            [MODEL_UPDATES, DEAD_LETTERS],
            lambda events: (
                sum(isinstance(e, DeadLetter) for e in events) >= total
                and any(
                    isinstance(e, ModelVersion) and e.examples_seen == len(data) for e in events
                )
            ),
            timeout=240,
            worker=worker,
        )
    letters = [e for e in seen if isinstance(e, DeadLetter)]
    # every bad record, once, with its kind
    assert Counter(letter.kind for letter in letters) == expected
    assert all(letter.reason for letter in letters)
    assert any("learns from numbers only" in letter.reason for letter in letters)
    # 1e999, 401 digits
    assert any("not finite in a 64-bit float" in letter.reason for letter in letters)
    log = (tmp_path / "worker.log").read_text(errors="replace")
    # no role died on the way
    assert "Traceback" not in log and no_role_stopped(tmp_path / "worker.log")
    # every good one learned
    assert max(e.examples_seen for e in seen if isinstance(e, ModelVersion)) == len(data)
