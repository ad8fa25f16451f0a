"""What watches a learner: its drift monitors and the policy that acts on them.

A :class:`ModelWatch` sees every example the learner sees (after deduplication),
emits :class:`DriftAlert` s, and asks for an action when its policy says so:

- ``challenger``: on a concept-drift alert on the shadow error, a fresh learner
  starts in shadow on the same stream. Both predict every example before learning
  it, and a paired sequential sign test (:mod:`adaptloop.learners.evidence`) weighs
  their errors: the challenger is promoted only when it is better at
  ``challenger_confidence``, after at least ``challenger_window`` examples (and, if
  set, by ``challenger_margin`` in mean error). The champion it replaces learns on
  in shadow as the new challenger and wins back the same way. A challenger that has
  not won after ``challenger_examples`` examples is dropped.
- a spec change to another model (task, recipe or params, :mod:`adaptloop.learners.catalog`) starts
  a challenger of that spec, whatever the policy: it is promoted as above, or once it has been
  compared on ``challenger_examples`` examples unless the test finds it worse (the operator asked
  for it: the evidence has to say no); it is never dropped, and the champion it replaces is not kept
  (the spec says what to learn). Its promotion puts the new spec in effect.
- ``rollback``: production error is kept per served version (over the decisions it
  served that got an outcome) for the learner's last 20 versions, in the order the
  learner had them; when a version that served at least 100 of them is worse than the
  best earlier one by ``rollback_bound``, the loop returns to that one (then waits
  ``2 * window`` decisions before it may roll back again). Meant for bad updates
  (poisoned feedback, a bug), not for a changed world, where no old version is good.

Its state is checkpointed with the learner, so a restarted worker watches on
exactly as before.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Literal

from river import stats

from adaptloop.learners.canary_gate import CanaryGate
from adaptloop.learners.drift import ConceptDriftMonitor, DataDriftMonitor
from adaptloop.learners.evidence import PairedSignTest
from adaptloop.learners.recipes import Model, build_model
from adaptloop.learners.spec import DriftSpec, LearnerSpec
from adaptloop.schemas.system import DriftAlert

log = logging.getLogger(__name__)

# a version is judged on at least this many served decisions with an outcome
MIN_VERSION_OUTCOMES = 100
VERSIONS_JUDGED = 20
"""The rollback policy keeps the production error of the learner's last 20 versions, so judging an
outcome costs the same after 300 versions as after 3 (every version ever served, ordered at each
outcome, would cost 1.4 ms an outcome after 300)."""


@dataclass
class Action:
    """What the policy asks the agent to do: ``promotion`` (the model is already swapped) or
    ``rollback``."""

    kind: Literal["promotion", "rollback"]
    to_version: str | None
    note: str
    actor: str | None = None  # who decided, for the version record; None: the drift policy

    spec: LearnerSpec | None = None  # a spec challenger's promotion: the spec now in effect


@dataclass
class Challenger:
    """A model learning in shadow beside the champion, and the test of the two on the same examples.

    ``origin`` is ``drift`` for a fresh learner started on a drift alert, ``replaced`` for a
    champion that a promotion replaced (it may win back), ``spec`` for the model of a changed
    ``spec``. ``examples``: how many it has shadowed, across restarts of its test (a replaced
    champion's test starts over whenever the promoted model leads it)."""

    model: Model
    test: PairedSignTest = field(default_factory=PairedSignTest)
    origin: Literal["drift", "replaced", "spec"] = "drift"
    spec: LearnerSpec | None = None  # origin "spec": the spec that takes effect when it is promoted
    examples: int = 0

    def __setstate__(self, state: dict[str, Any]) -> None:
        """A checkpoint from before the sign test kept rolling error windows: the test starts over.
        One from before ``examples`` counted them in its test."""
        if "test" not in state:
            state = {"model": state["model"], "test": PairedSignTest(), "origin": "drift"}
        state.setdefault("examples", state["test"].compared)
        self.__dict__.update({"spec": None, **state})


@dataclass
class ModelWatch:
    spec: LearnerSpec
    concept: ConceptDriftMonitor = field(init=False)
    data: DataDriftMonitor = field(init=False)
    challenger: Challenger | None = None
    # the learner's last versions, oldest first: their production error, None once judged bad
    version_errors: dict[str, stats.Mean | None] = field(default_factory=dict)
    cooldown: int = 0
    alerts: list[DriftAlert] = field(default_factory=list)
    actions: list[Action] = field(default_factory=list)
    # the spec's canary (a checkpoint from before canaries: the class's None)
    canary: CanaryGate | None = None

    def __post_init__(self) -> None:
        drift = self.spec.drift
        self.concept = ConceptDriftMonitor(drift)
        self.data = DataDriftMonitor(drift, self.spec.name)
        if self.spec.canary is not None:
            self.canary = CanaryGate(self.spec.canary)

    def follow(self, spec: LearnerSpec) -> list[str]:
        """Watch on under ``spec``, a restarted worker's (its drift settings may have changed); the
        monitors whose settings changed start over. Returns what changed, for the log."""
        before, after = self.spec.drift, spec.drift
        self.spec = spec
        # (A spec pickled before a field existed lacks it: not a change, the new value applies.)
        changed = [
            name
            for name in DriftSpec.model_fields
            if name in vars(before) and getattr(before, name) != getattr(after, name)
        ]
        if {"detector", "detector_params", "window"} & set(changed):
            self.concept = ConceptDriftMonitor(after)
        else:
            self.concept.spec = after
        if {"window", "reference_size", "max_features"} & set(changed):
            self.data = DataDriftMonitor(after, spec.name)
        else:
            self.data.spec = after
        if after.policy != "challenger" and (
            self.challenger is None or self.challenger.origin != "spec"
        ):
            self.challenger = None
        self._follow_canary(spec)
        return changed

    def _follow_canary(self, spec: LearnerSpec) -> None:
        """A canary set since: the next version that serves is its stable one; unset: the next
        serves all."""
        if spec.canary is None:
            self.canary = None
        elif self.canary is None:
            self.canary = CanaryGate(spec.canary)
        else:
            self.canary.spec = spec.canary

    def challenge_with(self, spec: LearnerSpec) -> bool:
        """Start a challenger of ``spec`` (another model than the champion's), unless one of it runs
        already; return whether one started. It replaces a drift challenger: the spec says what to
        learn now."""
        if (
            self.challenger is not None
            and self.challenger.origin == "spec"
            and self.challenger.spec == spec
        ):
            return False
        self.challenger = Challenger(build_model(spec), origin="spec", spec=spec)
        return True

    def _alert(self, fields: dict[str, Any], version: str | None, examples: int) -> None:
        fields = {**fields, "at_example": examples}  # the learner's count, whatever signal fired
        self.alerts.append(DriftAlert(model=self.spec.name, model_version=version, **fields))

    def observe_decision(
        self, values: dict[str, object], version: str | None, examples: int
    ) -> None:
        """Every decision (learned or not): features, the served prediction, whether an outcome
        came."""
        if self.spec.drift.data:
            for fields in self.data.update(values):
                self._alert(fields, version, examples)

    def observe_errors(
        self,
        shadow: float,
        production: float | None,
        served_version: str | None,
        version: str | None,
        examples: int,
    ) -> None:
        drift = self.spec.drift
        if drift.concept:
            for signal, error in (("shadow_error", shadow), ("production_error", production)):
                if error is not None and (fields := self.concept.update(signal, error)):
                    self._alert(fields, version, examples)
                    # a model that got better needs no challenger
                    rose = fields["direction"] == "rose"
                    if (
                        signal == "shadow_error"
                        and rose
                        and drift.policy == "challenger"
                        and self.challenger is None
                    ):
                        self.challenger = Challenger(build_model(self.spec))
        if drift.policy == "rollback" and version is not None:
            if version not in self.version_errors:
                self._new_version(version)
            if production is not None and served_version is not None:
                self._judge_versions(production, served_version, version)
        if self.canary is not None and production is not None and served_version is not None:
            self._gate(self.canary, production, served_version)

    def _gate(self, gate: CanaryGate, production: float, served_version: str) -> None:
        """Count a production outcome for the canary's gate; ask for its verdict once it has one."""
        verdict = gate.observe(served_version, production)
        if verdict == "promoted":
            self.actions.append(
                Action("promotion", None, gate.describe(verdict), actor="policy:canary")
            )
        elif verdict == "rolled_back":
            kept = (
                "; the withdrawn line's learning is not lost: its newest version "
                f"{gate.newest} stays in the "
                f"store ('adaptloop rollback {self.spec.name} --to {gate.newest}' serves it again)"
            )
            note = gate.describe(verdict) + kept
            self.actions.append(Action("rollback", gate.stable, note, actor="policy:canary"))

    def _new_version(self, version: str) -> None:
        """The learner has a new version: keep its production error, forget the oldest beyond the
        last 20."""
        errors = self.version_errors
        errors[version] = stats.Mean()
        while len(errors) > VERSIONS_JUDGED:
            del errors[next(iter(errors))]

    def _judge_versions(self, production: float, served_version: str, version: str) -> None:
        drift = self.spec.drift
        self.cooldown = max(0, self.cooldown - 1)
        errors = self.version_errors
        served = errors.get(served_version)
        # older than the last versions, or judged bad already: not judged (again)
        if served is None:
            return
        served.update(production)
        if self.cooldown or served.n < MIN_VERSION_OUTCOMES:
            return
        # Only older versions count: a late decision of an old, worse version (an untrained first
        # one, say) must not roll back a newer, better one. (The dict keeps the learner's order.)
        best, best_error = None, 0.0
        for candidate, mean in errors.items():
            if candidate == served_version:
                break
            if (
                mean is not None
                and mean.n >= MIN_VERSION_OUTCOMES
                and (best is None or mean.get() < best_error)
            ):
                best, best_error = candidate, mean.get()
        if (
            best is not None
            and served.get() > best_error + drift.rollback_bound
            and best != version
        ):
            self.actions.append(
                Action(
                    "rollback",
                    best,
                    f"production error {served.get():.3f} of {served_version} "
                    f"over {int(served.n)} decisions vs {best_error:.3f} of {best}",
                )
            )
            self.cooldown = 2 * drift.window
            errors[served_version] = None  # judged: it must not count again if it is served again

    def shadow_challenger(
        self,
        x: dict[str, Any],
        target: Any,
        champion_error: float,
        classifier: bool,
        champion: Model,
    ) -> Model | None:
        """Feed the challenger (predict, then learn); the model to promote, if the test says it is
        better.

        On a promotion ``champion`` becomes the challenger: the caller still has it learn this
        example, as the promoted model just did, so both keep having learned the same examples.
        """
        challenger = self.challenger
        if challenger is None:
            return None
        if classifier:
            proba = challenger.model.predict_proba_one(x)
            y_pred = max(proba, key=proba.get) if proba else None
            error = float(y_pred != target)
        else:
            error = abs(float(challenger.model.predict_one(x)) - float(target))
        challenger.model.learn_one(x, target)
        challenger.examples += 1
        test = challenger.test
        test.update(error, champion_error)
        drift = self.spec.drift
        if test.compared >= drift.challenger_window:
            ours, theirs = test.mean_errors()
            if (
                test.significant(drift.challenger_confidence)
                and ours + drift.challenger_margin <= theirs
            ):
                what = {
                    "replaced": "the replaced champion wins back",
                    "spec": ("the spec's new model promoted"),
                }
                label = what.get(challenger.origin, "challenger promoted")
                note = f"{label}: {test.describe(drift.challenger_confidence)}"
                return self._promote(challenger, champion, note)
        if challenger.origin == "spec":
            if test.compared >= drift.challenger_examples and not _worse(
                test, drift.challenger_confidence
            ):
                note = (
                    f"the spec's new model promoted, not found worse after {test.compared} "
                    "examples: "
                    f"{test.describe(drift.challenger_confidence)}"
                )
                return self._promote(challenger, champion, note)
            return None
        if challenger.examples >= drift.challenger_examples:
            log.info(
                "model %r: challenger (%s) dropped, not better after %d examples: %s",
                self.spec.name,
                challenger.origin,
                challenger.examples,
                test.describe(drift.challenger_confidence),
            )
            self.challenger = None
        elif challenger.origin == "replaced" and test.log_evidence() < 0.0:
            # The promoted model leads (the evidence for the replaced champion is below 1): its test
            # starts over, so that a promotion that turns bad later is undone on what happens from
            # then on, not against the lead the promoted model built first. (Each test is a new one
            # at the same confidence: over a long run two equal models may swap more often than once
            # in 1/(1-confidence) runs; the bench's policy suite counts the switches.)
            challenger.test = PairedSignTest()
        return None

    def _promote(self, challenger: Challenger, champion: Model, note: str) -> Model:
        """Ask for the promotion of ``challenger``; the champion learns on as the new challenger
        (not after a spec's promotion: the spec says what to learn)."""
        self.actions.append(Action("promotion", None, note, spec=challenger.spec))
        self.challenger = (
            None if challenger.origin == "spec" else Challenger(champion, origin="replaced")
        )
        return challenger.model


def _worse(test: PairedSignTest, confidence: float) -> bool:
    """Whether the paired test finds the challenger worse than the champion at ``confidence``."""
    swapped = PairedSignTest(
        test.compared, test.losses, test.wins, test.champion_error, test.challenger_error
    )
    return swapped.significant(confidence)
