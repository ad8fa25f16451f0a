"""Whether a model is well, as the learner that owns it sees it over its latest decisions.

A model is *sick* when it rejects more than ``max_rejected_share`` of its latest decisions (its
producers send labels or features its contract refuses), when its model failed and was restored
(``model_errors``), or when its latest decisions all ended without an outcome (``no_outcomes``:
predictions still come, the outcomes stopped). Each end of a decision counts once: learned,
rejected, failed, or ended unlearned (expired, late).

>>> watch = HealthWatch("churn", window=10, max_rejected_share=0.2)
>>> for _ in range(7):
...     watch.observe("learned")
>>> for _ in range(3):
...     watch.observe("rejected", "decision 'd': label 'true' is a string")
>>> report = watch.report()
>>> report.status, report.reasons, report.rejected
('sick', ['rejecting'], 3)
"""

from __future__ import annotations

import itertools
from collections import Counter, deque
from typing import Literal

from adaptloop.schemas.system import ModelHealth

Ending = Literal["learned", "rejected", "error", "unlearned"]
LAST_REJECTIONS = 3


class HealthWatch:
    """The endings of one model's latest ``window`` decisions, and what they say of its health."""

    def __init__(self, model: str, window: int = 200, max_rejected_share: float = 0.2) -> None:
        self.model = model
        self.window = window
        self.max_rejected_share = max_rejected_share
        self.endings: deque[Ending] = deque(maxlen=window)
        self.counts: Counter[Ending] = Counter()  # over the window
        self.rejected_total = 0
        self.last_rejections: deque[str] = deque(maxlen=LAST_REJECTIONS)
        self.status: Literal["ok", "sick"] = "ok"
        # decisions learned since the last other ending or reading, counted into the window at once
        self._learned = 0

    def learned(self) -> None:
        """Count a decision learned: :meth:`observe` ``("learned")``, for a counter's increment
        per example (the window takes the run of them when anything else is observed or read)."""
        self._learned += 1

    def seen(self) -> bool:
        """Whether any decision of the model has ended here."""
        return bool(self._learned or self.endings)

    def _settle(self) -> None:
        """Put the run of decisions learned into the window, as one :meth:`observe` each would."""
        run, self._learned = self._learned, 0
        if not run:
            return
        endings, counts = self.endings, self.counts
        if run >= self.window:
            endings.clear()
            counts.clear()
            run = self.window
        else:
            for old in itertools.islice(endings, max(0, len(endings) + run - self.window)):
                counts[old] -= 1
        endings.extend(itertools.repeat("learned", run))
        counts["learned"] += run

    def observe(self, ending: Ending, reason: str | None = None) -> None:
        """Count how one decision ended (``reason``: why it was rejected, or how the model
        failed)."""
        self._settle()
        if len(self.endings) == self.window:
            self.counts[self.endings[0]] -= 1
        self.endings.append(ending)
        self.counts[ending] += 1
        if ending in ("rejected", "error"):
            self.rejected_total += ending == "rejected"
            if reason is not None:
                self.last_rejections.append(reason)

    def reasons(self) -> list[str]:
        """Why the model is sick (empty: it is not)."""
        self._settle()
        seen, reasons = len(self.endings), []
        if (
            seen >= min(20, self.window)
            and self.counts["rejected"] > self.max_rejected_share * seen
        ):
            reasons.append("rejecting")
        if self.counts["error"]:
            reasons.append("model_errors")
        if seen == self.window and not self.counts["learned"] and self.counts["unlearned"] == seen:
            reasons.append("no_outcomes")
        return reasons

    def describe(self, reason: str) -> str:
        """One reason, in words."""
        self._settle()
        seen = len(self.endings)
        if reason == "rejecting":
            last = self.last_rejections[-1] if self.last_rejections else ""
            return (
                f"model {self.model!r} rejected {self.counts['rejected']} of its last "
                f"{seen} examples "
                f"(over {self.max_rejected_share:.0%}); the last: {last}"
            )
        if reason == "model_errors":
            return (
                f"model {self.model!r} failed {self.counts['error']} time(s) in its last "
                f"{seen} decisions and "
                "was restored without the example to blame (see its dead letters of kind error)"
            )
        return (
            f"the last {seen} decisions of model {self.model!r} all ended without an "
            "outcome: predictions "
            "come, outcomes do not"
        )

    def report(self) -> ModelHealth:
        """The model's health now (its ``status`` is remembered, to tell when it changes)."""
        self._settle()
        reasons = self.reasons()
        self.status = "sick" if reasons else "ok"
        return ModelHealth(
            model=self.model,
            status=self.status,
            reasons=reasons,
            window=len(self.endings),
            learned=self.counts["learned"],
            rejected=self.counts["rejected"],
            errors=self.counts["error"],
            rejected_total=self.rejected_total,
            last_rejections=list(self.last_rejections),
        )
