"""The product's join against the reference model of its rules (tests/join_reference.py).

Generated runs of what the join agent does around the join: records read on their decision's
partition or on another one (sent on through the repartition topic, then read there), clock ticks
naming one, both or neither clock, commits of the changelog, crashes (the state restored from the
changelog, the records since the last commit read again), partitions given away and taken back.
Two models with generated contracts (features refused, labels a model cannot learn), one without a
spec, each duplicate policy, default outcomes, short horizons and retentions, timestamps in any
order. Both joins must give the same training examples byte for byte, the same rejections with the
same reasons and provenance, the same clocks and the same state (in the changelog's entry format)
after every step; the product's changelog must hold its whole state at every commit.

Every contact with the product's join is in :class:`ProductJoin`: a new entry point is an edit
there. Predictions and outcomes go in as the join agent hands them to the core, as a record's
bytes (``DelayedJoin.process_raw``): the core decodes and validates them, checks their time and the
models' contracts, and joins.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adaptloop.learners.join import (
    MAX_JOINABLE_BYTES,
    RAW_REJECTION,
    DelayedJoin,
    JoinState,
    entry_bytes,
    entry_from,
)
from adaptloop.learners.spec import LearnerSpec
from adaptloop.schemas import OutcomeEvent, PredictionEvent, TrainingExample, encode
from adaptloop.schemas.base import Event
from adaptloop.schemas.codec import MAX_RECORD_BYTES
from adaptloop.schemas.topics import partition_for
from tests.join_reference import Decision, ReferenceJoin

PARTITIONS = 2
RAW_TOPICS = ("predictions", "outcomes", "predictions-repartition", "outcomes-repartition")
"""The join's inputs, in the order ``process_raw`` takes them."""
T0 = datetime(2026, 1, 1, tzinfo=UTC).timestamp()
IDS = ("d0", "d1", "d2", "d3", "d4")
MODELS = ("a", "b", "unregistered")

Output = tuple[list[bytes], list[tuple[str, bytes, str, int | None, bool]]]
"""What one step gave: the training examples as written to Kafka; the rejections: the event, why,
and where it was read."""


def _output(examples: list[TrainingExample], refused: list[Any]) -> Output:
    return (
        [encode(example) for example in examples],
        [(type(r.event).__name__, encode(r.event), r.reason, r.offset, r.sent_on) for r in refused],
    )


class _Message:
    """A fetched record as confluent-kafka's ``Message`` shows it to the core's raw path."""

    def __init__(self, topic: str, partition: int, offset: int, value: bytes) -> None:
        self._topic, self._partition, self._offset, self._value = topic, partition, offset, value

    def error(self) -> None:
        return None

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def value(self) -> bytes:
        return self._value


class JoinUnderTest(Protocol):
    def prediction(self, event: PredictionEvent, partition: int) -> Output: ...
    def outcome(
        self,
        event: OutcomeEvent,
        partition: int,
        offset: int,
        sent_on: bool,
    ) -> Output: ...
    def tick(self, partition: int, now: float, clocks: tuple[int, ...]) -> Output: ...
    def latest(self, partition: int) -> float | None: ...
    def entries(self) -> dict[str, Any]: ...
    def commit(self) -> None: ...
    def crash(self) -> None: ...
    def move(self, partition: int) -> None: ...


class ProductJoin:
    """The product's join, as the join agent drives it: the one place this test touches it."""

    def __init__(self, specs: dict[str, LearnerSpec], params: dict[str, Any]) -> None:
        self.specs, self.params = specs, params
        self.changelog: dict[int, dict[str, bytes]] = {p: {} for p in range(PARTITIONS)}
        self.state = JoinState()
        self.join = DelayedJoin(self.state, specs, **params)

    def prediction(self, event: PredictionEvent, partition: int) -> Output:
        return self._raw(event, partition, 0, sent_on=False)

    def outcome(self, event: OutcomeEvent, partition: int, offset: int, sent_on: bool) -> Output:
        return self._raw(event, partition, offset, sent_on)

    def _raw(self, event: Event, partition: int, offset: int, sent_on: bool) -> Output:
        """The event's bytes read at ``offset`` of ``partition``, through the core's raw path (the
        join agent's): decoded and validated by the core, time-checked, joined."""
        kind = (isinstance(event, OutcomeEvent)) + 2 * sent_on
        message = _Message(RAW_TOPICS[kind], partition, offset, encode(event))
        stop, examples, counts, rare, read = self.join.process_raw(
            [message], 0, RAW_TOPICS, PARTITIONS, time.time(), 300.0, MAX_RECORD_BYTES
        )
        assert (stop, read) == (1, [(RAW_TOPICS[kind], partition, offset + 1, 1)])
        assert sum(count for _, _, count in counts) == len(examples)
        assert all(index == partition for index, _, _ in examples)
        rejections = []
        for item in rare:
            assert item[0] == RAW_REJECTION, item  # at home, valid, in time: nothing else
            _, _, _, refused, reason, refused_offset, refused_sent_on = item
            rejections.append(
                (
                    "OutcomeEvent" if refused is not None else type(event).__name__,
                    refused if refused is not None else encode(event),
                    self.join.reason(reason),
                    refused_offset,
                    refused_sent_on,
                )
            )
        return [example for _, _, example in examples], rejections

    def tick(self, partition: int, now: float, clocks: tuple[int, ...]) -> Output:
        out = self.join.tick(partition, now, clocks)
        return _output(out.examples, out.rejections)

    def latest(self, partition: int) -> float | None:
        return self.join.latest(partition)

    def entries(self) -> dict[str, Any]:
        return dict(self.state)

    def commit(self) -> None:
        """Write each partition's changes to its changelog partition (as bytes, like the agent)."""
        for partition, log in self.changelog.items():
            for key, entry in self.state.take_changes(partition).items():
                if entry is None:
                    log.pop(key, None)
                else:
                    assert entry["pt"] == partition, (key, entry)
                    log[key] = entry_bytes(entry)
        logs = self.changelog.values()
        written = {key: entry_from(data) for log in logs for key, data in log.items()}
        assert written == dict(self.state), "the changelog does not hold the join's state"

    def crash(self) -> None:
        """A new process: a fresh state restored from the changelog, a fresh join."""
        self.state = JoinState()
        for log in self.changelog.values():
            for key, data in log.items():
                self.state.restore(key, entry_from(data))
        self.join = DelayedJoin(self.state, self.specs, **self.params)

    def move(self, partition: int) -> None:
        """The partition is revoked (after its last commit) and assigned back, restored."""
        self.state.drop_partition(partition)
        self.join.forget(partition)
        for key, data in self.changelog[partition].items():
            self.state.restore(key, entry_from(data))


class Reference:
    """The reference model behind the same interface."""

    def __init__(self, specs: dict[str, LearnerSpec], params: dict[str, Any]) -> None:
        self.join = ReferenceJoin(specs, **params)
        self.committed: dict[str, Decision] = {}

    def _step(self) -> Output:
        examples, refusals = self.join.take_outputs()
        return _output(examples, refusals)

    def prediction(self, event: PredictionEvent, partition: int) -> Output:
        self.join.prediction(event, partition)
        return self._step()

    def outcome(self, event: OutcomeEvent, partition: int, offset: int, sent_on: bool) -> Output:
        self.join.outcome(event, partition, offset, sent_on)
        return self._step()

    def tick(self, partition: int, now: float, clocks: tuple[int, ...]) -> Output:
        self.join.tick(partition, now, clocks)
        return self._step()

    def latest(self, partition: int) -> float | None:
        return self.join.latest(partition)

    def entries(self) -> dict[str, Any]:
        return self.join.entries()

    def commit(self) -> None:
        self.committed = self.join.snapshot()

    def crash(self) -> None:
        self.join.restart(self.committed)

    def move(self, partition: int) -> None:
        self.join.take_over(partition, self.committed)


# -- a run: what the join agent does around the join ------------------------------------------


@dataclass(frozen=True)
class Read:
    """A prediction or outcome read on its decision's partition, or (``elsewhere``) on another."""

    event: PredictionEvent | OutcomeEvent
    elsewhere: bool

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:  # how Hypothesis prints a run
        printer.text(repr(self))

    def __repr__(self) -> str:  # short: a failing run's steps are printed, some events are 1 MB
        fields = {k: v for k, v in self.event.__dict__.items() if v is not None}
        del fields["schema_version"]
        fields["timestamp"] = self.event.timestamp.timestamp() - T0
        shown = ", ".join(f"{k}={_short(v)}" for k, v in fields.items())
        return f"Read({type(self.event).__name__}({shown}), elsewhere={self.elsewhere})"


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:40]}...({len(text):,} chars)"


@dataclass(frozen=True)
class ReadSentOn:
    """The next record of a partition's repartition topics (what other partitions sent on to it)."""

    partition: int


@dataclass(frozen=True)
class Tick:
    partition: int
    now: float
    clocks: tuple[int, ...]


@dataclass(frozen=True)
class Commit:
    pass


@dataclass(frozen=True)
class Crash:
    pass


@dataclass(frozen=True)
class Move:
    partition: int


Op = Read | ReadSentOn | Tick | Commit | Crash | Move


def home(decision_id: str) -> int:
    """The decision's partition by its key, as the agent (and the core's raw path) hash it."""
    return partition_for(decision_id.encode(), PARTITIONS)


class Loop:
    """Runs ops through one join, as the join agent would, and keeps a trace of every step."""

    def __init__(self, join: JoinUnderTest) -> None:
        self.join = join
        self.trace: list[tuple[str, Output, dict[str, Any], list[float | None]]] = []
        self.committed: list[Output] = []  # what committed transactions wrote
        self._pending: list[Output] = []
        self._since_commit: list[Op] = []
        self._io, self._io_committed = self._fresh_io(), self._fresh_io()  # the topics' positions

    @staticmethod
    def _fresh_io() -> dict[str, Any]:
        return {
            "offsets": [0] * PARTITIONS,  # next offset of each outcomes partition
            "sent_offsets": [0] * PARTITIONS,  # ... of each outcomes-repartition partition
            "sent": [[] for _ in range(PARTITIONS)],  # records sent on, not read yet, per partition
        }

    def run(self, ops: list[Op]) -> None:
        for op in ops:
            self._apply(op, replaying=False)
        self._apply(Commit(), replaying=False)

    def _apply(self, op: Op, replaying: bool) -> None:
        out: Output = ([], [])
        io = self._io
        if isinstance(op, Read):
            event = op.event
            read_on = (home(event.decision_id) + op.elsewhere) % PARTITIONS
            offset = None
            if isinstance(event, OutcomeEvent):
                offset = io["offsets"][read_on]
                io["offsets"][read_on] += 1
            entry = self.join.entries().get(event.decision_id)
            if (entry is not None and entry["pt"] == read_on) or home(event.decision_id) == read_on:
                out = self._process(event, read_on, offset, sent_on=False)
            else:  # sent on to its decision's partition, in this partition's transaction
                to = home(event.decision_id)
                sent_offset = None
                if isinstance(event, OutcomeEvent):
                    sent_offset = io["sent_offsets"][to]
                    io["sent_offsets"][to] += 1
                io["sent"][to].append((event, sent_offset))
        elif isinstance(op, ReadSentOn):
            if io["sent"][op.partition]:
                event, offset = io["sent"][op.partition].pop(0)
                out = self._process(event, op.partition, offset, sent_on=True)
        elif isinstance(op, Tick):
            out = self.join.tick(op.partition, op.now, op.clocks)
        elif isinstance(op, Commit | Move):
            self.join.commit()
            self.committed += self._pending
            self._pending, self._since_commit = [], []
            self._io_committed = copy.deepcopy(self._io)
            if isinstance(op, Move):
                self.join.move(op.partition)
        elif isinstance(op, Crash):
            self.join.crash()  # what was written since the last commit is aborted
            self._pending = []
            self._io = copy.deepcopy(self._io_committed)
            self._trace(op, out, replaying)
            for again in list(self._since_commit):  # read again from the committed offsets
                self._apply(again, replaying=True)
            return
        if not replaying and not isinstance(op, Commit | Move):
            self._since_commit.append(op)
        self._pending.append(out)
        self._trace(op, out, replaying)

    def _process(
        self,
        event: PredictionEvent | OutcomeEvent,
        partition: int,
        offset: int | None,
        sent_on: bool,
    ) -> Output:
        if isinstance(event, PredictionEvent):
            return self.join.prediction(event, partition)
        assert offset is not None
        return self.join.outcome(event, partition, offset, sent_on)

    def _trace(self, op: Op, out: Output, replaying: bool) -> None:
        label = ("again: " if replaying else "") + repr(op)
        latest = [self.join.latest(p) for p in range(PARTITIONS)]
        self.trace.append((label, out, self.join.entries(), latest))


# -- generated runs -----------------------------------------------------------------------------

# On a grid of half seconds: exact in floats, and deadlines often fall exactly on a record's time.
times = st.integers(0, 32).map(lambda half_seconds: T0 + half_seconds / 2)
horizons = st.sampled_from([1.0, 2.5, 4.0, 8.0])


@st.composite
def learner_specs(draw: st.DrawFn, name: str) -> LearnerSpec:
    task = draw(st.sampled_from(["binary", "multiclass", "regression"]))
    recipe = draw(
        st.sampled_from(
            {
                "binary": ["logistic", "hoeffding"],
                "multiclass": ["hoeffding"],
                "regression": ["linear", "hoeffding"],
            }[task]
        )
    )
    default: dict[str, Any] = draw(
        st.sampled_from(
            [
                {},
                {"default_reward": 0.5},
                {"default_label": {"binary": False, "multiclass": "c", "regression": 1.5}[task]},
            ]
        )
    )
    return LearnerSpec(
        name=name,
        task=task,
        recipe=recipe,
        horizon_seconds=draw(horizons),
        duplicates=draw(st.sampled_from(["first", "last"])),
        on_missing=draw(st.sampled_from(["drop", "default"])),
        labels_01=task == "binary" and draw(st.booleans()),
        label_type=draw(st.sampled_from([None, "str"])) if task == "multiclass" else None,
        features=draw(st.sampled_from([None, {"x": "number"}])),
        **default,
    )


predictions = st.builds(
    lambda decision, model, version, features, prediction, at, fallback: PredictionEvent(
        decision_id=decision,
        model=model,
        model_version=version,
        features=features,
        prediction=prediction,
        timestamp=datetime.fromtimestamp(at, UTC),
        fallback=fallback,
    ),
    st.sampled_from(IDS),
    st.sampled_from(MODELS),
    st.sampled_from(["v1", "v2"]),
    st.sampled_from([{"x": 1.0}, {"x": 2}, {"x": "pro"}, {"y": 0.5}, {}, {"x": None}]),
    st.sampled_from([True, "c", 1.5, None]),
    times,
    st.booleans(),
)
outcomes = st.builds(
    lambda decision, label, reward, at: OutcomeEvent(
        decision_id=decision,
        label=label if label is not None or reward is not None else True,
        reward=reward,
        source="s",
        timestamp=datetime.fromtimestamp(at, UTC),
    ),
    st.sampled_from(IDS),
    st.sampled_from([True, False, 0, 1, 3, "c", 2.5, None]),
    st.sampled_from([None, 0.25]),
    times,
)
partitions = st.integers(0, PARTITIONS - 1)
clocks = st.sampled_from([(0,), (1,), (0, 1), ()])  # a tick's: one clock, both, or none
elsewhere = st.integers(0, 3).map(lambda roll: roll == 3)  # a quarter read on the other partition


@st.composite
def at_the_size_limit(draw: st.DrawFn) -> PredictionEvent | OutcomeEvent:
    """A prediction (a long feature) or outcome (a long label) as large as the join keeps, or a byte
    larger."""
    event: PredictionEvent | OutcomeEvent = draw(st.one_of(predictions, outcomes))
    field = "features" if isinstance(event, PredictionEvent) else "label"
    empty = {"features": {"x": ""}, "label": ""}[field]
    size = len(encode(event.model_copy(update={field: empty})))
    text = "z" * (MAX_JOINABLE_BYTES - size + draw(st.integers(0, 1)))
    value = {"features": {"x": text}, "label": text}[field]
    return type(event).model_validate({**event.__dict__, field: value})


@st.composite
def answered(draw: st.DrawFn) -> list[Op]:
    """A prediction and its outcome (read first or second) just before, at or just after a deadline
    (if the horizon drawn is its model's)."""
    prediction = draw(predictions)
    deadline = prediction.timestamp.timestamp() + draw(horizons)
    at = deadline + draw(st.sampled_from([-0.5, 0.0, 0.0, 0.5]))
    outcome = draw(outcomes).model_copy(
        update={"decision_id": prediction.decision_id, "timestamp": datetime.fromtimestamp(at, UTC)}
    )
    pair: list[Op] = [Read(prediction, False), Read(outcome, False)]
    return pair if draw(st.booleans()) else pair[::-1]


@st.composite
def ops(draw: st.DrawFn) -> list[Op]:
    """Mostly reads; now and then a tick, a commit, a partition moved, a crash, a record at the size
    limit."""
    roll = draw(st.integers(0, 21))
    if roll < 6:
        return [Read(draw(predictions), draw(elsewhere))]
    if roll < 12:
        return [Read(draw(outcomes), draw(elsewhere))]
    if roll < 14:
        return [ReadSentOn(draw(partitions))]
    if roll < 17:
        return [Tick(draw(partitions), draw(times), draw(clocks))]
    if roll == 20:
        return [Read(draw(at_the_size_limit()), draw(elsewhere))]
    if roll == 21:
        return draw(answered())
    return [[Commit(), Move(draw(partitions)), Crash()][roll - 17]]


def flat(runs: list[list[Op]]) -> list[Op]:
    return [op for run in runs for op in run]


def by_name(specs: tuple[LearnerSpec, ...]) -> dict[str, LearnerSpec]:
    return {spec.name: spec for spec in specs}


join_params = st.fixed_dictionaries(
    {
        "default_horizon": st.sampled_from([1.0, 3.0, 3600.0]),
        "late_retention": st.sampled_from([0.5, 1.0, 3.0]),
        "lateness": st.sampled_from([0.0, 1.5]),
        "outcome_duplicates": st.sampled_from(["first", "last"]),
    }
)


@settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    specs=st.tuples(learner_specs("a"), learner_specs("b")).map(by_name),
    params=join_params,
    run=st.lists(ops(), min_size=10, max_size=40).map(flat),
)
def test_the_join_follows_the_reference_rules(
    specs: dict[str, LearnerSpec], params: dict[str, Any], run: list[Op]
) -> None:
    product, reference = Loop(ProductJoin(specs, params)), Loop(Reference(specs, params))
    product.run(run)
    reference.run(run)
    for step, (got, expected) in enumerate(zip(product.trace, reference.trace)):
        label = f"step {step}: {got[0]}"
        assert got[1] == expected[1], f"{label}: outputs differ"
        assert got[2] == expected[2], f"{label}: state differs"
        assert got[3] == expected[3], f"{label}: clocks differ"
    assert len(product.trace) == len(reference.trace)
    assert product.committed == reference.committed
