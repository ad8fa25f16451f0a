"""The learning step every peer of the bench runs (:mod:`bench.quix_peer`,
:mod:`bench.bytewax_peer`), and how it reports its timings: River only, no adaptloop import (the
Quix Streams peer runs in a venv of its own)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any


def build_model(recipe: str) -> Any:
    """adaptloop's recipes of the same name (``adaptloop.learners.recipes``), with River's
    defaults."""
    from river import linear_model, preprocessing, tree

    if recipe == "logistic":
        return preprocessing.StandardScaler() | linear_model.LogisticRegression()
    return tree.HoeffdingTreeClassifier()


class PeerLearner:
    """Predict, score, learn one example at a time; write, as JSON to ``out``, when the peer read
    its first record (:meth:`read`), when it learned its first example, a tenth and all of ``n``
    (from the first record read to the last example: the whole backlog; from a tenth to all: steady
    work, not start-up), how many it learned and its accuracy. Returns True from :meth:`learn` once
    it has learned all ``n``."""

    def __init__(self, recipe: str, n: int, out: Path) -> None:
        from river import metrics

        self.model, self.accuracy = build_model(recipe), metrics.Accuracy()
        self.n, self.out = n, out
        self.learned, self.tenth_at, self.first_at = 0, 0.0, 0.0
        self.first_read_at: float | None = None

    def read(self) -> None:
        """Called for every record the peer consumes: the first one starts the backlog's clock.

        (adaptloop's clock starts at its partitions' assignment, a fetch earlier than this: the
        peers' rates from the start are, if anything, flattered.)"""
        if self.first_read_at is None:
            self.first_read_at = time.time()

    def learn(self, x: dict[str, Any], y: Any) -> bool:
        proba = self.model.predict_proba_one(x)
        self.accuracy.update(y, max(proba, key=proba.get) if proba else None)
        self.model.learn_one(x, y)
        self.learned += 1
        if self.learned == 1:
            self.first_at = time.time()
        elif self.learned == self.n // 10:
            self.tenth_at = time.perf_counter()
        elif self.learned == self.n:
            result = {
                "first_read_to_all_s": time.time() - (self.first_read_at or self.first_at),
                "tenth_to_all_s": time.perf_counter() - self.tenth_at,
                "first_at": self.first_at,
                "learned": self.learned,
                "accuracy": self.accuracy.get(),
            }
            self.out.write_text(json.dumps(result))
            return True
        return False
