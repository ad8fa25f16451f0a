"""A failing example is undone exactly: the learner equals one that never saw it, metrics and
monitors included."""

from __future__ import annotations

import pickle
from datetime import UTC, datetime

from adaptloop.learners.online import OnlineLearner
from adaptloop.learners.recovery import Entry, recover
from adaptloop.learners.spec import LearnerSpec
from adaptloop.learners.store import model_bytes
from adaptloop.schemas import TrainingExample

AT = datetime(2026, 1, 1, tzinfo=UTC)
SPEC = LearnerSpec(
    name="m", recipe="tests.recipes:fragile", task="multiclass", metrics=["Accuracy"]
)


def entry(i: int, label: str) -> Entry:
    example = TrainingExample(
        model="m",
        decision_id=f"d{i}",
        model_version="v",
        features={"x": float(i % 3)},
        label=label,
        predicted_at=AT,
    )
    return Entry(example, ("training-examples:0", i))


def learned(entries: list[Entry]) -> OnlineLearner:
    learner = OnlineLearner(SPEC)
    for item in entries:
        learner.learn(item.example, item.position)
    return learner


def state(learner: OnlineLearner) -> tuple:
    return (
        model_bytes(learner.model),
        learner.shadow["Accuracy"].get(),
        learner.progress.examples_seen,
        learner.progress.dataset_hash,
        pickle.dumps(learner.watch.concept.seen),
    )


def test_an_example_that_fails_to_learn_is_left_out_and_everything_else_is_learned():
    journal = [entry(i, "a" if i % 3 else "b") for i in range(20)]
    recovery = recover(lambda: OnlineLearner(SPEC), journal, entry(20, "boom"))
    assert [(e.example.decision_id, reason.split(";")[0]) for e, reason in recovery.blamed] == [
        ("d20", "model 'm' failed to learn it: ValueError: cannot learn 'boom'")
    ]
    assert recovery.journal == journal
    assert state(recovery.learner) == state(learned(journal))


def test_an_example_that_breaks_later_predictions_is_found_and_left_out():
    journal = [entry(i, "a" if i % 3 else "b") for i in range(12)]
    journal[7] = entry(7, "poison")  # learned without error; every prediction after it fails...
    journal = journal[:8]  # ...so the learner fails at the next example, and recovers
    failing = entry(8, "a")
    recovery = recover(lambda: OnlineLearner(SPEC), journal, failing)
    assert [e.example.decision_id for e, _ in recovery.blamed] == ["d7"]
    assert "failed to predict decision 'd8' after learning it" in recovery.blamed[0][1]
    survivors = [e for e in journal if e.example.decision_id != "d7"] + [failing]
    assert recovery.journal == survivors
    assert state(recovery.learner) == state(learned(survivors))


def test_two_examples_to_blame_are_both_left_out():
    journal = [entry(i, "a" if i % 2 else "b") for i in range(12)]
    journal[3], journal[9] = entry(3, "poison"), entry(9, "boom")
    recovery = recover(lambda: OnlineLearner(SPEC), journal[:4] + journal[5:9], journal[9])
    assert sorted(e.example.decision_id for e, _ in recovery.blamed) == ["d3", "d9"]
    assert state(recovery.learner) == state(
        learned([e for e in journal[:9] if e.example.decision_id not in ("d3", "d4")])
    )
