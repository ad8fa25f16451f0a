"""The join agent: predictions, outcomes and clock ticks in, training examples out, in Kafka
transactions.

Each input partition ``i`` (of ``predictions``, ``outcomes`` and ``join-clock``,
co-partitioned and given to one member by the "range" assignment) has its own
transactional producer, ``transactional.id = <group>-<i>``. Everything the join
does for partition ``i`` in a batch, the training examples (whatever partition
their model key lands on), the dead letters, the changed entries of its state on
a compacted changelog partition ``i``, and the input offsets, commits in one
transaction: a crash replays the batch from the last commit, exactly once.

A decision's prediction and outcome must be read by the member that owns its partition. A service
whose client partitions keys otherwise than Java's murmur2 (librdkafka's default
``consistent_random``: Go, .NET, node-rdkafka) puts some records on another partition: the join
sends each such record on to its key's partition of ``predictions-repartition`` or
``outcomes-repartition``, in the transaction that commits having read it, and joins it there, so
nothing is lost or joined twice whatever the sender's partitioner.

Whoever takes over partition ``i`` creates producer ``i`` again, which fences the
old owner and aborts its open transaction at once, then restores the state from
the changelog and resumes from the committed offsets. The join logic itself is
:class:`adaptloop.learners.join.DelayedJoin`, Kafka-free.

It is a confluent-kafka loop rather than a faust agent: faust's per-event asyncio path
runs the join at about 600 decisions/s, and its per-partition transactions cannot cover
outputs keyed to other partitions.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, Protocol

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Message, TopicPartition

from adaptloop.learners import join as rules
from adaptloop.learners.catalog import spec_of
from adaptloop.learners.join import (
    OUTCOME_CLOCK,
    PREDICTION_CLOCK,
    DelayedJoin,
    JoinState,
    RawOutput,
    entry_from,
)
from adaptloop.learners.spec import LearnerSpec
from adaptloop.schemas.base import Event
from adaptloop.schemas.codec import classify_compiled, decode
from adaptloop.schemas.errors import ConfigError, DeliveryFailed, TimedOut, TopicConfigMismatch
from adaptloop.schemas.system import ClockTick, DeadLetter, DeadLetterKind
from adaptloop.schemas.topics import (
    JOIN_CLOCK,
    OUTCOMES,
    OUTCOMES_REPARTITION,
    PREDICTIONS,
    PREDICTIONS_REPARTITION,
    TRAINING_EXAMPLES,
    Topic,
)
from adaptloop.streams.admin import BY_CLUSTER_SIZE, Replication, ensure_changelog, wait_for_broker
from adaptloop.streams.connection import ConnectionLike, KafkaConnection
from adaptloop.streams.consumer import EventConsumer, Record, is_record, position_of
from adaptloop.streams.deadletter import DeadLetters
from adaptloop.streams.metrics import EVENTS_IN, JOINS, REPARTITIONED, model_label, record_lag
from adaptloop.streams.producer import EventProducer
from adaptloop.streams.reader import watermarks
from adaptloop.streams.specs import SpecFollower, read_catalogue

log = logging.getLogger(__name__)

INPUTS: tuple[Topic, ...] = (
    PREDICTIONS,
    OUTCOMES,
    JOIN_CLOCK,
    PREDICTIONS_REPARTITION,
    OUTCOMES_REPARTITION,
)
REPARTITION = {PREDICTIONS: PREDICTIONS_REPARTITION, OUTCOMES: OUTCOMES_REPARTITION}
RESTORE_TIMEOUT = 300.0


class _ToPartitionProducer:
    """The dead-letter sink of the join: each letter goes out in the transaction of its input
    partition."""

    def __init__(self, outputs: Mapping[int, EventProducer]) -> None:
        self.outputs = outputs

    def send(self, letter: DeadLetter) -> None:
        self.outputs[letter.partition].send(letter)


FIRST_JOINS_FAST: dict[str, object] = {
    # A partition just assigned joins the fetch in flight only when it returns, and a fetch of
    # partitions with nothing new waits fetch.wait.max.ms (500 ms by default) on the broker: 0.5 s
    # after every assignment before the first record. (Once data flows, fetch.min.bytes=1 answers at
    # once anyway.)
    "fetch.wait.max.ms": 100,
    # A fetch answers topic by topic, up to this much of each partition: at librdkafka's 1 MB, a
    # backlog's first fetch held 6 MB of predictions (12,000) before its first outcome, so the first
    # decision joined 0.9 s after assignment. At 128 KB, predictions and outcomes alternate every
    # 1,500 records or so (measured: the first example 0.26 s after assignment, the backlog's total
    # time unchanged).
    "max.partition.fetch.bytes": 128 * 1024,
}

JOIN_CONSUMER_CONFIG: dict[str, object] = {
    # eager "range": partition i of the inputs goes to one member, assigned with our own restore.
    "partition.assignment.strategy": "range",
    "session.timeout.ms": 10_000,
    "heartbeat.interval.ms": 2_000,
    "fetch.max.bytes": 16 * 1024 * 1024,
    **FIRST_JOINS_FAST,
}
"""The join's consumer settings, over :class:`~adaptloop.streams.consumer.EventConsumer`'s own."""


class JoinSettings(Protocol):
    """What a join reads of the worker's settings (:class:`adaptloop.settings.Settings` has it
    all)."""

    group: str
    partitions: int
    tick_seconds: float | None
    lateness_seconds: float
    max_future_seconds: float

    @property
    def specs(self) -> dict[str, LearnerSpec]: ...

    @property
    def replication(self) -> Replication: ...


class JoinAgent:
    """Runs :class:`DelayedJoin` on the partitions assigned to it, exactly once.

    Typical use (needs a broker)::

        JoinAgent("localhost:9092", specs={"churn": spec}, partitions=6).run(stop=threading.Event())
    """

    @classmethod
    def from_settings(cls, settings: JoinSettings, connection: KafkaConnection) -> JoinAgent:
        """The join of the worker ``settings`` describe, its topics prefixed as ``connection``
        says."""
        return cls(
            connection,
            specs=settings.specs,
            partitions=settings.partitions,
            prefix=connection.topic_prefix,
            group=f"{settings.group}-join",
            tick_seconds=settings.tick_seconds,
            lateness_seconds=settings.lateness_seconds,
            max_future_seconds=settings.max_future_seconds,
            replication=settings.replication,
        )

    def __init__(
        self,
        connection: ConnectionLike,
        *,
        specs: Mapping[str, LearnerSpec],
        partitions: int,
        prefix: str = "",
        group: str = "adaptloop-join",
        tick_seconds: float | None = 1.0,
        lateness_seconds: float = 0.0,
        max_future_seconds: float = 300.0,
        batch_size: int = 5000,
        replication: Replication = BY_CLUSTER_SIZE,
    ) -> None:
        self.connection = KafkaConnection.of(connection)
        self.prefix = prefix
        self.group = f"{prefix}{group}"
        self.changelog = f"{self.group}-state"
        self.tick_seconds = tick_seconds
        self.max_future_seconds = max_future_seconds
        self.batch_size = batch_size
        self.names = {topic: topic.full_name(prefix) for topic in INPUTS}
        self.examples_topic = TRAINING_EXAMPLES.full_name(prefix)
        self.state = JoinState()
        # The models in effect: model-specs over the settings' specs, followed while the join runs.
        catalogue = read_catalogue(self.connection, specs, prefix, buildable=False)
        self.join = DelayedJoin(self.state, catalogue.specs, lateness=lateness_seconds)
        self.spec_follower = SpecFollower(self.connection, prefix, ends=catalogue.ends)
        self.outputs: dict[int, EventProducer] = {}  # input partition -> its transactional producer
        # next offset to process, per input partition
        self.positions: dict[tuple[str, int], int] = {}
        # offsets of the last commit, per input partition
        self._committed: dict[tuple[str, int], int] = {}
        partitions = self._ensure_changelog(partitions, replication)
        self.partitions = partitions
        self._committer = ThreadPoolExecutor(
            max_workers=partitions, thread_name_prefix="join-commit"
        )
        # ticks are inputs, not outputs: no transaction
        self.ticker = EventProducer(connection, topic_prefix=prefix)
        # End offsets for ticks, on connections of their own: the consumer's hold its long-polling
        # fetches, and a question queued behind one waits up to fetch.wait.max.ms.
        self.ends = self.connection.group_consumer(f"{self.group}-ends")
        self._last_tick = 0.0
        self._lag_recorded_at = 0.0
        # the inputs the join reads raw, by full name, in the order process_raw takes them
        self._raw_inputs = (
            self.names[PREDICTIONS],
            self.names[OUTCOMES],
            self.names[PREDICTIONS_REPARTITION],
            self.names[OUTCOMES_REPARTITION],
        )
        self.consumer = EventConsumer(
            connection,
            self.group,
            INPUTS,
            dead_letters=DeadLetters(_ToPartitionProducer(self.outputs), self.group),  # type: ignore[arg-type]
            prefix=prefix,
            config=JOIN_CONSUMER_CONFIG,
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
        )

    def _ensure_changelog(self, partitions: int, replication: Replication) -> int:
        """Create the state changelog with a partition per input partition; return their number.

        The inputs' own partition count wins over ``partitions`` (the setting may have changed
        since they were created); a changelog with fewer partitions than the inputs is an error.
        """
        topics = wait_for_broker(self.connection).list_topics(timeout=30).topics
        inputs = topics.get(self.names[PREDICTIONS])
        partitions = (
            len(inputs.partitions) if inputs is not None and inputs.partitions else partitions
        )
        have = ensure_changelog(self.connection, self.changelog, partitions, replication)
        if have < partitions:
            raise TopicConfigMismatch(
                f"{self.changelog} has {have} partitions, {self.names[PREDICTIONS]} has "
                f"{partitions}: the join state cannot follow the inputs"
            )
        return partitions

    # -- partitions: restore on assignment, forget on revocation --------------------------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        indexes = sorted({tp.partition for tp in partitions})
        self._take(indexes)
        consumer.assign(partitions)  # from the offsets committed with the state just restored
        log.info("join assigned %s", sorted(self.outputs))

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Every batch is committed before the next poll, so nothing is pending here.
        for index in sorted({tp.partition for tp in partitions}):
            self._release(index)
        consumer.unassign()

    def _take(self, indexes: list[int]) -> None:
        """Become the owner of these input partitions: fence their previous owners, restore their
        state.

        Each partition's transactional producer fences the last one as it starts (a few round trips
        to the transaction coordinator), so they start side by side; then one reader restores every
        partition. One after the other, producer and reader per partition, six partitions took
        0.4-2.7 s (measured).
        """
        for index in indexes:
            self._release(index)
        producers = self._committer.map(
            lambda index: EventProducer(
                self.connection, topic_prefix=self.prefix, transactional_id=f"{self.group}-{index}"
            ),
            indexes,
        )
        self.outputs.update(zip(indexes, producers))
        for index, restored in self._restore(indexes).items():
            log.info(
                "join partition %d: %d entries restored from %s", index, restored, self.changelog
            )

    def _release(self, index: int) -> None:
        producer = self.outputs.pop(index, None)
        if producer is not None and producer.in_transaction:
            producer.abort_transaction()
        self.state.drop_partition(index)
        self.join.forget(index)
        for topic in INPUTS:
            self.positions.pop((self.names[topic], index), None)
            self._committed.pop((self.names[topic], index), None)

    def _restore(self, indexes: list[int]) -> dict[int, int]:
        """Read these changelog partitions to their ends into the state (their producers just fenced
        any writer); return the entries restored per partition."""
        reader = self.connection.group_consumer(
            f"{self.group}-restore",
            **{"enable.auto.commit": False, "isolation.level": "read_committed"},
        )
        restored = dict.fromkeys(indexes, 0)
        try:
            ends = {}  # partition -> the offset its restore reads up to
            for index, (low, high) in watermarks(reader, self.changelog, indexes, 30).items():
                if high > low:
                    ends[index] = high
            if not ends:
                return restored
            reader.assign(
                [TopicPartition(self.changelog, index, OFFSET_BEGINNING) for index in ends]
            )
            deadline = time.monotonic() + RESTORE_TIMEOUT
            while ends:
                if time.monotonic() > deadline:
                    raise TimedOut(
                        f"could not read {self.changelog} partitions {sorted(ends)} to their ends "
                        f"within {RESTORE_TIMEOUT:.0f}s; is the broker up?"
                    )
                for message in reader.consume(10_000, 1.0):
                    if message.error() is not None:
                        continue
                    key, value = message.key(), message.value()
                    assert key is not None  # the join writes every entry under its decision id
                    self.state.restore(
                        key.decode(), entry_from(value) if value is not None else None
                    )
                    restored[message.partition() or 0] += 1
                # Transaction markers hold the last offsets: a partition is done when its position
                # passes its end.
                positions = reader.position(
                    [TopicPartition(self.changelog, index) for index in ends]
                )
                for tp in positions:
                    if tp.offset >= ends[tp.partition]:
                        del ends[tp.partition]
            return restored
        finally:
            reader.close()

    # -- the loop -------------------------------------------------------------------------------

    def step(self, timeout: float = 0.1) -> int:
        """Process one batch and commit it; return the number of records read."""
        self._maybe_tick()
        self._follow_specs()
        messages = self.consumer.fetch(self.batch_size, timeout)
        received: Counter[str] = Counter()
        joined: Counter[tuple[str, str]] = Counter()
        at = 0
        while at < len(messages):
            # predictions and outcomes up to the next clock tick (or error): one call of the join
            at = self._join(messages, at, received, joined)
            if at < len(messages):
                # after the records before it: a tick asks how far they were read
                self._other(messages[at], received, joined)
                at += 1
        # Commit every partition that moved, also those whose records were all dead-lettered.
        kafka = self.consumer.kafka
        moved: dict[int, list[TopicPartition]] = {}
        for tp in kafka.position(kafka.assignment()):
            if tp.offset >= 0 and self._committed.get((tp.topic, tp.partition)) != tp.offset:
                moved.setdefault(tp.partition, []).append(tp)
        self._commit({index: offsets for index, offsets in moved.items() if index in self.outputs})
        for name, count in received.items():
            EVENTS_IN.labels("join", name).inc(count)
        for (model, status), count in joined.items():
            JOINS.labels(model_label(model, self.join.specs), status).inc(count)
        if time.monotonic() - self._lag_recorded_at > 10:
            record_lag("join", kafka)
            self._lag_recorded_at = time.monotonic()
            self.consumer.dead_letters.log_summary()
        return len(messages)

    def _join(
        self,
        messages: list[Message],
        start: int,
        received: Counter[str],
        joined: Counter[tuple[str, str]],
    ) -> int:
        """Join the predictions and outcomes of ``messages`` from ``start`` up to the next other
        message, in one call of the join on their bytes, and send what they gave in their
        partition's transaction: training examples, records read on another partition than their
        decision's on to that partition's repartition topic, dead letters (a record its contract
        refuses, one whose time must not reach the clocks, one that raised: its decision is left as
        it was, no record stops the join). Return the index of the first message left."""
        now = time.time()
        stop, examples, counts, rare, read = self.join.process_raw(
            messages,
            start,
            self._raw_inputs,
            self.partitions,
            now,
            self.max_future_seconds,
            self.consumer.dead_letters.max_record_bytes,
        )
        outputs, topic = self.outputs, self.examples_topic
        for index, key, example in examples:
            outputs[index].send_bytes(topic, key, example)
        for model, status, count in counts:
            joined[(model, status)] += count
        for name, index, position, count in read:
            self.positions[(name, index)] = position
            received[self.consumer.topic_of(name).name] += count
        for item in rare:
            self._finish(messages[item[1]], item, now, received)
        return stop

    def _finish(
        self, message: Message, item: tuple[Any, ...], now: float, received: Counter[str]
    ) -> None:
        """A record the join did not simply join (see :data:`~adaptloop.learners.join.RawBatch`):
        its dead letter, or its send to its decision's partition."""
        name, index, _ = position_of(message)
        topic = self.consumer.topic_of(name)
        what = item[0]
        if what == rules.RAW_CONTRACT:
            error = classify_compiled(topic, message.value(), *item[2:])
            self._reject(message, error.kind, error.reason)
            received[topic.name] -= 1  # an event in is one decoded, as every role counts them
        elif what == rules.RAW_TIME:
            problem = self._time_problem(decode(topic, message.value()), index, now)
            assert problem is not None  # the core refused it for this
            self._reject(message, "rejected", problem)
        elif what == rules.RAW_SENT_ON:
            home, key = item[2:]
            self.outputs[index].send_bytes(
                REPARTITION[topic].full_name(self.prefix), key, message.value(), partition=home
            )
            REPARTITIONED.labels(topic.name).inc()
        elif what == rules.RAW_FAILED:
            self._failed(message, item[2])
        else:
            key, refused, reason, offset, sent_on = item[2:]
            if refused is None:  # the record being processed: its own bytes
                self._reject(message, "rejected", self.join.reason(reason))
            else:  # an outcome read earlier
                self.consumer.dead_letters.reject(
                    self.names[OUTCOMES_REPARTITION if sent_on else OUTCOMES],
                    index,
                    offset,
                    key.encode(),
                    refused,
                    "rejected",
                    self.join.reason(reason),
                )

    def _other(
        self, message: Message, received: Counter[str], joined: Counter[tuple[str, str]]
    ) -> None:
        """A message that is not a prediction or an outcome: a clock tick, or a consumer error."""
        if not is_record(message):
            return
        name, index, offset = position_of(message)
        topic = self.consumer.topic_of(name)
        self.positions[(name, index)] = offset + 1
        key, value = message.key(), message.value()
        event = self.consumer.dead_letters.decode(topic, name, index, offset, key, value)
        if event is not None:  # (else dead-lettered)
            received[topic.name] += 1
            stamp = message.timestamp()[1] / 1000.0
            self._tick(Record(topic, index, offset, key, value or b"", event, stamp), joined)

    def _tick(self, record: Record, joined: Counter[tuple[str, str]]) -> None:
        """Advance the clocks of the tick's partition whose inputs have been read to their end."""
        name, index = record.topic.full_name(self.prefix), record.partition
        self.positions[(name, index)] = record.offset + 1
        problem = self._time_problem(record.event, index)
        if problem is not None:
            self._reject(record, "rejected", problem)
            return
        try:
            out = self.join.tick_raw(
                index, record.event.timestamp.timestamp(), self._read_to_end(index)
            )
        except Exception as error:
            self._failed(record, error)
            return
        self._emit(record, out, joined)

    def _emit(self, record: Record, out: RawOutput, joined: Counter[tuple[str, str]]) -> None:
        """What the join gave for ``record``: its training examples, and its rejections as dead
        letters."""
        output, index = self.outputs[record.partition], record.partition
        for model, status, example in out[0]:
            output.send_bytes(self.examples_topic, model.encode(), example)
            joined[(model, status)] += 1
        for key, refused, reason, offset, sent_on in out[1]:
            if refused is None:  # the record being processed: its own bytes
                self._reject(record, "rejected", self.join.reason(reason))
            else:  # an outcome read earlier
                assert key is not None and offset is not None
                topic_name = self.names[OUTCOMES_REPARTITION if sent_on else OUTCOMES]
                reason_text = self.join.reason(reason)
                self.consumer.dead_letters.reject(
                    topic_name, index, offset, key.encode(), refused, "rejected", reason_text
                )

    def _reject(self, record: Record | Message, kind: DeadLetterKind, reason: str) -> None:
        """Dead-letter a record (a clock tick's, or a message of the inputs the join reads raw)."""
        key: bytes | None
        value: bytes | None
        if isinstance(record, Record):
            name, index, offset = (
                record.topic.full_name(self.prefix),
                record.partition,
                record.offset,
            )
            key, value = record.key, record.value
        else:
            name, index, offset = position_of(record)
            key, value = record.key(), record.value()
        self.consumer.dead_letters.reject(name, index, offset, key, value, kind, reason)

    def _failed(self, record: Record | Message, error: BaseException) -> None:
        """A record the join raised on: a dead letter of kind ``error`` (its decision was left as it
        was)."""
        name, index, offset = (
            (record.topic.name, record.partition, record.offset)
            if isinstance(record, Record)
            else position_of(record)
        )
        log.error(
            "join: %s[%d]@%d raised; it is dead-lettered", name, index, offset, exc_info=error
        )
        self._reject(record, "error", f"the join raised {type(error).__name__}: {error}")

    def _time_problem(self, event: Event, index: int, now: float | None = None) -> str | None:
        """Why a record's time must not reach the join's clocks, if it must not: ahead of this
        worker's clock by more than ``max_future_seconds`` (a prediction from the year 9999, or a
        forged clock tick, would expire every pending decision of its partition), or a clock tick
        that far behind what the partition has seen. ``now``: the worker's clock (default: read
        now)."""
        moment = event.timestamp.timestamp()
        ahead = moment - (time.time() if now is None else now)
        if ahead > self.max_future_seconds:
            return (
                f"timestamp {event.timestamp.isoformat()} is {ahead:,.0f}s ahead of this "
                "worker's clock (limit "
                f"{self.max_future_seconds:,.0f}s): it would move the join's event time "
                "forward and expire "
                "pending decisions"
            )
        if isinstance(event, ClockTick):
            latest = self.join.latest(index)
            if latest is not None and latest - moment > self.max_future_seconds:
                return (
                    f"clock tick {event.timestamp.isoformat()} is {latest - moment:,.0f}s "
                    "behind what partition "
                    f"{index} has seen (limit {self.max_future_seconds:,.0f}s)"
                )
        return None

    def _read_to_end(self, index: int) -> tuple[int, ...]:
        """The clocks whose input partition has been processed up to its end, so a tick may advance
        them.

        The end is asked of the broker now, after the tick was sent: the end cached from the last
        fetch may predate records written before the tick, and advancing the clock past those
        would expire predictions whose outcomes are still to be read. (A backlog by the cached end
        needs no question.)
        """
        done = []
        for topic, clock in ((PREDICTIONS, PREDICTION_CLOCK), (OUTCOMES, OUTCOME_CLOCK)):
            if self._at_end(topic, index) and self._at_end(REPARTITION[topic], index):
                done.append(clock)
        return tuple(done)

    def _at_end(self, topic: Topic, index: int) -> bool:
        name = self.names[topic]
        tp, position = TopicPartition(name, index), self._position(name, index)
        if position < self.consumer.kafka.get_watermark_offsets(tp, cached=True)[1]:
            return False
        try:
            _, high = self.ends.get_watermark_offsets(tp, timeout=5)
        except KafkaException as error:  # no answer: the clock waits for the next tick
            log.warning(
                "join partition %d: no end offset of %s (%s); the tick does not advance it",
                index,
                name,
                error.args[0].str(),
            )
            return False
        return position >= high

    def _position(self, name: str, index: int) -> int:
        known = self.positions.get((name, index))
        if known is not None:
            return known
        committed = self.consumer.kafka.committed([TopicPartition(name, index)], timeout=10)[
            0
        ].offset
        self.positions[(name, index)] = max(committed, 0)
        return self.positions[(name, index)]

    def _commit(self, moved: dict[int, list[TopicPartition]]) -> None:
        """One transaction per partition that moved: its outputs (already sent), its state changes,
        its offsets.

        The partitions' transactions are independent, so they commit in parallel (each is a few
        round trips to the broker, and confluent-kafka waits for them without holding the GIL).
        """
        for index in moved:
            output = self.outputs[index]
            for key, entry in self.state.take_change_records(index):
                output.send_bytes(self.changelog, key, entry, partition=index)
        metadata = self.consumer.kafka.consumer_group_metadata()
        futures = {
            index: self._committer.submit(self.outputs[index].commit_transaction, offsets, metadata)
            for index, offsets in moved.items()
        }
        for index, future in futures.items():
            try:
                future.result()
            except KafkaException as error:
                if not error.args[0].txn_requires_abort():
                    # fenced or fatal: the role stops, the worker restarts it, the group rebalances
                    raise
                log.warning(
                    "join partition %d: transaction aborted (%s); replaying from the last commit",
                    index,
                    error.args[0].str(),
                )
                self.outputs[index].abort_transaction()
                self._rewind(index)
                continue
            for tp in moved[index]:
                self._committed[(tp.topic, tp.partition)] = tp.offset
                # covers dead-lettered records too
                self.positions[(tp.topic, tp.partition)] = tp.offset

    def _rewind(self, index: int) -> None:
        """After an aborted transaction: the state and the positions of the last commit."""
        self.state.drop_partition(index)
        self.join.forget(index)
        self._restore([index])
        kafka = self.consumer.kafka
        for tp in kafka.committed(
            [TopicPartition(self.names[t], index) for t in INPUTS], timeout=30
        ):
            self.positions.pop((tp.topic, tp.partition), None)
            self._committed.pop((tp.topic, tp.partition), None)
            kafka.seek(
                TopicPartition(
                    tp.topic, tp.partition, tp.offset if tp.offset >= 0 else OFFSET_BEGINNING
                )
            )

    def _maybe_tick(self) -> None:
        """Send a clock tick to every owned partition each ``tick_seconds`` (wall clock)."""
        if not self.tick_seconds or time.monotonic() - self._last_tick < self.tick_seconds:
            return
        self._last_tick = time.monotonic()
        tick = ClockTick(source=self.group, timestamp=datetime.now(UTC))
        for index in self.outputs:
            self.ticker.send(tick, partition=index)
        try:
            self.ticker.poll()
        except DeliveryFailed as error:  # a missed tick only delays expiry; the next one follows
            log.warning("clock tick not delivered: %s", error)

    def _follow_specs(self) -> None:
        """Take up the spec changes operators made since the last batch: the contracts the join
        checks predictions against (the learner checks every example again under the spec it learns
        with)."""
        for record in self.spec_follower.poll():
            try:
                spec = spec_of(record, buildable=False) if record.status == "active" else None
            # the owning learner dead-letters it; the model goes on as it was
            except ConfigError as error:
                log.warning(
                    "ignored the spec record of %s by %s: %s", record.model, record.actor, error
                )
                continue
            self.join.use_spec(record.model, spec)
            log.info("model %s: spec %s by %s", record.model, record.status, record.actor)

    def run(self, stop: threading.Event | None = None) -> None:
        """Join until ``stop`` is set; the last batch is committed on the way out."""
        stop = stop or threading.Event()
        try:
            while not stop.is_set():
                self.step()
        finally:
            for index in list(self.outputs):
                self._release(index)
            self.ticker.flush(10)
            self.consumer.close()
            self.ends.close()
            self.spec_follower.close()
            self._committer.shutdown()
