"""A reference model of the delayed-feedback join's rules, for the differential test of the join.

Written from the rules as documented (``learners/join.py``'s docstrings, ``docs/architecture.md``'s
"The join", ``schemas/inference.py``'s ``JoinStatus``) and the unit tests, not from the product's
structure: no deadline heaps, no caches of parsed events, no superseded index entries; after every
move of a clock it looks at every decision of the partition. Slow (a scan per step), and plain.

The rules (the numbers are those of the comments below):

1. A decision is keyed by ``decision_id`` and belongs to the partition its first record was
   processed on (the join agent sends a record read elsewhere on to that partition).
2. Each partition has two clocks, one per input (predictions, outcomes), from minus infinity. A
   record moves its input's clock to its time minus ``lateness`` (never back); a tick moves the
   clocks it names.
3. When a clock moves, before the record that moved it is taken: every pending prediction whose
   deadline (its time + its model's horizon) is at or before the *outcomes* clock ends, in deadline
   order (ties by decision id), as ``defaulted`` (its model has ``on_missing = "default"`` and a
   default label or reward) or ``expired``, stamped with its deadline. Then every outcome waiting
   for its prediction whose deadline (its time + the longest horizon) is at or before the
   *predictions* clock is an orphan (rejected), in the same order. Then every finished decision
   whose retention is over on *both* clocks is forgotten.
4. A prediction its model's contract refuses (its features), or too large to keep, is rejected
   before its time moves a clock. If it would open its decision, the decision ends ``rejected`` (a
   record of the prediction alone, stamped with its time; an outcome waiting for it is rejected
   with it, and any later outcome too); otherwise it changes nothing.
5. An outcome whose label its decision's model cannot learn is rejected whenever it comes: before
   or after its prediction, within the horizon or after it, after the prediction expired. A
   ``rejected`` record (the prediction and that outcome, stamped with the outcome's time) says so;
   the decision stays as it was (a pending prediction waits for a good outcome).
6. A prediction meets its outcome, in either order: ``joined`` if the outcome's time is before
   the deadline, stamped with the later of the two times; at or after it, the prediction first
   ends as in 3, then the outcome adds a ``late`` record stamped with its own time. (At the
   deadline: an outcome there moves the outcomes clock to the deadline, which ends the prediction
   by rule 3 when there is no lateness.) An outcome of a decision that expired adds a ``late``
   record, once.
7. Repeated records count once: a repeated prediction of a pending decision replaces the first
   only under its own model's ``duplicates = "last"`` (a new deadline from its own time); a
   repeated outcome still waiting for its prediction replaces the first only under the join's
   ``outcome_duplicates = "last"`` (with the offset and topic it was read at, for its dead
   letter). Anything else repeated is ignored. A model without a spec: the longest horizon, no
   contract, ``first``.
8. A finished decision keeps a small marker for ``late_retention`` horizons after its deadline,
   so that repeated records are recognised (and late outcomes of an expired one).
9. The state is what the changelog holds: a restarted join (or one that takes a partition back)
   has the entries of the last commit, and its clocks start again from nothing.

The state is rendered in the changelog's entry format (:class:`~adaptloop.learners.join.JoinEntry`),
the records as :class:`~adaptloop.schemas.inference.TrainingExample`; the contracts' own checks
(:class:`~adaptloop.schemas.contract.ModelContract`) say what a model refuses, and how.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from adaptloop.learners.join import MAX_JOINABLE_BYTES, JoinEntry
from adaptloop.learners.spec import LearnerSpec
from adaptloop.schemas import OutcomeEvent, PredictionEvent, TrainingExample, encode

PREDICTIONS, OUTCOMES = 0, 1


@dataclass
class Decision:
    """One decision as the rules see it."""

    partition: int
    status: str  # pending, done, expired, late, rejected
    prediction: PredictionEvent | None = None  # while pending; kept for late records when expired
    outcome: OutcomeEvent | None = None  # an outcome waiting for its prediction
    deadline: float | None = None  # while pending
    horizon: float | None = None  # while pending
    offset: int | None = None  # where the waiting outcome was read
    sent_on: bool = False  # ... from the repartition topic
    forget_at: float | None = None  # once finished
    reason: str | None = None  # why its prediction was rejected


@dataclass(frozen=True)
class Refusal:
    """A record the join will not use: the event, why, and where it was read."""

    event: PredictionEvent | OutcomeEvent
    reason: str
    offset: int | None
    sent_on: bool


class ReferenceJoin:
    def __init__(
        self,
        specs: dict[str, LearnerSpec],
        *,
        default_horizon: float = 3600.0,
        late_retention: float = 3.0,
        lateness: float = 0.0,
        outcome_duplicates: str = "first",
    ) -> None:
        self.specs = specs
        horizons = [spec.horizon_seconds for spec in specs.values()]
        self.longest_horizon = max([default_horizon, *horizons])
        self.late_retention = late_retention
        self.lateness = lateness
        self.outcome_duplicates = outcome_duplicates
        self.decisions: dict[str, Decision] = {}
        self.clocks: dict[int, list[float]] = {}
        self.examples: list[TrainingExample] = []
        self.refusals: list[Refusal] = []

    # -- what a step produced ------------------------------------------------------------------

    def take_outputs(self) -> tuple[list[TrainingExample], list[Refusal]]:
        out = (self.examples, self.refusals)
        self.examples, self.refusals = [], []
        return out

    # -- inputs --------------------------------------------------------------------------------

    def prediction(self, event: PredictionEvent, partition: int) -> None:
        spec = self.specs.get(event.model)
        horizon = spec.horizon_seconds if spec is not None else self.longest_horizon
        problem = self._too_large(event, "prediction")
        if problem is None and spec is not None:
            problem = spec.contract().feature_problem(event.features)
        if problem is not None:  # rule 4
            self._refuse_prediction(event, partition, problem, horizon)
            return
        at = event.timestamp.timestamp()
        self._move_clocks(partition, (PREDICTIONS,), at)  # rule 2
        decision = self.decisions.get(event.decision_id)
        deadline = at + horizon
        if decision is None:
            self.decisions[event.decision_id] = Decision(
                partition, "pending", prediction=event, deadline=deadline, horizon=horizon
            )
        elif decision.status == "pending" and decision.prediction is None:
            outcome = decision.outcome
            assert outcome is not None
            problem = spec.contract().label_problem(outcome.label, outcome.reward) if spec else None
            if problem is not None:  # rule 5: the prediction waits for a good outcome
                self.refusals.append(Refusal(outcome, problem, decision.offset, decision.sent_on))
                self._record(event, outcome, "rejected", outcome.timestamp, problem)
                self.decisions[event.decision_id] = Decision(
                    partition, "pending", prediction=event, deadline=deadline, horizon=horizon
                )
                return
            decision.prediction, decision.outcome, decision.deadline, decision.horizon = (
                event,
                None,
                deadline,
                horizon,
            )
            self._meet(event.decision_id, decision, outcome)  # rule 6
        elif decision.status == "pending" and spec is not None and spec.duplicates == "last":
            # rule 7
            decision.prediction, decision.deadline, decision.horizon = event, deadline, horizon
        # else: a repeated prediction, ignored (rule 7)

    def outcome(
        self,
        event: OutcomeEvent,
        partition: int,
        offset: int | None,
        sent_on: bool,
    ) -> None:
        problem = self._too_large(event, "outcome")
        if problem is not None:
            self.refusals.append(Refusal(event, problem, None, False))
            return
        self._move_clocks(partition, (OUTCOMES,), event.timestamp.timestamp())  # rule 2
        key = event.decision_id
        decision = self.decisions.get(key)
        if decision is None:
            self.decisions[key] = Decision(
                partition,
                "pending",
                outcome=event,
                deadline=event.timestamp.timestamp() + self.longest_horizon,
                horizon=self.longest_horizon,
                offset=offset,
                sent_on=sent_on,
            )
            return
        if decision.status == "rejected":  # rule 4: its prediction was refused
            reason = f"its prediction was rejected: {decision.reason}"
            self.refusals.append(Refusal(event, reason, None, False))
            return
        if decision.prediction is not None and decision.status in ("pending", "expired"):
            spec = self.specs.get(decision.prediction.model)
            problem = spec.contract().label_problem(event.label, event.reward) if spec else None
            if problem is not None:  # rule 5
                self.refusals.append(Refusal(event, problem, None, False))
                self._record(decision.prediction, event, "rejected", event.timestamp, problem)
                return
            if decision.status == "pending":
                self._meet(key, decision, event)  # rule 6
                return
            self._late(decision, event)  # rule 6: the decision expired
            return
        if decision.status == "pending" and self.outcome_duplicates == "last":  # rule 7
            decision.outcome, decision.offset, decision.sent_on = event, offset, sent_on
        # else: a repeated outcome, ignored (rule 7)

    def tick(self, partition: int, now: float, clocks: tuple[int, ...]) -> None:
        self._move_clocks(partition, clocks, now)

    def latest(self, partition: int) -> float | None:
        clocks = self.clocks.get(partition)
        if clocks is None or max(clocks) == float("-inf"):
            return None
        return max(clocks)

    # -- restarts (rule 9) ---------------------------------------------------------------------

    def snapshot(self) -> dict[str, Decision]:
        return copy.deepcopy(self.decisions)

    def restart(self, committed: dict[str, Decision]) -> None:
        self.decisions = copy.deepcopy(committed)
        self.clocks = {}
        self.examples, self.refusals = [], []

    def take_over(self, partition: int, committed: dict[str, Decision]) -> None:
        """Give ``partition`` away and take it back: its decisions as committed, new clocks."""
        self.decisions = {key: d for key, d in self.decisions.items() if d.partition != partition}
        back = {key: d for key, d in committed.items() if d.partition == partition}
        self.decisions.update(copy.deepcopy(back))
        self.clocks.pop(partition, None)

    # -- the rules' steps ----------------------------------------------------------------------

    def _move_clocks(self, partition: int, which: tuple[int, ...], at: float) -> None:
        clocks = self.clocks.setdefault(partition, [float("-inf"), float("-inf")])
        for index in which:
            clocks[index] = max(clocks[index], at - self.lateness)
        mine = {key: d for key, d in self.decisions.items() if d.partition == partition}
        pending = [(d.deadline, key, d) for key, d in mine.items() if d.status == "pending"]
        # rule 3: predictions that waited too long, by the outcomes clock
        for deadline, _, d in sorted(pending):
            if d.prediction is not None and deadline <= clocks[OUTCOMES]:  # type: ignore[operator]
                self._unanswered(d)
        # ... outcomes whose prediction never came, by the predictions clock
        orphans = [
            (deadline, key)
            for deadline, key, d in sorted(pending)
            if d.prediction is None and deadline <= clocks[PREDICTIONS]  # type: ignore[operator]
        ]
        for _, key in orphans:
            decision = self.decisions.pop(key)
            assert decision.outcome is not None
            reason = f"no prediction for decision_id {key!r} within {self.longest_horizon:.0f}s"
            refusal = Refusal(decision.outcome, reason, decision.offset, decision.sent_on)
            self.refusals.append(refusal)
        # ... finished decisions whose retention is over on both clocks (rule 8)
        for key, d in mine.items():
            if d.status != "pending" and d.forget_at is not None and d.forget_at <= min(clocks):
                del self.decisions[key]

    def _refuse_prediction(
        self,
        event: PredictionEvent,
        partition: int,
        problem: str,
        horizon: float,
    ) -> None:
        self.refusals.append(Refusal(event, problem, None, False))
        decision = self.decisions.get(event.decision_id)
        opens = decision is None or (decision.status == "pending" and decision.prediction is None)
        if not opens:
            return  # its decision has a prediction already, or ended: nothing changes
        self._record(event, None, "rejected", event.timestamp, problem)
        if decision is not None:
            assert decision.outcome is not None
            self.refusals.append(
                Refusal(
                    decision.outcome,
                    f"its prediction was rejected: {problem}",
                    decision.offset,
                    decision.sent_on,
                )
            )
        deadline = event.timestamp.timestamp() + horizon
        self.decisions[event.decision_id] = Decision(
            partition,
            "rejected",
            forget_at=deadline + horizon * self.late_retention,
            reason=problem[:500],
        )

    def _meet(self, key: str, decision: Decision, outcome: OutcomeEvent) -> None:
        prediction = decision.prediction
        assert prediction is not None and decision.deadline is not None
        if outcome.timestamp.timestamp() >= decision.deadline:
            self._unanswered(decision)
            self._late(decision, outcome)
            return
        self._record(prediction, outcome, "joined", max(prediction.timestamp, outcome.timestamp))
        forget_at = self._retention(decision)
        self.decisions[key] = Decision(decision.partition, "done", forget_at=forget_at)

    def _unanswered(self, decision: Decision) -> None:
        """A prediction whose horizon passed with no outcome: defaulted or expired (rule 3)."""
        prediction = decision.prediction
        assert prediction is not None and decision.deadline is not None
        spec = self.specs.get(prediction.model)
        when = datetime.fromtimestamp(decision.deadline, UTC)
        if (
            spec is not None
            and spec.on_missing == "default"
            and (spec.default_label is not None or spec.default_reward is not None)
        ):
            self.examples.append(
                TrainingExample(
                    timestamp=when,
                    model=prediction.model,
                    decision_id=prediction.decision_id,
                    model_version=prediction.model_version,
                    features=prediction.features,
                    prediction=prediction.prediction,
                    label=spec.default_label,
                    reward=spec.default_reward,
                    status="defaulted",
                    predicted_at=prediction.timestamp,
                    fallback=prediction.fallback,
                )
            )
        else:
            self._record(prediction, None, "expired", when)
        decision.status, decision.forget_at = "expired", self._retention(decision)

    def _late(self, decision: Decision, outcome: OutcomeEvent) -> None:
        assert decision.prediction is not None
        self._record(decision.prediction, outcome, "late", outcome.timestamp)
        decision.status = "late"

    def _retention(self, decision: Decision) -> float:
        assert decision.deadline is not None and decision.horizon is not None
        return decision.deadline + decision.horizon * self.late_retention

    def _record(
        self,
        prediction: PredictionEvent,
        outcome: OutcomeEvent | None,
        status: str,
        when: datetime,
        reason: str | None = None,
    ) -> None:
        self.examples.append(
            TrainingExample(
                timestamp=when,
                model=prediction.model,
                decision_id=prediction.decision_id,
                model_version=prediction.model_version,
                features=prediction.features,
                prediction=prediction.prediction,
                label=outcome.label if outcome else None,
                reward=outcome.reward if outcome else None,
                status=status,  # type: ignore[arg-type]
                predicted_at=prediction.timestamp,
                outcome_at=outcome.timestamp if outcome else None,
                fallback=prediction.fallback,
                reason=reason,
            )
        )

    @staticmethod
    def _too_large(event: PredictionEvent | OutcomeEvent, what: str) -> str | None:
        size = len(encode(event))
        if size <= MAX_JOINABLE_BYTES:
            return None
        return (
            f"the {what} takes {size:,} bytes as the join writes it, over the "
            f"{MAX_JOINABLE_BYTES:,} it can keep in its state and in a training example"
        )

    # -- the state, as the changelog's entries -------------------------------------------------

    def entries(self) -> dict[str, JoinEntry]:
        return {key: entry_of(decision) for key, decision in self.decisions.items()}


def entry_of(d: Decision) -> JoinEntry:
    """A decision in the changelog's entry format (the short keys documented on ``JoinEntry``)."""
    entry: dict[str, Any] = {"pt": d.partition, "st": d.status}
    if d.status == "pending" and d.prediction is not None:
        entry.update(p=encode(d.prediction), o=None, dl=d.deadline, h=d.horizon)
    elif d.status == "pending":
        assert d.outcome is not None
        entry.update(p=None, o=encode(d.outcome), dl=d.deadline, h=d.horizon, off=d.offset)
        if d.sent_on:
            entry["ro"] = True
    elif d.status in ("expired", "late"):
        assert d.prediction is not None
        entry.update(p=encode(d.prediction), dl=None, gc=d.forget_at)
    else:
        entry.update(dl=None, gc=d.forget_at)
        if d.status == "rejected":
            entry["r"] = d.reason
    return entry  # type: ignore[return-value]
