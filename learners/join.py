"""The delayed-feedback join: predictions meet their outcomes by decision_id, within a wait horizon.

Pure logic over any mutable mapping (a dict here, a :class:`JoinState` whose
changes the worker writes to a changelog topic), so it is tested without Kafka. Time is event time, with one
clock per input: predictions and outcomes are separate topics that a consumer
reads at different paces, so a pending prediction expires only when the
*outcomes* clock of its partition passes its deadline, an outcome waiting for its
prediction only when the *predictions* clock does, and finished entries are
forgotten when both have passed. Clock ticks (wall clock) advance the clock of
an input that has been read to its end, so idle partitions still expire while a
backlog does not.

Every prediction ends exactly once as ``joined``, ``defaulted`` or ``expired``; an
outcome that comes after its prediction expired adds a ``late`` record (not
learned). Outcomes whose prediction never comes are returned as rejections for
the dead-letter topic, and so is what breaks a registered model's contract: a
prediction with features the model refuses (its outcome is refused with it), an
outcome whose label the model cannot learn (its prediction waits on for a good one).
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, TypedDict

import msgspec
import orjson

from adaptloop.learners.spec import LearnerSpec
from adaptloop.schemas.base import SCHEMA_VERSION
from adaptloop.schemas.codec import encode
from adaptloop.schemas.inference import JoinStatus, OutcomeEvent, PredictionEvent, TrainingExample

EntryStatus = Literal["pending", "done", "expired", "late", "rejected"]
PENDING: EntryStatus = "pending"
DONE: EntryStatus = "done"
EXPIRED: EntryStatus = "expired"
LATE: EntryStatus = "late"
REJECTED: EntryStatus = "rejected"
EXPIRE, ORPHAN, GC = "expire", "orphan", "gc"
PREDICTION_CLOCK, OUTCOME_CLOCK = 0, 1
BOTH_CLOCKS = (PREDICTION_CLOCK, OUTCOME_CLOCK)
PARSED_EVENTS = 20_000
"""Pending predictions, and outcomes waiting for their prediction, kept parsed in memory (each kind up to this
many; the JSON in the state is the truth). Most are used soon: a live decision's outcome follows its prediction,
and in a backlog a fetch of outcomes (smaller records) runs ahead of the predictions by a thousand or so."""


class JoinEntry(TypedDict, total=False):
    """One decision in the join's state, as its changelog stores it (JSON with these short keys: the
    state holds an entry per decision pending or recently finished, so the keys are most of its size).

    A pending decision holds the event that came first (``p`` or ``o``) until the other one comes;
    a finished one keeps a small marker (``st`` and ``gc``) so that duplicates are recognised.
    """

    pt: int  # the input partition the decision belongs to
    st: EntryStatus
    p: bytes | None  # the prediction, as JSON, while it is needed
    o: bytes | None  # the outcome, as JSON, while it waits for its prediction
    dl: float | None  # the deadline (event time, epoch seconds) of a pending decision
    h: float  # the horizon it was given
    off: int | None  # the offset of an outcome waiting for its prediction (for its dead letter)
    ro: bool  # that outcome was read from the repartition topic (sent on from another partition)
    gc: float  # when a finished decision is forgotten (event time)
    r: str  # why its prediction was rejected


@dataclass(frozen=True)
class Rejection:
    """A prediction or outcome the join will not use, why, and where it was read (None: the record being
    processed; ``sent_on``: an outcome read from the repartition topic), for its dead letter."""

    event: PredictionEvent | OutcomeEvent
    reason: str
    offset: int | None
    sent_on: bool = False


@dataclass
class JoinOutput:
    """What one step of the join produced."""

    examples: list[TrainingExample] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)

    def extend(self, other: JoinOutput) -> None:
        self.examples.extend(other.examples)
        self.rejections.extend(other.rejections)


_PACK = msgspec.msgpack.Encoder()
_UNPACK = msgspec.msgpack.Decoder()


def entry_bytes(entry: JoinEntry) -> bytes:
    """An entry as the changelog keeps it: MessagePack, with the events' JSON as raw bytes (as a JSON string it
    would be escaped, and a prediction near the record limit would no longer fit).

    >>> entry: JoinEntry = {"pt": 3, "st": "pending", "p": b'{"decision_id":"d1"}', "o": None, "dl": 1.5, "h": 60.0}
    >>> entry_from(entry_bytes(entry)) == entry
    True
    """
    return _PACK.encode(entry)


def entry_from(data: bytes) -> JoinEntry:
    """An entry read back from the changelog (also one written as JSON by adaptloop 0.1).

    >>> entry_from(b'{"pt":0,"st":"pending","p":"[1, 2]","o":null,"dl":2.0,"h":60.0}')["p"]
    b'[1, 2]'
    """
    if data[:1] == b"{":
        entry = orjson.loads(data)
        for key in ("p", "o"):
            if isinstance(entry.get(key), str):
                entry[key] = entry[key].encode()
        return entry  # type: ignore[no-any-return]
    return _UNPACK.decode(data)  # type: ignore[no-any-return]


class JoinState(dict[str, JoinEntry]):
    """The join's entries by decision_id, noting per partition which keys changed, for the changelog.

    >>> state = JoinState()
    >>> state["d1"] = {"pt": 0, "st": "pending"}
    >>> state["d2"] = {"pt": 1, "st": "pending"}
    >>> del state["d1"]
    >>> state.take_changes(0), state.take_changes(0)
    ({'d1': None}, {})
    >>> state.drop_partition(1); len(state)
    0
    """

    def __init__(self) -> None:
        super().__init__()
        self._changed: dict[int, set[str]] = {}

    def __setitem__(self, key: str, entry: JoinEntry) -> None:
        super().__setitem__(key, entry)
        self._changed.setdefault(entry["pt"], set()).add(key)

    def __delitem__(self, key: str) -> None:
        partition = self[key]["pt"]
        super().__delitem__(key)
        self._changed.setdefault(partition, set()).add(key)

    def take_changes(self, partition: int) -> dict[str, JoinEntry | None]:
        """The current entry (``None``: deleted) of every key of ``partition`` changed since the last call."""
        return {key: self.get(key) for key in self._changed.pop(partition, ())}

    def restore(self, key: str, entry: JoinEntry | None) -> None:
        """Apply one changelog record without noting it as a change."""
        if entry is None:
            super().pop(key, None)
        else:
            super().__setitem__(key, entry)

    def drop_partition(self, partition: int) -> None:
        """Forget a partition's entries and changes (it moved to another worker)."""
        for key in [key for key, entry in self.items() if entry["pt"] == partition]:
            super().__delitem__(key)
        self._changed.pop(partition, None)


MAX_JOINABLE_BYTES = 990_000
"""The largest prediction or outcome the join keeps (as JSON): its state entry, and the training example made
of it, must each fit in one Kafka record (a producer's message.max.bytes, 1,000,000 by default) with room for
their own fields. A 998 KB prediction read as JSON can come out larger (``1e5`` is written ``100000.0``)."""


def _kept(data: bytes) -> bytes:
    """A copy of ``data`` of its exact size, for bytes the join keeps in its state: orjson's output stays in the
    larger allocation it was written into (measured: a backlog of 150,000 pending predictions took 950 MB of
    resident memory instead of 435 MB)."""
    return bytes(memoryview(data))


def _too_large(encoded: bytes, what: str) -> str | None:
    if len(encoded) <= MAX_JOINABLE_BYTES:
        return None
    return (
        f"the {what} takes {len(encoded):,} bytes as the join writes it, over the {MAX_JOINABLE_BYTES:,} it can "
        "keep in its state and in a training example"
    )


def _json(value: bytes | None) -> bytes:
    """An event's JSON that the entry's status says is there."""
    assert value is not None
    return value


def _time(value: float | None) -> float:
    """A deadline that the entry's status says is set."""
    assert value is not None
    return value


def _keep(parsed: dict[str, Any], key: str, value: Any) -> None:
    """Keep ``value`` as ``key``'s parsed event, forgetting the oldest beyond :data:`PARSED_EVENTS`."""
    parsed[key] = value
    if len(parsed) > PARSED_EVENTS:
        del parsed[next(iter(parsed))]


def _ts(moment: datetime) -> float:
    return moment.timestamp()


def _at(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


class DelayedJoin:
    """Join predictions and outcomes arriving in any order.

    >>> from datetime import UTC, timedelta
    >>> t0 = datetime(2026, 1, 1, tzinfo=UTC)
    >>> join = DelayedJoin({}, {"churn": LearnerSpec(name="churn", horizon_seconds=60)})
    >>> p = PredictionEvent(decision_id="d1", model="churn", model_version="v1", features={"x": 1.0},
    ...                     prediction=True, timestamp=t0)
    >>> join.on_prediction(p, partition=0).examples
    []
    >>> out = join.on_outcome(OutcomeEvent(decision_id="d1", label=False, source="s",
    ...                                    timestamp=t0 + timedelta(seconds=5)), partition=0)
    >>> [(e.status, e.features, e.label) for e in out.examples]
    [('joined', {'x': 1.0}, False)]
    """

    def __init__(
        self,
        state: MutableMapping[str, JoinEntry],
        specs: Mapping[str, LearnerSpec],
        *,
        default_horizon: float = 3600.0,
        late_retention: float = 3.0,
        lateness: float = 0.0,
        outcome_duplicates: str = "first",
    ) -> None:
        self.state = state
        self.specs = dict(specs)
        self.default_horizon = max([default_horizon, *(s.horizon_seconds for s in specs.values())])
        self.late_retention = late_retention  # keep expired entries this many horizons to recognise late outcomes
        self.lateness = lateness  # how far behind the newest timestamp the watermark trails
        self.outcome_duplicates = outcome_duplicates  # for outcomes still waiting for their prediction
        self.counts: Counter[str] = Counter()
        self._contracts = {name: spec.contract() for name, spec in specs.items()}
        # The latest pending predictions and waiting outcomes, parsed (see PARSED_EVENTS). An outcome is kept with
        # the JSON its entry holds, so one that the entry no longer holds is never used.
        self._parsed: dict[str, PredictionEvent] = {}
        self._parsed_outcomes: dict[str, tuple[bytes, OutcomeEvent]] = {}
        self._clocks: dict[int, list[float]] = {}  # partition -> [predictions clock, outcomes clock]
        self._queues: dict[int, dict[str, list[tuple[float, str]]]] = {}  # partition -> queue -> heap

    def use_spec(self, name: str, spec: LearnerSpec | None) -> None:
        """Join ``name``'s predictions under ``spec`` from now on (its contract, horizon, duplicates and
        default label); None: the model was retired (its predictions are joined as an unknown model's)."""
        if spec is None:
            self.specs.pop(name, None)
            self._contracts.pop(name, None)
            return
        self.specs[name] = spec
        self._contracts[name] = spec.contract()
        self.default_horizon = max(self.default_horizon, spec.horizon_seconds)

    # -- inputs ------------------------------------------------------------------------------

    def on_prediction(self, event: PredictionEvent, partition: int) -> JoinOutput:
        self.counts["predictions"] += 1
        encoded = _kept(encode(event))
        contract = self._contracts.get(event.model)
        spec = self.specs.get(event.model)
        horizon = spec.horizon_seconds if spec else self.default_horizon
        problem = _too_large(encoded, "prediction") or (contract.feature_problem(event.features) if contract else None)
        if problem is not None:  # checked before its time moves the clock: the join does not take it
            return self._reject_prediction(event, partition, problem, horizon)
        at = _ts(event.timestamp)
        out = self._advance(partition, at, (PREDICTION_CLOCK,))
        key = event.decision_id
        entry = self.state.get(key)
        deadline = at + horizon
        if entry is None:
            self._put(
                key,
                {"pt": partition, "st": PENDING, "p": encoded, "o": None, "dl": deadline, "h": horizon},
            )
            self._remember(key, event)
            self._schedule(partition, EXPIRE, deadline, key)
        elif entry["st"] == PENDING and entry["p"] is None:
            outcome = self._waiting_outcome(key, entry)
            if contract is not None and (problem := contract.label_problem(outcome.label, outcome.reward)):
                # The outcome that came first breaks the contract: refused; the prediction waits for a good one.
                self.counts["rejected_outcomes"] += 1
                out.rejections.append(Rejection(outcome, problem, entry.get("off"), entry.get("ro", False)))
                out.examples.append(self._rejected(event, outcome, problem))
                self._put(
                    key,
                    {
                        "pt": partition,
                        "st": PENDING,
                        "p": encoded,
                        "o": None,
                        "dl": deadline,
                        "h": horizon,
                    },
                )
                self._remember(key, event)
                self._schedule(partition, EXPIRE, deadline, key)
                return out
            entry = {**entry, "p": encoded, "dl": deadline, "h": horizon}
            if _ts(outcome.timestamp) > deadline:
                # It came first, but too long after the decision: the same rule as any late outcome.
                out.examples.append(self._expire(key, entry))
                out.examples.append(self._late(key, self.state[key], event, outcome))
            else:
                out.examples.append(self._joined(event, outcome))
                self._finish(key, entry, partition)
        elif entry["st"] == PENDING and self._policy(event.model) == "last":
            self.counts["duplicate_predictions"] += 1
            self._put(key, {**entry, "p": encoded, "dl": deadline, "h": horizon})
            self._remember(key, event)
            self._schedule(partition, EXPIRE, deadline, key)
        else:
            self.counts["duplicate_predictions"] += 1
        return out

    def _reject_prediction(self, event: PredictionEvent, partition: int, problem: str, horizon: float) -> JoinOutput:
        """Refuse a prediction (its outcome, come first, with it); a decision it would open ends ``rejected``."""
        self.counts["rejected_predictions"] += 1
        out = JoinOutput(rejections=[Rejection(event, problem, None)])
        key = event.decision_id
        entry = self.state.get(key)
        if entry is None or (entry["st"] == PENDING and entry["p"] is None):
            out.examples.append(self._rejected(event, None, problem))
            if entry is not None:  # its outcome came first: refused with it
                outcome = self._waiting_outcome(key, entry)
                out.rejections.append(
                    Rejection(
                        outcome, f"its prediction was rejected: {problem}", entry.get("off"), entry.get("ro", False)
                    )
                )
            if partition not in self._queues:
                self._rebuild(partition)
            gc = _ts(event.timestamp) + horizon * (1 + self.late_retention)
            self._put(key, {"pt": partition, "st": REJECTED, "dl": None, "gc": gc, "r": problem[:500]})
            self._schedule(partition, GC, gc, key)
        return out

    def on_outcome(
        self, event: OutcomeEvent, partition: int, offset: int | None = None, sent_on: bool = False
    ) -> JoinOutput:
        """Join an outcome read at ``offset`` of ``partition`` (``sent_on``: of the repartition topic)."""
        self.counts["outcomes"] += 1
        encoded = _kept(encode(event))
        if (problem := _too_large(encoded, "outcome")) is not None:
            self.counts["rejected_outcomes"] += 1
            return JoinOutput(rejections=[Rejection(event, problem, None)])
        at = _ts(event.timestamp)
        out = self._advance(partition, at, (OUTCOME_CLOCK,))
        key = event.decision_id
        entry = self.state.get(key)
        if entry is None:
            deadline = at + self.default_horizon
            waiting: JoinEntry = {
                "pt": partition,
                "st": PENDING,
                "p": None,
                "o": encoded,
                "dl": deadline,
                "h": self.default_horizon,
                "off": offset,
            }
            if sent_on:
                waiting["ro"] = True
            self._put(key, waiting)
            _keep(self._parsed_outcomes, key, (encoded, event))
            self._schedule(partition, ORPHAN, deadline, key)
            return out
        if entry["st"] == REJECTED:
            self.counts["rejected_outcomes"] += 1
            out.rejections.append(Rejection(event, f"its prediction was rejected: {entry.get('r', '')}", None))
            return out
        if entry["st"] == PENDING and entry["p"] is not None:
            prediction = self._prediction(key, entry)
            if at > _time(entry["dl"]):
                # The outcome is past the horizon even if the clock has not caught up yet.
                out.examples.append(self._expire(key, entry))
                entry = self.state[key]
            else:
                contract = self._contracts.get(prediction.model)
                if contract is not None and (problem := contract.label_problem(event.label, event.reward)):
                    self.counts["rejected_outcomes"] += 1
                    out.rejections.append(Rejection(event, problem, None))
                    out.examples.append(self._rejected(prediction, event, problem))
                    self._remember(key, prediction)  # it waits on for a good outcome
                    return out
                out.examples.append(self._joined(prediction, event))
                self._finish(key, entry, partition)
                return out
        if entry["st"] == EXPIRED:
            out.examples.append(self._late(key, entry, self._prediction(key, entry), event))
        elif entry["st"] == PENDING and entry["p"] is None and self.outcome_duplicates == "last":
            self.counts["duplicate_outcomes"] += 1
            self._put(key, {**entry, "o": encoded})
            _keep(self._parsed_outcomes, key, (encoded, event))
        else:
            self.counts["duplicate_outcomes"] += 1
        return out

    def forget(self, partition: int) -> None:
        """Drop the in-memory clocks and deadline index of a partition this worker no longer owns."""
        self._clocks.pop(partition, None)
        self._queues.pop(partition, None)
        self._parsed.clear()  # the partition may come back changed by another worker
        self._parsed_outcomes.clear()

    def latest(self, partition: int) -> float | None:
        """The latest time a clock of ``partition`` has reached (None: none has moved yet)."""
        clocks = self._clocks.get(partition)
        return max(clocks) if clocks is not None and max(clocks) > float("-inf") else None

    def tick(self, partition: int, now: float, clocks: tuple[int, ...] = BOTH_CLOCKS) -> JoinOutput:
        """Advance clocks of ``partition`` without an event, so an idle partition still expires.

        The caller passes only the clocks of inputs it has fully read: a tick must not
        overtake older records still waiting in a topic (a backlog after a restart).
        """
        return self._advance(partition, now, clocks)

    # -- time --------------------------------------------------------------------------------

    def _advance(self, partition: int, timestamp: float, which: tuple[int, ...]) -> JoinOutput:
        out = JoinOutput()
        if partition not in self._queues:
            self._rebuild(partition)
        clocks = self._clocks.get(partition)
        if clocks is None:
            clocks = self._clocks[partition] = [float("-inf"), float("-inf")]
        for index in which:
            clocks[index] = max(clocks[index], timestamp - self.lateness)
        queues = self._queues[partition]
        # Predictions expire on the outcomes clock; waiting outcomes on the predictions clock.
        for queue, clock in ((EXPIRE, clocks[OUTCOME_CLOCK]), (ORPHAN, clocks[PREDICTION_CLOCK]), (GC, min(clocks))):
            heap = queues[queue]
            while heap and heap[0][0] <= clock:
                when, key = heapq.heappop(heap)
                entry = self.state.get(key)
                if entry is None or entry.get("dl" if queue != GC else "gc") != when:
                    continue  # superseded
                if queue == EXPIRE and entry["st"] == PENDING and entry["p"] is not None:
                    out.examples.append(self._expire(key, entry))
                elif queue == ORPHAN and entry["st"] == PENDING and entry["p"] is None:
                    self.counts["orphan_outcomes"] += 1
                    outcome = self._waiting_outcome(key, entry)
                    reason = f"no prediction for decision_id {key!r} within {self.default_horizon:.0f}s"
                    out.rejections.append(Rejection(outcome, reason, entry.get("off"), entry.get("ro", False)))
                    del self.state[key]
                elif queue == GC and entry["st"] != PENDING:
                    del self.state[key]  # retention of a finished decision is over
        return out

    def _rebuild(self, partition: int) -> None:
        # After a restart the table is restored from its changelog; rebuild the deadline index from it.
        queues: dict[str, list[tuple[float, str]]] = {EXPIRE: [], ORPHAN: [], GC: []}
        for key, entry in self.state.items():
            if entry.get("pt") != partition:
                continue
            if entry["st"] != PENDING:
                queues[GC].append((entry["gc"], key))
            else:
                queues[EXPIRE if entry["p"] is not None else ORPHAN].append((_time(entry["dl"]), key))
        for heap in queues.values():
            heapq.heapify(heap)
        self._queues[partition] = queues

    def _remember(self, key: str, event: PredictionEvent) -> None:
        _keep(self._parsed, key, event)

    def _prediction(self, key: str, entry: JoinEntry) -> PredictionEvent:
        """The pending prediction of ``key``: parsed already if recent, else from its stored JSON."""
        event = self._parsed.pop(key, None)
        return event if event is not None else PredictionEvent.model_validate_json(_json(entry["p"]))

    def _waiting_outcome(self, key: str, entry: JoinEntry) -> OutcomeEvent:
        """The outcome that waits in ``key``'s entry for its prediction: parsed already if recent, else from its
        stored JSON."""
        parsed = self._parsed_outcomes.pop(key, None)
        if parsed is not None and parsed[0] is entry["o"]:
            return parsed[1]
        return OutcomeEvent.model_validate_json(_json(entry["o"]))

    def _schedule(self, partition: int, queue: str, when: float, key: str) -> None:
        heapq.heappush(self._queues[partition][queue], (when, key))

    # -- endings -----------------------------------------------------------------------------

    def _joined(self, prediction: PredictionEvent, outcome: OutcomeEvent) -> TrainingExample:
        self.counts["joined"] += 1
        return self._example(prediction, outcome, "joined", max(prediction.timestamp, outcome.timestamp))

    def _late(self, key: str, entry: JoinEntry, prediction: PredictionEvent, outcome: OutcomeEvent) -> TrainingExample:
        self.counts["late"] += 1
        self.counts["expired"] -= 1  # it did get an answer, only too late
        self._put(key, {**entry, "st": LATE})
        return self._example(prediction, outcome, "late", outcome.timestamp)

    def _finish(self, key: str, entry: JoinEntry, partition: int) -> None:
        # Keep a small marker as long as expired entries, so duplicates are recognised, not orphaned.
        gc = _time(entry["dl"]) + entry["h"] * self.late_retention
        self._put(key, {"pt": partition, "st": DONE, "dl": None, "gc": gc})
        self._schedule(partition, GC, gc, key)

    def _expire(self, key: str, entry: JoinEntry) -> TrainingExample:
        prediction = self._prediction(key, entry)
        spec = self.specs.get(prediction.model)
        gc = _time(entry["dl"]) + entry["h"] * self.late_retention
        self._put(key, {"pt": entry["pt"], "st": EXPIRED, "p": entry["p"], "dl": None, "gc": gc})
        self._schedule(entry["pt"], GC, gc, key)
        self.counts["expired"] += 1
        when = _at(_time(entry["dl"]))
        if (
            spec is not None
            and spec.on_missing == "default"
            and (spec.default_label is not None or spec.default_reward is not None)
        ):
            self.counts["defaulted"] += 1
            return TrainingExample(
                model=prediction.model,
                decision_id=key,
                model_version=prediction.model_version,
                features=prediction.features,
                prediction=prediction.prediction,
                label=spec.default_label,
                reward=spec.default_reward,
                status="defaulted",
                fallback=prediction.fallback,
                predicted_at=prediction.timestamp,
                timestamp=when,
            )
        return self._example(prediction, None, "expired", when)

    def _rejected(self, prediction: PredictionEvent, outcome: OutcomeEvent | None, reason: str) -> TrainingExample:
        """The record of a decision whose prediction, or an outcome, broke the model's contract."""
        self.counts["rejected"] += 1
        example = self._example(prediction, outcome, "rejected", (outcome or prediction).timestamp)
        return example.model_copy(update={"reason": reason})

    @staticmethod
    def _example(
        prediction: PredictionEvent, outcome: OutcomeEvent | None, status: JoinStatus, when: datetime
    ) -> TrainingExample:
        # Every field comes from the validated prediction and outcome: not validated a third time.
        return TrainingExample.from_valid(
            {
                "schema_version": SCHEMA_VERSION,
                "timestamp": when,
                "model": prediction.model,
                "decision_id": prediction.decision_id,
                "model_version": prediction.model_version,
                "features": prediction.features,
                "prediction": prediction.prediction,
                "label": outcome.label if outcome else None,
                "reward": outcome.reward if outcome else None,
                "status": status,
                "predicted_at": prediction.timestamp,
                "outcome_at": outcome.timestamp if outcome else None,
                "fallback": prediction.fallback,
                "reason": None,
            }
        )

    def _policy(self, model: str) -> str:
        spec = self.specs.get(model)
        return spec.duplicates if spec is not None else "first"

    def _put(self, key: str, entry: JoinEntry) -> None:
        self.state[key] = entry
