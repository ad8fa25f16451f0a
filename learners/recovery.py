"""Undoing a failed example exactly: the learner goes back to its last checkpoint and learns again
what it learned since, without the example to blame.

A River model that raises while it learns may be half-updated; one that raises while it predicts was
broken by an example it learned before (one string label among booleans makes every later call of a
Hoeffding tree fail). Either way, going on would serve and publish a broken model. So the learner's
journal keeps the examples learned since its last checkpoint; on a
:class:`~adaptloop.schemas.errors.ModelFailure` the learner is restored from that checkpoint and
learns the journal again, without the example to blame: the result is the learner that would have
been had that example never come, metrics and drift monitors included.

Which example to blame: the failing one if it failed to learn. If the model failed to predict, the
earliest journaled example after which the model cannot predict the failing example's features,
found by bisection (each probe restores a learner of its own, so probing changes nothing); if even
the checkpoint cannot, the failing example itself.

``tests/unit/learners/test_recovery.py`` plays both failures with a model that breaks the way a
River tree breaks, and checks the result against a learner that never saw the example blamed.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from adaptloop.learners.online import OnlineLearner
from adaptloop.schemas.errors import ModelFailure
from adaptloop.schemas.inference import TrainingExample


@dataclass(frozen=True)
class Entry:
    """An example as the learner was given it, with where it was read."""

    example: TrainingExample
    position: tuple[str, int] | None


@dataclass
class Recovery:
    """The learner without the examples to blame, the journal it learned (its new journal), and each
    example blamed with the reason (for its dead letter)."""

    learner: OnlineLearner
    journal: list[Entry]
    blamed: list[tuple[Entry, str]] = field(default_factory=list)


def recover(
    restore: Callable[[], OnlineLearner],
    journal: Sequence[Entry],
    failing: Entry,
    *,
    probe: dict[str, Any] | None = None,
) -> Recovery:
    """Relearn ``journal`` and then ``failing`` on the learner ``restore`` returns (the last
    checkpoint's), blaming and leaving out each example that makes the model fail, until every other
    one is learned (and, with ``probe``, until the model can predict those features).

    Mini-batch learners learn a batch at once: a failing batch is blamed whole.
    """
    pending = [*journal, failing]
    blamed: list[tuple[Entry, str]] = []
    while True:
        learner = restore()
        for index, entry in enumerate(pending):
            try:
                learner.learn(entry.example, entry.position)
            except ModelFailure as failure:
                if learner.spec.mini_batch:  # the batch failed as one
                    batch = {id(example) for example in learner.failed_batch}
                    culprits = [
                        i for i, e in enumerate(pending[: index + 1]) if id(e.example) in batch
                    ]
                else:
                    culprits = [_culprit(restore, pending, index, failure)]
                for culprit in reversed(culprits):
                    blamed.append(
                        (pending[culprit], _reason(pending[culprit], pending[index], failure))
                    )
                    del pending[culprit]
                break
        else:
            if probe is not None and pending and not _can_predict(copy.deepcopy(learner), probe):
                broke = _first_breaking(restore, pending, len(pending), probe)
                if broke is not None:
                    reason = (
                        f"model {learner.spec.name!r} failed to predict after learning it; "
                        "the model was "
                        "restored as it was before it"
                    )
                    blamed.append((pending[broke], reason))
                    del pending[broke]
                    continue
            return Recovery(learner, pending, sorted(blamed, key=lambda item: _order(item[0])))


def _culprit(
    restore: Callable[[], OnlineLearner], pending: list[Entry], index: int, failure: ModelFailure
) -> int:
    """The index of the example to blame for ``failure`` at ``pending[index]``."""
    if failure.stage == "learn":
        return index
    culprit = _first_breaking(restore, pending, index, pending[index].example.features)
    # None: even the checkpoint cannot predict these features
    return index if culprit is None else culprit


def _first_breaking(
    restore: Callable[[], OnlineLearner], pending: list[Entry], upto: int, features: dict[str, Any]
) -> int | None:
    """The index of the first of ``pending[:upto]`` after learning which the model cannot predict
    ``features`` (bisection over prefixes: once broken, a model stays broken); None if it cannot
    before."""
    if not _predicts_after(restore, pending, 0, features):
        return None
    low, high = 0, upto  # predicts after low examples, fails after high
    while high - low > 1:
        middle = (low + high) // 2
        if _predicts_after(restore, pending, middle, features):
            low = middle
        else:
            high = middle
    return high - 1


def _predicts_after(
    restore: Callable[[], OnlineLearner], pending: list[Entry], count: int, features: dict[str, Any]
) -> bool:
    learner = restore()
    for entry in pending[:count]:
        learner.learn(entry.example, entry.position)
    return _can_predict(learner, features)


def _can_predict(learner: OnlineLearner, features: dict[str, Any]) -> bool:
    try:
        learner.probe(features)
    except ModelFailure:
        return False
    return True


def _order(entry: Entry) -> tuple[str, int]:
    return entry.position if entry.position is not None else ("", 0)


def _reason(blamed: Entry, failing: Entry, failure: ModelFailure) -> str:
    model, error = failure.model, f"{type(failure.error).__name__}: {failure.error}"
    if blamed is failing and failure.stage == "learn":
        return (
            f"model {model!r} failed to learn it: {error}; the model was restored as it was "
            "before it"
        )
    if blamed is failing:
        return f"model {model!r} failed to predict its features: {error}; the example was left out"
    return (
        f"model {model!r} failed to predict decision {failing.example.decision_id!r} after "
        "learning it: "
        f"{error}; the model was restored as it was before it"
    )
