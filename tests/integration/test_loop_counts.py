"""With delays, duplicates, missing outcomes and bad records, every decision is accounted for
exactly."""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from adaptloop.learners.spec import LearnerSpec
from adaptloop.samples import MALFORMED_RECORDS
from adaptloop.schemas import (
    DeadLetter,
    ModelVersion,
    OutcomeEvent,
    PredictionEvent,
    TrainingExample,
)
from adaptloop.schemas.topics import DEAD_LETTERS, MODEL_UPDATES, PREDICTIONS, TRAINING_EXAMPLES
from adaptloop.streams import EventProducer

from .loop_helpers import loop_settings, read_until, running_worker

pytestmark = pytest.mark.kafka

N = 3000
HORIZON = 30.0
PARTITIONS = 3


def _traffic(rng: random.Random, start: datetime):
    """Predictions one simulated second apart, outcomes after random delays; 10% never answered, ~5%
    duplicated."""
    timeline = []
    for i in range(N):
        at = start + timedelta(seconds=i)
        prediction = PredictionEvent(
            decision_id=f"d{i}",
            model="churn",
            model_version="v0",
            features={"x": rng.uniform(-1, 1), "y": rng.uniform(-1, 1)},
            timestamp=at,
        )
        timeline.append((at, prediction))
        if rng.random() < 0.05:
            timeline.append((at + timedelta(seconds=0.5), prediction))
        if rng.random() < 0.10:
            continue
        delay = timedelta(seconds=min(rng.expovariate(1 / (HORIZON * 0.5)), HORIZON * 2))
        outcome = OutcomeEvent(
            decision_id=f"d{i}",
            label=prediction.features["x"] > 0,
            source="test",
            timestamp=at + delay,
        )
        timeline.append((at + delay, outcome))
        if rng.random() < 0.05:
            timeline.append((at + delay + timedelta(seconds=1), outcome))
    timeline.sort(key=lambda item: item[0])
    return [event for _, event in timeline]


def test_joined_expired_and_late_add_up_to_predictions_and_nothing_is_learned_twice(
    kafka_bootstrap, tmp_path
):
    spec = LearnerSpec(
        name="churn", horizon_seconds=HORIZON, checkpoint_every=500, checkpoint_seconds=1
    )
    settings = loop_settings(kafka_bootstrap, tmp_path / "home", [spec], partitions=PARTITIONS)
    # A backlog from the past: the worker's wall-clock ticks must not expire it before it is read,
    # and must settle every decision once it has been.
    start = datetime.now(UTC) - timedelta(seconds=N + 20 * HORIZON)
    events = _traffic(random.Random(42), start)

    with EventProducer(kafka_bootstrap, topic_prefix=settings.topic_prefix) as producer:
        for event in events:
            producer.send(event)
        for i, value in enumerate(MALFORMED_RECORDS.values()):
            producer.send_bytes(
                PREDICTIONS.full_name(settings.topic_prefix), f"bad{i}".encode(), value
            )
        producer.send(
            PredictionEvent(
                decision_id="ghost-1",
                model="no-such-model",
                model_version="v0",
                features={"x": 1.0},
                timestamp=start,
            )
        )
        producer.send(
            OutcomeEvent(decision_id="ghost-1", label=True, source="test", timestamp=start)
        )

    with running_worker(settings, tmp_path / "worker.log") as worker:
        predictions = N + 1  # with the ghost

        def settled(seen) -> bool:
            examples = [e for e in seen if isinstance(e, TrainingExample)]
            final = Counter(e.status for e in examples)
            learned = max(
                (e.examples_seen for e in seen if isinstance(e, ModelVersion)), default=-1
            )
            letters = sum(isinstance(e, DeadLetter) for e in seen)
            return (
                final["joined"] + final["expired"] == predictions
                and learned == final["joined"] - 1
                and letters >= len(MALFORMED_RECORDS) + 1
            )

        seen = read_until(
            settings,
            [TRAINING_EXAMPLES, MODEL_UPDATES, DEAD_LETTERS],
            settled,
            timeout=180,
            worker=worker,
        )

    examples = [e for e in seen if isinstance(e, TrainingExample)]
    statuses = Counter(e.status for e in examples)
    sent_predictions = {e.decision_id for e in events if isinstance(e, PredictionEvent)}
    answered = {e.decision_id for e in events if isinstance(e, OutcomeEvent)}
    assert len(sent_predictions) == N and 0.85 * N < len(answered) < 0.95 * N
    # Every prediction ended exactly once; late ones are those that expired and were answered
    # afterwards.
    assert statuses["joined"] + statuses["expired"] == predictions
    never_answered = statuses["expired"] - statuses["late"]
    assert statuses["joined"] + never_answered + statuses["late"] == predictions
    assert never_answered == N - len(answered)  # the ghost was answered: it joined
    joined_ids = [e.decision_id for e in examples if e.status == "joined"]
    assert len(joined_ids) == len(set(joined_ids))
    assert {e.decision_id for e in examples if e.status == "late"} <= answered

    # The learner learned each joined example of its model exactly once; the ghost's model is
    # unknown.
    last = max((v for v in seen if isinstance(v, ModelVersion)), key=lambda v: v.examples_seen)
    assert last.examples_seen == statuses["joined"] - 1
    letters = [e for e in seen if isinstance(e, DeadLetter)]
    kinds = Counter(letter.kind for letter in letters)
    assert kinds == {**dict.fromkeys(MALFORMED_RECORDS, 1), "rejected": 1}
    [ghost] = [letter for letter in letters if letter.kind == "rejected"]
    assert "unknown model 'no-such-model'" in ghost.reason and ghost.source_topic.endswith(
        "training-examples"
    )
    assert {letter.source_topic for letter in letters if letter.kind != "rejected"} == {
        PREDICTIONS.full_name(settings.topic_prefix)
    }
