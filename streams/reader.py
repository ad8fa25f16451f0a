"""The one short-lived reader of a topic: its partitions, its ends, its records up to the end now,
or on from there.

A :class:`TopicReader` reads one topic outside any consumer group (it assigns partitions itself and
commits nothing): the dead letters a command lists, the versions a status shows, the confirmation a
rollback waits for. What each such read needs is the same, so it lives here once:

- a topic that does not exist reads as empty, and one whose leaders are still being chosen (just
  created) is asked again; any other error of the topic (no permission to describe it, above all)
  raises :class:`~confluent_kafka.KafkaException` rather than pass for an empty topic
  (:func:`partitions_of`);
- a partition whose leader does not serve yet is asked again for its ends (:func:`watermarks`);
- "up to the end" means up to each partition's end when the read starts, reached by position
  (compaction and transaction markers leave offsets without a record), within a deadline
  (:meth:`TopicReader.to_end`);
- it reads committed records only unless told otherwise (the join and the replays write in
  transactions).

Make one with :meth:`KafkaConnection.reader <adaptloop.streams.connection.KafkaConnection.reader>`::

    with connection.reader("prod.dead-letters") as reader:
        letters = [message.value() for message in reader.to_end(timeout=30)]
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Literal, Protocol

from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_END,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)

from adaptloop.schemas.errors import TimedOut
from adaptloop.streams.connection import KafkaConnection

if TYPE_CHECKING:
    from confluent_kafka.admin import ClusterMetadata

log = logging.getLogger(__name__)

LEADERSHIP_ERRORS = frozenset(
    {
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.UNKNOWN_TOPIC_OR_PART,
    }
)
"""A partition whose leader the broker has not taken up yet: a topic just created is in the
metadata, with its leader, a moment before that broker answers for it. Asked again."""


@dataclass(frozen=True)
class Since:
    """Start at each partition's first record stamped at or after ``seconds`` (epoch seconds)."""

    seconds: float


Start = Literal["beginning", "end"] | Since | Mapping[int, int]
"""Where a :class:`TopicReader` starts: each partition's beginning, its end as the read starts (what
comes next), the first record since a time, or given offsets (partition -> offset; the partitions
not named are not read)."""


class _Metadata(Protocol):
    def list_topics(self, topic: str | None = None, timeout: float = -1) -> ClusterMetadata: ...


class _Watermarks(Protocol):
    def get_watermark_offsets(
        self, partition: TopicPartition, timeout: float = -1
    ) -> tuple[int, int]: ...


def partitions_of(client: _Metadata, name: str, timeout: float) -> list[int] | None:
    """The partitions of topic ``name``, or None if there is no such topic.

    A topic whose leaders are still being chosen is asked again until ``timeout``; any other error
    of the topic (no permission to describe it, above all) raises
    :class:`~confluent_kafka.KafkaException`, rather than pass for a topic with nothing in it.
    """
    deadline = time.monotonic() + timeout
    while True:
        metadata = client.list_topics(
            name, timeout=max(deadline - time.monotonic(), 1.0)
        ).topics.get(name)
        error = None if metadata is None else metadata.error
        if metadata is None or (
            error is not None and error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART
        ):
            return None
        if error is None:
            return sorted(metadata.partitions)
        if error.code() != KafkaError.LEADER_NOT_AVAILABLE or time.monotonic() > deadline:
            raise KafkaException(error)
        time.sleep(0.1)


def watermarks(
    consumer: _Watermarks, name: str, partitions: Iterable[int], timeout: float
) -> dict[int, tuple[int, int]]:
    """The (low, high) offsets of each of ``partitions`` of topic ``name``.

    A partition without a leader yet (:data:`LEADERSHIP_ERRORS`) is asked again until ``timeout``;
    any other error, or one that lasts, raises :class:`~confluent_kafka.KafkaException`.
    """
    deadline = time.monotonic() + timeout
    found: dict[int, tuple[int, int]] = {}
    for partition in partitions:
        while True:
            try:
                found[partition] = consumer.get_watermark_offsets(
                    TopicPartition(name, partition), timeout=max(deadline - time.monotonic(), 1.0)
                )
                break
            except KafkaException as error:
                if error.args[0].code() not in LEADERSHIP_ERRORS or time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
    return found


def unread(starts: Mapping[int, int], ends: Mapping[int, int]) -> dict[int, int]:
    """The partitions a read from ``starts`` has records to read in before ``ends`` (partition ->
    its end).

    A start is an offset, ``OFFSET_BEGINNING`` (read if the partition ever held a record) or
    ``OFFSET_END`` (nothing before the end).

    >>> unread({0: OFFSET_BEGINNING, 1: OFFSET_BEGINNING, 2: 5, 3: 9, 4: OFFSET_END}, {0: 3, 1: 0, 2: 9, 3: 9, 4: 9})
    {0: 3, 2: 9}
    """
    return {
        partition: ends[partition]
        for partition, start in starts.items()
        if (start == OFFSET_BEGINNING and ends[partition] > 0) or 0 <= start < ends[partition]
    }


def _short_lived_consumer(connection: KafkaConnection, committed: bool) -> Consumer:
    """A consumer that reads by assigning partitions, never in a group (its group id is its own)."""
    from adaptloop.streams.producer import KAFKA_LOG

    config = {
        # never joined: a read assigns, so it is never committed
        "group.id": f"read-{uuid.uuid4().hex}",
        "enable.auto.commit": False,
        "isolation.level": "read_committed" if committed else "read_uncommitted",
        "fetch.wait.max.ms": 50,
    }
    return Consumer(connection.config(**config), logger=KAFKA_LOG)


def topic_ends(
    connection: KafkaConnection, names: Iterable[str], timeout: float = 10.0
) -> dict[str, dict[int, int]]:
    """The end offset of each partition of each topic in ``names`` (a topic that does not exist:
    none).

    Asked with one client: a :class:`TopicReader` per topic makes a client each, which took 3.7
    times as long for adaptloop's 16 topics (measured, interleaved)."""
    consumer = _short_lived_consumer(connection, committed=True)
    try:
        ends: dict[str, dict[int, int]] = {}
        for name in names:
            partitions = partitions_of(consumer, name, timeout) or []
            ends[name] = {
                p: high for p, (_, high) in watermarks(consumer, name, partitions, timeout).items()
            }
        return ends
    finally:
        consumer.close()


class TopicReader:
    """A short-lived read of one topic, from ``start``: :meth:`to_end` (what is there now) or
    :meth:`poll` (on from there, as records come).

    The read starts (its partitions are assigned at their ``start``) at the first :meth:`to_end` or
    :meth:`poll`, or at :meth:`assign`: call that before sending what the reader waits for, so that
    ``start`` ``"end"`` does not fall after it. Close it (or use it as a context manager).

    ``committed``: skip the records of open and aborted transactions.
    """

    def __init__(
        self,
        connection: KafkaConnection,
        name: str,
        *,
        start: Start = "beginning",
        committed: bool = True,
    ) -> None:
        self.connection, self.name, self.start = connection, name, start
        self._consumer = _short_lived_consumer(connection, committed)
        self._partitions: list[int] | None = None
        # partition -> where the read started, once assigned
        self._starts: dict[int, int] | None = None
        self._ends: dict[int, int] = {}  # partition -> its end when the read started
        # partition -> its end, for those :meth:`to_end` has still to read
        self._todo: dict[int, int] = {}

    def partitions(self, timeout: float = 30.0) -> list[int] | None:
        """The topic's partitions, None if it does not exist (see :func:`partitions_of`)."""
        if self._partitions is None:
            self._partitions = partitions_of(self._consumer, self.name, timeout)
        return self._partitions

    def wait_for_partitions(self, timeout: float, missing: str) -> list[int]:
        """The topic's partitions once it exists; :class:`TimedOut` with ``missing`` (what to do)
        after ``timeout``."""
        deadline = time.monotonic() + timeout
        while (partitions := self.partitions(timeout)) is None:
            if time.monotonic() > deadline:
                raise TimedOut(missing)
            time.sleep(0.5)
        return partitions

    def ends(self, timeout: float = 30.0) -> dict[int, int]:
        """Each partition's end offset now (the offset its next record will have); none for no
        topic."""
        partitions = self.partitions(timeout) or []
        return {
            p: high
            for p, (_, high) in watermarks(self._consumer, self.name, partitions, timeout).items()
        }

    def assign(self, timeout: float = 30.0) -> dict[int, int]:
        """Start the read (once): note each partition's end, assign the partitions at their start;
        return the ends."""
        if self._starts is None:
            self._ends = self.ends(timeout)
            self._starts = self._start_offsets(timeout)
            self._consumer.assign(
                [TopicPartition(self.name, p, offset) for p, offset in self._starts.items()]
            )
        return self._ends

    def _start_offsets(self, timeout: float) -> dict[int, int]:
        start = self.start
        if start == "beginning":
            return dict.fromkeys(self._ends, OFFSET_BEGINNING)
        if start == "end":
            return dict(self._ends)
        if isinstance(start, Since):
            stamp = int(start.seconds * 1000)
            asked = [TopicPartition(self.name, p, stamp) for p in self._ends]
            found = self._consumer.offsets_for_times(asked, timeout=timeout) if asked else []
            # A partition with no record since then: its next one.
            return {tp.partition: tp.offset if tp.offset >= 0 else OFFSET_END for tp in found}
        return {p: offset for p, offset in start.items() if p in self._ends}

    def to_end(
        self, timeout: float = 30.0, *, strict: bool = False, until: Mapping[int, int] | None = None
    ) -> Iterator[Message]:
        """Each record from the start up to each partition's end when the read started (or, for the
        partitions named in ``until``, that offset), in each partition's order; none if the topic
        does not exist.

        Records past those ends are not yielded (nor, later, by :meth:`poll`). Within ``timeout``
        only; ``strict``: raise :class:`TimedOut` rather than stop short (an open transaction holds
        committed readers back until it ends): a restore must not go on with part of a state.
        :attr:`unfinished` says which partitions the read did not finish (see :meth:`skip`).
        """
        deadline = time.monotonic() + timeout
        ends = {**self.assign(timeout), **(until or {})}
        assert self._starts is not None
        self._todo = unread(self._starts, ends)
        while self._todo and time.monotonic() < deadline:
            for message in self._fetched():
                partition, offset = message.partition(), message.offset()
                if (
                    message.error() is None
                    and partition in self._todo
                    and (offset or 0) < self._todo[partition]
                ):
                    yield message
            self._drop_finished()
        if self._todo and strict:
            raise TimedOut(
                f"could not read {self.name} to its end within {timeout:.0f}s (partitions "
                f"{sorted(self._todo)}); "
                "is the broker up, or does a transaction of a stopped writer hold it until "
                "its timeout?"
            )

    def _fetched(self) -> list[Message]:
        """What has been fetched, or if nothing yet, the first record to come within 0.2 s.

        (librdkafka's batch consume waits for a *full* batch or its timeout: every read of fewer
        than 1,000 records, the model-specs catalogue and the versions a learner reads on each
        assignment among them, took 0.2 s more than it needed.)
        """
        messages = self._consumer.consume(1000, 0)
        return messages or self._consumer.consume(1, 0.2)

    def _drop_finished(self) -> None:
        # By position, not by the last record read: compaction or transaction markers can leave the
        # last offsets without a record.
        todo = [TopicPartition(self.name, p) for p in self._todo]
        for tp in self._consumer.position(todo) if todo else []:
            if tp.offset >= self._todo[tp.partition]:
                del self._todo[tp.partition]

    def skip(self, partition: int) -> None:
        """Read no more of ``partition`` in :meth:`to_end` (what was wanted from it was found)."""
        self._todo.pop(partition, None)

    @property
    def unfinished(self) -> set[int]:
        """The partitions :meth:`to_end` stopped before the end of (its timeout came first)."""
        return set(self._todo)

    def poll(self, timeout: float = 0.5, max_records: int = 1000) -> list[Message]:
        """The next records (up to ``max_records``) from where the read stands, waiting up to
        ``timeout`` for the first; errors of the topic are logged and skipped (the client retries
        them)."""
        self.assign()
        found = []
        for message in self._consumer.consume(max_records, timeout):
            error = message.error()
            if error is None:
                found.append(message)
            elif error.code() != KafkaError._PARTITION_EOF:
                log.warning("reading %s: %s", self.name, error.str())
        return found

    def close(self) -> None:
        self._consumer.close()

    def __enter__(self) -> TopicReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
