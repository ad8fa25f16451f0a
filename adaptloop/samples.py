"""Seeded random events of every type, for the smoke demo, tests and benchmarks."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

from adaptloop.schemas import (
    AgentFeedbackEvent,
    ClockTick,
    DeadLetter,
    DeadLetterReplay,
    DriftAlert,
    Event,
    GuardrailAlert,
    ModelCommand,
    ModelHealth,
    ModelSpecRecord,
    ModelVersion,
    OutcomeEvent,
    PredictionEvent,
    PreferenceEvent,
    PreferenceSnapshot,
    TrainingExample,
    VariantStats,
)
from adaptloop.schemas.agents import FeedbackKind
from adaptloop.schemas.contract import ModelContract

_EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


def _when(rng: random.Random) -> datetime:
    return _EPOCH + timedelta(microseconds=rng.randrange(10**13))


def _features(rng: random.Random) -> dict:
    return {
        "x0": rng.uniform(-5, 5),
        "x1": rng.randrange(100),
        "plan": rng.choice(["free", "pro", "team"]),
        "active": rng.random() < 0.5,
        "missing": None,
    }


def _prediction(rng: random.Random, i: int) -> PredictionEvent:
    p = rng.random()
    return PredictionEvent(
        decision_id=f"d-{i}",
        model="churn",
        model_version=f"v{rng.randrange(5)}",
        features=_features(rng),
        prediction=p > 0.5,
        probabilities={"True": p, "False": 1 - p},
        action_probability=rng.random(),
        tenant=rng.choice(["acme", "globex"]),
        user_id=f"u{rng.randrange(1000)}",
        timestamp=_when(rng),
    )


def _outcome(rng: random.Random, i: int) -> OutcomeEvent:
    return OutcomeEvent(
        decision_id=f"d-{i}",
        label=rng.random() < 0.3,
        reward=rng.uniform(0, 1),
        source="billing",
        timestamp=_when(rng),
    )


def _feedback(rng: random.Random, i: int) -> AgentFeedbackEvent:
    kind: FeedbackKind = rng.choice(["thumbs", "rating", "step", "comment"])
    return AgentFeedbackEvent(
        trace_id=f"t{i}",
        run_id=f"r{i // 5}",
        session_id=f"s{i // 10}",
        agent="support",
        variant=rng.choice(["a", "b", "c"]),
        step=i % 10,
        kind=kind,
        value={"thumbs": rng.random() < 0.5, "rating": float(rng.randint(1, 5))}.get(kind),
        comment="fine, thanks" if kind == "comment" else None,
        action="search(q)" if kind == "step" else None,
        cost=rng.uniform(0, 0.01),
        tokens=rng.randrange(2000),
        latency_ms=rng.uniform(10, 900),
        tenant="acme",
        user_id=f"u{rng.randrange(50)}",
        timestamp=_when(rng),
    )


def _preference(rng: random.Random, i: int) -> PreferenceEvent:
    chosen, rejected = rng.sample(["a", "b", "c"], 2)
    return PreferenceEvent(
        context={"task": rng.choice(["refund", "faq"])},
        chosen=chosen,
        rejected=rejected,
        annotator=f"u{rng.randrange(50)}",
        timestamp=_when(rng),
    )


def _snapshot(rng: random.Random, i: int) -> PreferenceSnapshot:
    stats = {
        v: VariantStats(
            ups=float(rng.randrange(50)),
            downs=float(rng.randrange(50)),
            ratings=2,
            rating_mean=3.5,
            rating_m2=0.5,
            wins={w: float(rng.randrange(9)) for w in "abc" if w != v},
        )
        for v in "abc"
    }
    return PreferenceSnapshot(
        agent="support",
        shard=f"support@agent-feedback:{i % 6}",
        offsets={f"agent-feedback:{i % 6}": i * 10},
        segments={"task=faq": stats},
        updates=i,
        quarantined={"rate_limited": i % 3},
        timestamp=_when(rng),
    )


def _training(rng: random.Random, i: int) -> TrainingExample:
    return TrainingExample(
        model="churn",
        decision_id=f"d-{i}",
        model_version="v1",
        features=_features(rng),
        prediction=True,
        label=rng.random() < 0.5,
        status="joined",
        predicted_at=_when(rng),
        outcome_at=_when(rng),
        timestamp=_when(rng),
    )


def _version(rng: random.Random, i: int) -> ModelVersion:
    digest = f"{rng.getrandbits(256):064x}"
    return ModelVersion(
        model=f"m{i % 7}",
        version=digest[:16],
        parent=None if i == 0 else f"{i - 1:016x}",
        examples_seen=i * 100,
        offsets={"training-examples:0": i * 100},
        metrics={"accuracy": rng.random()},
        sha256=digest,
        uri=f"models/m/{digest[:16]}.pkl",
        size_bytes=rng.randrange(10**6),
        servable=i > 0,
        contract=ModelContract(
            model=f"m{i % 7}",
            task="binary",
            labels_01=rng.random() < 0.5,
            default_prediction=False,
            min_examples=100,
        ),
        timestamp=_when(rng),
    )


def _command(rng: random.Random, i: int) -> ModelCommand:
    return ModelCommand(
        model=f"m{i % 7}",
        action="rollback",
        to_version=f"{rng.getrandbits(64):016x}",
        actor=f"ops-{i % 3}",
        reason="bad labels",
        command_id=f"c{i}",
        timestamp=_when(rng),
    )


def _spec(rng: random.Random, i: int) -> ModelSpecRecord:
    recipe = rng.choice(["logistic", "hoeffding"])
    return ModelSpecRecord(
        model=f"m{i % 7}",
        status="retired" if i % 5 == 4 else "active",
        spec={
            "name": f"m{i % 7}",
            "recipe": recipe,
            "checkpoint_every": 100 * (1 + i % 4),
            "drift": {"window": 50},
        },
        actor=f"ops-{i % 3}",
        reason="a new product" if i % 2 else "",
        spec_id=f"s{i}",
        timestamp=_when(rng),
    )


def _drift(rng: random.Random, i: int) -> DriftAlert:
    return DriftAlert(
        model="churn",
        model_version="v1",
        detector="ADWIN",
        signal="shadow_error",
        statistic=rng.random(),
        window=rng.randrange(1000),
        metric_before=0.9,
        metric_after=0.7,
        at_example=i,
        direction=rng.choice(["rose", "fell"]),
        timestamp=_when(rng),
    )


def _health(rng: random.Random, i: int) -> ModelHealth:
    sick = rng.random() < 0.5
    return ModelHealth(
        model=f"m{i % 7}",
        status="sick" if sick else "ok",
        reasons=["rejecting"] if sick else [],
        window=200,
        learned=rng.randrange(200),
        rejected=rng.randrange(200),
        errors=rng.randrange(3),
        rejected_total=rng.randrange(10_000),
        last_rejections=[
            ("decision 'd-1': label 'true' is a string; model 'm' (binary) takes true or false")
        ],
        timestamp=_when(rng),
    )


def _guardrail(rng: random.Random, i: int) -> GuardrailAlert:
    return GuardrailAlert(
        rule="tool_loop",
        subject=f"s{i}",
        agent="support",
        session_id=f"s{i}",
        observed=7.0,
        threshold=5.0,
        evidence={"action": "search(q)", "repeats": 7},
        timestamp=_when(rng),
    )


def _dead_letter(rng: random.Random, i: int) -> DeadLetter:
    return DeadLetter(
        source_topic="outcomes",
        partition=i % 3,
        offset=i,
        key=f"d-{i}".encode(),
        value=rng.randbytes(rng.randrange(1, 64)),
        kind="malformed",
        reason="not valid JSON",
        consumer="join",
        timestamp=_when(rng),
    )


def _replay(rng: random.Random, i: int) -> DeadLetterReplay:
    return DeadLetterReplay(
        letter=f"dead-letters:0@{i}",
        source_topic="outcomes",
        partition=i % 3,
        offset=i,
        actor="ops",
        note="fixed",
        timestamp=_when(rng),
    )


def _tick(rng: random.Random, i: int) -> ClockTick:
    return ClockTick(source=f"worker-{i % 3}", timestamp=_when(rng))


SAMPLERS: dict[type[Event], Callable[[random.Random, int], Event]] = {
    PredictionEvent: _prediction,
    OutcomeEvent: _outcome,
    AgentFeedbackEvent: _feedback,
    PreferenceEvent: _preference,
    PreferenceSnapshot: _snapshot,
    TrainingExample: _training,
    ModelVersion: _version,
    ModelCommand: _command,
    ModelSpecRecord: _spec,
    ModelHealth: _health,
    DeadLetterReplay: _replay,
    DriftAlert: _drift,
    GuardrailAlert: _guardrail,
    DeadLetter: _dead_letter,
    ClockTick: _tick,
}


def sample_events(event_type: type[Event], count: int, seed: int = 0) -> Iterator[Event]:
    """``count`` valid, varied events of ``event_type``, the same for the same seed.

    >>> [event.decision_id for event in sample_events(OutcomeEvent, 2)]
    ['d-0', 'd-1']
    """
    rng = random.Random(seed)
    sampler = SAMPLERS[event_type]
    for i in range(count):
        yield sampler(rng, i)


MALFORMED_RECORDS: dict[str, bytes] = {
    "malformed": b'{"decision_id": "d-x", "label": tru',
    "invalid": b'{"decision_id": "d-x", "label": [1, 2], "source": "s"}',
    "unsupported_schema_version": (
        b'{"schema_version": 2, "decision_id": "d-x", "label": true, "source": "s"}'
    ),
    "missing_key": b'{"label": true, "source": "s"}',
}
"""One bad ``outcomes`` record per dead-letter kind: bad JSON, wrong types, unknown version, no
decision_id."""
