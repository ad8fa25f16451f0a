"""A model's feature budget: how many features one example may bring, and how many feature names the
model may grow to, so that one record (or a slow flood of new names) cannot make every later version
huge and slow."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class FeatureBudget:
    """At most ``per_event`` features in one example, and at most ``names`` distinct feature names
    learned.

    A River model keeps state per feature name (a weight, a scaler's mean and variance, a tree
    leaf's statistics) and never forgets one: an example with 10,000 features made every later
    version of a logistic model 400 times larger. The names learned are the learner's to keep (its
    checkpoint holds them), so a restarted learner or a replay counts the same. A model whose
    contract declares its features needs no budget: the contract refuses any other name.

    >>> budget = FeatureBudget(per_event=3, names=4)
    >>> learned = dict.fromkeys(["a", "b", "c"])
    >>> budget.problem("churn", {"a": 1.0, "x": 2.0}, learned) is None
    True
    >>> budget.problem("churn", {"a": 1.0, "x": 2.0, "y": 3.0}, learned)
    "over the feature budget: 2 new feature names would make 5; model 'churn' learns from 4 at most \
(max_feature_names)"
    >>> budget.problem("churn", dict.fromkeys("abcd", 1.0), learned)
    "over the feature budget: 4 features; model 'churn' takes 3 per example at most (max_event_features)"
    """

    per_event: int
    names: int

    def problem(self, model: str, features: dict[str, Any], learned: dict[str, None]) -> str | None:
        """Why ``features`` would take ``model`` over its budget, having learned the names
        ``learned``; None if they would not. O(1) unless the names could reach the limit."""
        if len(features) > self.per_event:
            return (
                f"over the feature budget: {len(features)} features; model {model!r} takes "
                f"{self.per_event} per "
                "example at most (max_event_features)"
            )
        if len(learned) + len(features) <= self.names:
            return None
        new = sum(1 for name in features if name not in learned)
        if len(learned) + new > self.names:
            return (
                f"over the feature budget: {new} new feature names would make "
                f"{len(learned) + new}; model "
                f"{model!r} learns from {self.names} at most (max_feature_names)"
            )
        return None
