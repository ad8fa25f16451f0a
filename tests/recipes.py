"""Recipes the tests name as ``module:function`` in their learner specs.

- ``tests.recipes:fragile``: a classifier that breaks as a River tree breaks on a label of another
  type: it refuses to learn the label ``"boom"`` (raising half-way through its update) and, once it
  has learned the label ``"poison"``, fails every prediction;
- ``tests.recipes:forest``: an adaptive random forest, an ensemble with random sources, seeded.
"""

from __future__ import annotations

from collections import Counter

from river import base
from river import forest as river_forest


class Fragile(base.Classifier):
    def __init__(self) -> None:
        self.counts: Counter = Counter()
        self.poisoned = False

    def learn_one(self, x: dict, y: object) -> None:
        self.counts[y] += 1  # half-way: then it fails
        if y == "boom":
            raise ValueError("cannot learn 'boom'")
        if y == "poison":
            self.poisoned = True

    def predict_proba_one(self, x: dict) -> dict:
        if self.poisoned:
            raise TypeError("'<' not supported between instances of 'str' and 'bool'")
        total = sum(self.counts.values())
        return {label: count / total for label, count in self.counts.items()} if total else {}


def fragile() -> Fragile:
    return Fragile()


def forest(seed: int) -> river_forest.ARFClassifier:
    """Three trees; ``seed`` comes from the model's name unless the spec's params give one."""
    return river_forest.ARFClassifier(n_models=3, seed=seed)
