"""The delayed-feedback join: predictions meet their outcomes by decision_id, within a wait horizon.

The rules run in the compiled core (``adaptloop._core``, ``core/src/join``), over a
:class:`JoinState` whose changes the worker writes to a changelog topic; this module is their Python
face, tested without Kafka, and the join agent calls the core once per polled batch
(:meth:`DelayedJoin.process_raw`). Time is event time, with one clock per input: predictions and
outcomes are separate topics that a consumer reads at different paces, so a pending prediction
expires only when the *outcomes* clock of its partition passes its deadline, an outcome waiting for
its prediction only when the *predictions* clock does, and finished entries are forgotten when both
have passed. Clock ticks (wall clock) advance the clock of an input that has been read to its end,
so idle partitions still expire while a backlog does not.

Every prediction ends exactly once as ``joined``, ``defaulted`` or ``expired``; an
outcome that comes after its prediction expired adds a ``late`` record (not
learned). Outcomes whose prediction never comes are returned as rejections for
the dead-letter topic, and so is what breaks a registered model's contract: a
prediction with features the model refuses (its outcome is refused with it), an
outcome whose label the model cannot learn (its prediction waits on for a good one).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypedDict

import msgspec
import orjson

from adaptloop._core import JOIN_MAX_JOINABLE_BYTES, JoinCore, JoinTable
from adaptloop.learners.spec import LearnerSpec
from adaptloop.schemas.codec import compiled_contract, encode
from adaptloop.schemas.contract import ModelContract
from adaptloop.schemas.inference import OutcomeEvent, PredictionEvent, TrainingExample
from adaptloop.schemas.topics import OUTCOMES, PREDICTIONS

EntryStatus = Literal["pending", "done", "expired", "late", "rejected"]
PENDING: EntryStatus = "pending"
DONE: EntryStatus = "done"
EXPIRED: EntryStatus = "expired"
LATE: EntryStatus = "late"
REJECTED: EntryStatus = "rejected"
PREDICTION_CLOCK, OUTCOME_CLOCK = 0, 1
BOTH_CLOCKS = (PREDICTION_CLOCK, OUTCOME_CLOCK)


class JoinEntry(TypedDict, total=False):
    """One decision in the join's state, as its changelog stores it (JSON with these short keys: the
    state holds an entry per decision pending or recently finished, so the keys are most of its
    size).

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
    """A prediction or outcome the join will not use, why, and where it was read (None: the record
    being processed; ``sent_on``: an outcome read from the repartition topic), for its dead
    letter."""

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
    """An entry as the changelog keeps it: MessagePack, with the events' JSON as raw bytes (as a
    JSON string it would be escaped, and a prediction near the record limit would no longer fit).

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


class JoinState(MutableMapping[str, JoinEntry]):
    """The join's entries by decision_id, noting per partition which keys changed, for the
    changelog.

    The entries live in the compiled core; reading one gives a copy (change it by setting it again).

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
        self.table = JoinTable()

    def __getitem__(self, key: str) -> JoinEntry:
        entry = self.table.get(key)
        if entry is None:
            raise KeyError(key)
        return entry  # type: ignore[return-value]

    def get(self, key: str, default: Any = None) -> Any:
        entry = self.table.get(key)
        return default if entry is None else entry

    def __setitem__(self, key: str, entry: JoinEntry) -> None:
        self.table.set(key, entry)

    def __delitem__(self, key: str) -> None:
        if not self.table.delete(key):
            raise KeyError(key)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key in self.table

    def __iter__(self) -> Iterator[str]:
        return iter(self.table.keys())

    def __len__(self) -> int:
        return len(self.table)

    def __repr__(self) -> str:
        return f"JoinState({dict(self.items())!r})"

    def partition_of(self, key: str) -> int | None:
        """The partition of ``key``'s entry (None: it has none), without copying the entry."""
        return self.table.partition_of(key)

    def take_changes(self, partition: int) -> dict[str, JoinEntry | None]:
        """The current entry (``None``: deleted) of every key of ``partition`` changed since the
        last call."""
        return self.table.take_changes(partition)

    def take_change_records(self, partition: int) -> list[tuple[bytes, bytes | None]]:
        """:meth:`take_changes` as the changelog's records: each key's bytes and :func:`entry_bytes`
        (or None)."""
        return self.table.take_change_records(partition)

    def restore(self, key: str, entry: JoinEntry | None) -> None:
        """Apply one changelog record without noting it as a change."""
        self.table.restore(key, entry)

    def drop_partition(self, partition: int) -> None:
        """Forget a partition's entries and changes (it moved to another worker)."""
        self.table.drop_partition(partition)


MAX_JOINABLE_BYTES: int = JOIN_MAX_JOINABLE_BYTES
"""The largest prediction or outcome the join keeps (as JSON): its state entry, and the training
example made of it, must each fit in one Kafka record (a producer's message.max.bytes, 1,000,000 by
default) with room for their own fields. A 998 KB prediction read as JSON can come out larger
(``1e5`` is written ``100000.0``)."""


_EXAMPLE = TrainingExample.__pydantic_validator__.validate_json
_OUTCOME = OutcomeEvent.__pydantic_validator__.validate_json

Examples = list[tuple[str, str, bytes]]
"""Training examples as the core writes them: (model, status, JSON) each, the JSON byte for byte
what ``encode`` writes for the same example."""
RawRejections = list[tuple[str | None, bytes | None, str | tuple[str, float], int | None, bool]]
"""Rejections as the core returns them: (the refused outcome's decision_id and JSON, both None for
the event being processed; the reason, or ``(decision_id, horizon)`` for an outcome no prediction
came for; offset; sent_on) each."""
RawOutput = tuple[Examples, RawRejections]
RawBatch = tuple[
    int,
    list[tuple[int, bytes, bytes]],
    list[tuple[str, str, int]],
    list[tuple[Any, ...]],
    list[tuple[str, int, int, int]],
]
"""What :meth:`DelayedJoin.process_raw` gives: ``(stop, examples, joined, rare, read)``. ``stop``:
the first message it left to the caller; ``examples``: ``(input partition, model key, JSON)`` each,
in order; ``joined``: ``(model, status, count)`` of those examples; ``read``: ``(topic, partition,
next offset, records)`` of each input partition read; ``rare``: in the records' order, the records
the caller finishes, each ``(what, message index, ...)``: :data:`RAW_CONTRACT` ``(kind, path,
message)``: its contract refused it (``codec.classify_compiled`` words it); :data:`RAW_TIME`: its
time is too far ahead (the agent's ``_time_problem`` words it); :data:`RAW_SENT_ON` ``(home
partition, key)``: read on another partition than its decision's; :data:`RAW_FAILED`
``(exception)``: it raised (its decision's entry left as it was); :data:`RAW_REJECTION`
``(decision_id, outcome JSON, reason, offset, sent_on)``: a rejection as in :data:`RawRejections`.
"""
RAW_CONTRACT, RAW_TIME, RAW_SENT_ON, RAW_FAILED, RAW_REJECTION = range(5)


class DelayedJoin:
    """Join predictions and outcomes arriving in any order.

    >>> from datetime import UTC, datetime, timedelta
    >>> t0 = datetime(2026, 1, 1, tzinfo=UTC)
    >>> join = DelayedJoin(JoinState(), {"churn": LearnerSpec(name="churn", horizon_seconds=60)})
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
        state: Mapping[str, JoinEntry],
        specs: Mapping[str, LearnerSpec],
        *,
        default_horizon: float = 3600.0,
        late_retention: float = 3.0,
        lateness: float = 0.0,
        outcome_duplicates: str = "first",
    ) -> None:
        """``state``: the :class:`JoinState` the join works on; any other mapping of entries (a
        table restored by hand) is copied into a new one, :attr:`state`."""
        if not isinstance(state, JoinState):
            copied = JoinState()
            for key, entry in state.items():
                copied.restore(key, entry)
            state = copied
        self.state: JoinState = state
        self.specs = dict(specs)
        self.default_horizon = max([default_horizon, *(s.horizon_seconds for s in specs.values())])
        # keep expired entries this many horizons to recognise late outcomes
        self.late_retention = late_retention
        self.lateness = lateness  # how far behind the newest timestamp the watermark trails
        # for outcomes still waiting for their prediction
        self.outcome_duplicates = outcome_duplicates
        self._contracts = {name: spec.contract() for name, spec in specs.items()}
        self.core = JoinCore(
            [
                (name, spec.horizon_seconds, spec.duplicates == "last", *_defaults(spec))
                for name, spec in specs.items()
            ],
            self.default_horizon,
            late_retention,
            lateness,
            outcome_duplicates == "last",
            self._label_problem,
        )
        self.core.use_contracts(
            compiled_contract(PREDICTIONS), compiled_contract(OUTCOMES), self._feature_problem
        )
        for name, contract in self._contracts.items():
            self.core.set_feature_rules(name, _feature_rules(contract))

    @property
    def counts(self) -> Counter[str]:
        """Predictions, outcomes and how decisions ended, counted since the join started."""
        return Counter(self.core.counts())

    def _label_problem(self, model: str, label: bytes, reward: bytes) -> str | None:
        """Why ``model``'s contract refuses an outcome's label (its JSON, and its reward's), if it
        does. The core keeps the answers: a contract's answer depends on the label and on whether
        there is a reward."""
        return self._contracts[model].label_problem(orjson.loads(label), orjson.loads(reward))

    def _feature_problem(self, model: str, prediction: bytes) -> str | None:
        """What ``model``'s contract says of a prediction's features (its JSON); the core asks only
        about features it may refuse (:func:`_feature_rules`)."""
        contract = self._contracts.get(model)
        if contract is None:
            return None
        return contract.feature_problem(orjson.loads(prediction)["features"])

    def use_spec(self, name: str, spec: LearnerSpec | None) -> None:
        """Join ``name``'s predictions under ``spec`` from now on (its contract, horizon, duplicates
        and default label); None: the model was retired (its predictions are joined as an unknown
        model's)."""
        if spec is None:
            self.specs.pop(name, None)
            self._contracts.pop(name, None)
            self.core.set_spec(name, None, self.default_horizon)
            self.core.set_feature_rules(name, None)
            return
        self.specs[name] = spec
        self._contracts[name] = spec.contract()
        self.core.set_feature_rules(name, _feature_rules(self._contracts[name]))
        self.default_horizon = max(self.default_horizon, spec.horizon_seconds)
        self.core.set_spec(
            name,
            (spec.horizon_seconds, spec.duplicates == "last", *_defaults(spec)),
            self.default_horizon,
        )

    # -- inputs ------------------------------------------------------------------------------

    def on_prediction(self, event: PredictionEvent, partition: int) -> JoinOutput:
        encoded = encode(event)
        raw = self.core.on_prediction(
            self.state.table,
            event.decision_id,
            event.model,
            encoded,
            self.feature_problem(event, encoded),
            partition,
        )
        return self._output(raw, event)

    def feature_problem(self, event: PredictionEvent, encoded: bytes) -> str | None:
        """Why the prediction's model refuses its features, if it does (not asked of a prediction
        too large to keep, which the core refuses for that)."""
        contract = self._contracts.get(event.model)
        if contract is None or len(encoded) > MAX_JOINABLE_BYTES:
            return None
        return contract.feature_problem(event.features)

    def on_outcome(
        self, event: OutcomeEvent, partition: int, offset: int | None = None, sent_on: bool = False
    ) -> JoinOutput:
        """Join an outcome read at ``offset`` of ``partition`` (``sent_on``: of the repartition
        topic)."""
        raw = self.core.on_outcome(
            self.state.table, event.decision_id, encode(event), partition, offset, sent_on
        )
        return self._output(raw, event)

    def forget(self, partition: int) -> None:
        """Drop the in-memory clocks and deadline index of a partition this worker no longer
        owns."""
        self.core.forget(partition)

    def latest(self, partition: int) -> float | None:
        """The latest time a clock of ``partition`` has reached (None: none has moved yet)."""
        return self.core.latest(partition)

    def tick(self, partition: int, now: float, clocks: tuple[int, ...] = BOTH_CLOCKS) -> JoinOutput:
        """Advance clocks of ``partition`` without an event, so an idle partition still expires.

        The caller passes only the clocks of inputs it has fully read: a tick must not
        overtake older records still waiting in a topic (a backlog after a restart).
        """
        return self._output(self.core.tick(self.state.table, partition, now, list(clocks)), None)

    def process_raw(
        self,
        messages: Sequence[Any],
        start: int,
        topics: tuple[str, str, str, str],
        partitions: int,
        now: float,
        max_future: float,
        max_bytes: int,
    ) -> RawBatch:
        """Join a polled batch as it came from the consumer, in one call of the core: the records
        of ``messages`` (confluent-kafka ``Message`` s) from ``start`` up to the first that is not
        a prediction or an outcome of ``topics`` (predictions, outcomes and their repartition
        topics, by full name) on inputs of ``partitions`` partitions.

        The core decodes and validates each record with its contract (at most ``max_bytes``),
        refuses one whose time is more than ``max_future`` seconds after ``now`` (so that it cannot
        move the clocks), asks the model's contract about features it may refuse, and joins: no
        Python object is made per record, only per training example and per record refused,
        misplaced or failed (see :data:`RawBatch`)."""
        return self.core.process_raw(
            self.state.table, messages, start, topics, partitions, now, max_future, max_bytes
        )

    def tick_raw(self, partition: int, now: float, clocks: tuple[int, ...]) -> RawOutput:
        """:meth:`tick`, its output as the core returns it."""
        return self.core.tick(self.state.table, partition, now, list(clocks))

    # -- outputs -----------------------------------------------------------------------------

    def reason(self, reason: str | tuple[str, float]) -> str:
        """A rejection's reason in words."""
        if isinstance(reason, str):
            return reason
        key, _ = reason
        return f"no prediction for decision_id {key!r} within {self.default_horizon:.0f}s"

    def _output(
        self, raw: tuple[Examples, RawRejections], event: PredictionEvent | OutcomeEvent | None
    ) -> JoinOutput:
        examples, rejections = raw
        out = JoinOutput(examples=[_EXAMPLE(json) for _, _, json in examples])
        for _, refused, reason, offset, sent_on in rejections:
            refused_event = event if refused is None else _OUTCOME(refused)
            assert refused_event is not None  # a tick refuses only outcomes kept in the state
            out.rejections.append(Rejection(refused_event, self.reason(reason), offset, sent_on))
        return out


def _feature_rules(contract: ModelContract) -> tuple[bool, dict[str, str] | None]:
    """What the core checks of a prediction's features to find those the contract may refuse."""
    return contract.numbers_only, None if contract.features is None else dict(contract.features)


def _defaults(spec: LearnerSpec) -> tuple[bytes | None, bytes | None]:
    """The JSON of the label and reward a model learns when no outcome comes (None, None: it learns
    none)."""
    if spec.on_missing != "default" or (spec.default_label is None and spec.default_reward is None):
        return None, None
    return orjson.dumps(spec.default_label), orjson.dumps(spec.default_reward)
