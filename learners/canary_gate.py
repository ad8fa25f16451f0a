"""The canary's gate: whether the newest versions serve better than the stable one, on production
outcomes.

While a canary runs, serving splits the decisions by id (:mod:`adaptloop.learners.canary_split`):
``share`` of them go to the newest version, the rest to the stable one. Every version the learner
publishes meanwhile joins the canary *line* (an online learner's versions follow one another; the
line is judged as one), and the gate counts the outcomes of the decisions each group served: a
decision served by the stable version, or by a version of the line, that got an outcome.

The test is :class:`~adaptloop.learners.evidence.PairedSignTest`'s on pairs of decisions: each
outcome is paired with the other group's latest unpaired one (an outcome of the same group replaces
it), so the two errors of a pair are of decisions served at about the same time, and which one the
canary served was decided by the split, not by the decisions. If the two groups err alike, the
canary's error is the lower in a pair as often as the higher, whatever the stream does; the sign
test's evidence is weighed both ways, each at half the error the confidence allows (``2 / (1 -
confidence)``), so a wrong decision, either way, has a probability of at most ``1 - confidence``
however long the gate waits. It decides only once each group has ``min_outcomes`` outcomes; until it
decides, it waits. (The groups' mean errors over all their outcomes are for the record: when the
stream drifts during a round, only the paired ones compare like with like.)

>>> from adaptloop.learners.spec import CanarySpec
>>> gate = CanaryGate(CanarySpec(share=0.5, min_outcomes=10))
>>> gate.publish("a" * 16, servable=True) is None  # the first version to serve: the stable one
True
>>> gate.publish("b" * 16, servable=True).state  # the next one: a canary
'running'
>>> verdicts = [gate.observe(v * 16, error) for _ in range(20) for v, error in (("b", 0.0), ("a", 1.0))]
>>> verdicts.index("promoted"), gate.canary_group.outcomes, gate.stable_group.outcomes
(21, 11, 11)
>>> record = gate.publish("c" * 16, servable=True)
>>> record.state, record.canary_outcomes, record.wins, gate.stable == "c" * 16
('promoted', 11, 11, True)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from adaptloop.learners.evidence import PairedSignTest
from adaptloop.learners.recent import RecentIds
from adaptloop.learners.spec import CanarySpec
from adaptloop.schemas.system import Canary

Group = Literal["canary", "stable"]
Verdict = Literal["promoted", "rolled_back"]

LINE_VERSIONS = 5_000
"""The gate knows the line's last 5,000 versions: a decision served by an older one is not
counted."""


@dataclass
class GroupOutcomes:
    """The decisions one group served that got an outcome, and the sum of their errors."""

    outcomes: int = 0
    errors: float = 0.0

    def add(self, error: float) -> None:
        self.outcomes += 1
        self.errors += error

    def mean(self) -> float | None:
        return self.errors / self.outcomes if self.outcomes else None


@dataclass
class CanaryGate:
    """One model's canary: the stable version, the line judged against it, and the test of the
    two."""

    spec: CanarySpec
    stable: str | None = None  # the version the decisions outside the share are served by
    line: RecentIds = field(default_factory=lambda: RecentIds(limit=LINE_VERSIONS))
    canary_group: GroupOutcomes = field(default_factory=GroupOutcomes)
    stable_group: GroupOutcomes = field(default_factory=GroupOutcomes)
    test: PairedSignTest = field(default_factory=PairedSignTest)  # the canary as the challenger
    pending: tuple[Group, float] | None = None  # the latest outcome not paired yet
    # decided; the next version record carries it
    verdict: Verdict | Literal["replaced"] | None = None
    newest: str | None = None  # the line's newest version

    def group_of(self, served_version: str) -> Group | None:
        """Which group a decision served by ``served_version`` is in; None: not one the gate weighs
        (a round starts with its first canary version: until then the stable version serves every
        decision)."""
        if self.verdict is not None or self.newest is None:
            return None
        if served_version == self.stable:
            return "stable"
        return "canary" if served_version in self.line else None

    def observe(self, served_version: str, error: float) -> Verdict | None:
        """Count the outcome of a decision served by ``served_version``; the gate's verdict, once it
        has one."""
        group = self.group_of(served_version)
        if group is None or (group == "stable" and not self.canary_group.outcomes):
            # The stable version's decisions count from the canary's first on: those before were,
            # most of them, made before serving had the canary (the learner learns behind serving),
            # when the stable version served every decision.
            return None
        (self.canary_group if group == "canary" else self.stable_group).add(error)
        pending = self.pending
        if pending is not None and pending[0] != group:
            canary_error, stable_error = (
                (error, pending[1]) if group == "canary" else (pending[1], error)
            )
            self.test.update(challenger_error=canary_error, champion_error=stable_error)
            self.pending = None
        else:
            self.pending = (group, error)
        if (verdict := self._decide()) is not None:
            self.verdict = verdict
        return verdict

    def _decide(self) -> Verdict | None:
        least = self.spec.min_outcomes
        if self.canary_group.outcomes < least or self.stable_group.outcomes < least:
            return None
        each_way = self._each_way()
        if self.test.significant(each_way):
            return "promoted"
        if self.against().significant(each_way):
            return "rolled_back"
        return None

    def _each_way(self) -> float:
        """The confidence of each one-sided test: half the error ``confidence`` allows goes to each
        way."""
        return 1 - (1 - self.spec.confidence) / 2

    def against(self) -> PairedSignTest:
        """The same pairs with the stable version as the challenger: the evidence that the canary is
        worse."""
        test = self.test
        return PairedSignTest(
            test.compared, test.losses, test.wins, test.champion_error, test.challenger_error
        )

    def replace(self) -> None:
        """An operator's rollback or promotion: the version it publishes serves every decision, as
        the stable."""
        self.verdict = "replaced"

    def publish(self, version: str, servable: bool) -> Canary | None:
        """The learner publishes ``version``: the canary field of its record (None: it serves every
        decision).

        The gate's verdict goes on the record it was decided for (the promoted version, or the
        stable one the learner returned to), and the gate starts over with that version as the
        stable one. Otherwise, the first version that may serve is the stable one, and each later
        one the line's newest.
        """
        verdict, self.verdict = self.verdict, None
        if verdict is not None:
            record = self.figures(verdict) if verdict != "replaced" else None
            self._start(version if servable else self.stable)
            return record
        if not servable:
            return None
        if self.stable is None or version == self.stable:
            self.stable = version
            return None
        self.line.add(version)
        self.newest = version
        return self.figures("running")

    def _start(self, stable: str | None) -> None:
        self.stable = stable
        self.line = RecentIds(limit=LINE_VERSIONS)
        self.canary_group, self.stable_group = GroupOutcomes(), GroupOutcomes()
        self.test, self.pending, self.newest = PairedSignTest(), None, None

    def figures(self, state: Literal["running", "promoted", "rolled_back"]) -> Canary:
        """The gate's figures as a version record holds them."""
        assert self.stable is not None and self.newest is not None
        test = self.test
        return Canary(
            stable=self.stable,
            canary=self.newest,
            share=self.spec.share,
            state=state,
            canary_outcomes=self.canary_group.outcomes,
            stable_outcomes=self.stable_group.outcomes,
            canary_error=self.canary_group.mean(),
            stable_error=self.stable_group.mean(),
            paired_canary_error=test.challenger_error / test.compared if test.compared else None,
            paired_stable_error=test.champion_error / test.compared if test.compared else None,
            compared=test.compared,
            wins=test.wins,
            losses=test.losses,
            evidence_better=test.evidence(),
            evidence_worse=self.against().evidence(),
            bound=1 / (1 - self._each_way()),
        )

    def describe(self, verdict: Verdict) -> str:
        """The verdict and its figures, for the version record's note."""
        canary, stable, test = self.canary_group, self.stable_group, self.test
        what = "canary promoted" if verdict == "promoted" else "canary rolled back"
        return (
            f"{what}: the line's newest version {self.newest} over {canary.outcomes} "
            "decisions with an outcome "
            f"(mean error {canary.mean():.4f}) vs the stable {self.stable} over {stable.outcomes} "
            f"({stable.mean():.4f}); paired sign test over {test.compared} pairs: the "
            "canary's error lower in "
            f"{test.wins}, higher in {test.losses}; evidence better {test.evidence():.3g}, worse "
            f"{self.against().evidence():.3g}, bound {1 / (1 - self._each_way()):.3g} "
            f"(confidence {self.spec.confidence}, half each way)"
        )
