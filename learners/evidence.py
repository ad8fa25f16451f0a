"""Whether one model beats another on the same examples: a paired sequential sign test.

Both models predict each example before either learns it, so each example is a pair of errors.
A tie says nothing about which model is better; of the other examples the challenger wins
``wins`` (its error is the lower) and loses ``losses``. If the challenger is no better than the
champion, a win is at most a coin flip, and the mixture likelihood ratio (a uniform prior on the
win rate ``p`` above one half)

    M = 2 ∫_{1/2}^{1} (2p)^wins (2(1 - p))^losses dp

is a nonnegative supermartingale that starts at 1. By Ville's inequality it ever reaches
``1 / (1 - confidence)`` with probability at most ``1 - confidence``, however long the test runs
and however often it is read: the test is valid at every example, so a minimum number of examples
is a guard against deciding on a handful, not a condition of the test. A sign test holds for
regression (absolute errors) as for classes (0/1 errors), and needs no assumption about the errors'
distribution.

>>> test = PairedSignTest()
>>> for _ in range(40):
...     test.update(challenger_error=0.0, champion_error=1.0)
>>> test.wins, test.losses, test.significant(0.99)
(40, 0, True)
>>> even = PairedSignTest()
>>> for i in range(1_000):
...     even.update(float(i % 2), float((i + 1) % 2))
>>> even.significant(0.99), round(even.evidence(), 3)
(False, 0.04)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from scipy.special import betainc, betaln


@dataclass
class PairedSignTest:
    """Wins and losses of a challenger against a champion, example by example, and the evidence in
    them."""

    compared: int = 0  # examples both models predicted
    wins: int = 0  # the challenger's error was the lower
    losses: int = 0  # the champion's error was the lower
    challenger_error: float = 0.0  # sums over the compared examples
    champion_error: float = 0.0

    def update(self, challenger_error: float, champion_error: float) -> None:
        """Count one example both models predicted before learning it."""
        self.compared += 1
        self.challenger_error += challenger_error
        self.champion_error += champion_error
        if challenger_error < champion_error:
            self.wins += 1
        elif challenger_error > champion_error:
            self.losses += 1

    def log_evidence(self) -> float:
        """The natural log of the mixture likelihood ratio ``M`` (0 before any example that told
        them apart)."""
        wins, losses = self.wins, self.losses
        if wins + losses == 0:
            return 0.0
        # ∫_{1/2}^1 p^w (1-p)^l dp = B(w+1, l+1) · (1 - I_{1/2}(w+1, l+1)), with I the regularized
        # incomplete beta.
        upper = 1.0 - float(betainc(wins + 1, losses + 1, 0.5))
        # the challenger lost so often that the integral underflows: no evidence for it
        if upper <= 0.0:
            return -math.inf
        return (
            (wins + losses + 1) * math.log(2.0)
            + float(betaln(wins + 1, losses + 1))
            + math.log(upper)
        )

    def evidence(self) -> float:
        """The mixture likelihood ratio ``M``: how many times likelier the record is if the
        challenger is better."""
        return math.exp(min(self.log_evidence(), 700.0))

    def significant(self, confidence: float) -> bool:
        """Whether the challenger is better at ``confidence``: ``M >= 1 / (1 - confidence)``."""
        return self.log_evidence() >= -math.log1p(-confidence)

    def mean_errors(self) -> tuple[float, float]:
        """The challenger's and the champion's mean error over the compared examples."""
        n = max(self.compared, 1)
        return self.challenger_error / n, self.champion_error / n

    def describe(self, confidence: float) -> str:
        """The test's figures, for a version record's note."""
        ours, theirs = self.mean_errors()
        return (
            f"paired sign test over {self.compared} examples: lower error on {self.wins}, "
            f"higher on {self.losses} "
            f"(mean error {ours:.4f} vs {theirs:.4f}); evidence {self.evidence():.3g} "
            f">= {1 / (1 - confidence):.3g} (confidence {confidence})"
        )
