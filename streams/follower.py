"""Following a topic in the background: what a client that serves a compacted topic's contents reads
it with.

:class:`Follower` reads chosen partitions of one topic from their start, in a thread of its own, for
as long as it runs, and hands each batch of records to its owner (a ``PreferenceClient`` follows
every partition of ``preference-store``). A partition can be added while it runs: it is read from
its start, and the owner is told when its end is reached (the owner has caught up on its history
there).

:class:`ModelUpdates` is the one follower of ``model-updates`` that every ``ModelClient`` of a
process shares (one per connection and topic): a model's records sit on one partition, the one its
key hashes to (:func:`~adaptloop.streams.versions.home_partition`), so it reads only the partitions
of the models followed, with one consumer and one producer for them all, and hands each record to
the clients of its key. A hundred models then cost one consumer's threads and fetches rather than a
hundred, and a client starts without making a Kafka client of its own.
:class:`~adaptloop.streams.retirement.ModelSpecs` follows ``model-specs`` alike (keyed by model too),
for the clients and ``adaptloop serve`` to see a model retired; both are :class:`KeyedFollower`\\ s.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, Self, TypeVar

from confluent_kafka import OFFSET_BEGINNING, KafkaError, KafkaException, Message, TopicPartition

from adaptloop.schemas.base import Event
from adaptloop.schemas.codec import decode
from adaptloop.schemas.errors import DecodeError, TimedOut
from adaptloop.schemas.topics import MODEL_UPDATES, Topic
from adaptloop.streams.admin import wait_for_broker
from adaptloop.streams.connection import ConnectionLike, KafkaConnection
from adaptloop.streams.producer import EventProducer

log = logging.getLogger(__name__)

POLL_SECONDS = 0.05
"""How long the follower's thread waits for records before it looks for partitions to add or drop:
the most a new client waits before its partition is read."""


class Follower:
    """Reads partitions of ``topic`` from their start in a background thread, until :meth:`close`.

    ``on_records`` gets each batch of records read (in partition order, never an error),
    ``on_start`` the partitions it starts reading from their start, ``on_end`` a partition whose end
    it has reached; all are called from the follower's thread, one at a time.
    """

    def __init__(
        self,
        bootstrap: ConnectionLike,
        topic: str,
        *,
        name: str,
        on_records: Callable[[list[Message]], None],
        on_start: Callable[[list[int]], None] | None = None,
        on_end: Callable[[int], None] | None = None,
    ) -> None:
        self.topic = topic
        self._on_records, self._on_start, self._on_end = on_records, on_start, on_end
        self._consumer = KafkaConnection.of(bootstrap).group_consumer(
            f"{name}-{uuid.uuid4().hex}",  # no group work: partitions are assigned, not shared
            **{
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 50,
                "enable.partition.eof": True,  # says when a partition's history has been read
                "isolation.level": "read_committed",
            },
        )
        self._lock = threading.Lock()  # guards the partitions asked for, applied by the thread
        self._reread: set[int] = set()
        self._dropped: set[int] = set()
        self._assigned: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def follow(self, partitions: Iterable[int]) -> None:
        """Read ``partitions`` from their start (again, for one read already) and follow them."""
        with self._lock:
            self._reread.update(partitions)
            self._dropped.difference_update(self._reread)

    def drop(self, partitions: Iterable[int]) -> None:
        """Stop reading ``partitions``."""
        with self._lock:
            self._dropped.update(partitions)
            self._reread.difference_update(self._dropped)

    def close(self) -> None:
        """Stop the thread (it closes the consumer); from the thread itself, it stops after the
        current batch."""
        self._stop.set()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=5)

    def _apply(self) -> None:
        """Assign the partitions asked for since the last batch: unassigning one read already and
        assigning it at its start again drops what was fetched from it before (librdkafka discards
        the old assignment's records), so what comes next is its history from the start. What the
        consumer refuses is asked for again at the next batch."""
        with self._lock:
            reread, dropped = self._reread, self._dropped
            self._reread, self._dropped = set(), set()
        try:
            if gone := (reread | dropped) & self._assigned:
                self._consumer.incremental_unassign(
                    [TopicPartition(self.topic, p) for p in sorted(gone)]
                )
                self._assigned -= gone
            if reread:
                starts = [TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in sorted(reread)]
                self._consumer.incremental_assign(starts)
                self._assigned |= reread
        except KafkaException as error:
            log.error("%s: cannot change the partitions read (%s); asking again", self.topic, error)
            with self._lock:  # unless asked otherwise meanwhile
                self._reread |= reread - self._dropped
                self._dropped |= dropped - reread - self._reread
            self._stop.wait(1.0)
            return
        if reread and self._on_start is not None:
            self._on_start(sorted(reread))

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self._apply()
                records: list[Message] = []
                for message in self._consumer.consume(500, POLL_SECONDS):
                    if (error := message.error()) is None:
                        records.append(message)
                    elif error.code() == KafkaError._PARTITION_EOF:
                        self._hand(records)  # what came before the end, first
                        records = []
                        if self._on_end is not None:
                            self._on_end(message.partition() or 0)
                    else:
                        log.warning("%s: %s", self.topic, error.str())
                self._hand(records)
        # a bug in an owner's handler: said loudly, rather than a silent dead thread
        except Exception:
            log.exception("the follower of %s stopped", self.topic)
            raise
        finally:
            self._consumer.close()

    def _hand(self, records: list[Message]) -> None:
        if records:
            self._on_records(records)


class Reader(Protocol):
    """What follows one model's records (``ModelClient``'s
    :class:`~adaptloop.streams.model_client.NewestVersion`)."""

    def read(self, partition: int, offset: int, value: bytes | None) -> None:
        """One record of the model, in partition order (a record read again after a re-read is not
        passed)."""

    def caught_up(self) -> None:
        """The model's history is read: the partition's end as of when it was followed is
        reached."""


@dataclass(eq=False)
class Subscription:
    """One reader of one model's records, and how far it has read."""

    key: bytes
    partition: int
    reader: Reader
    started: bool = False  # False: waits for its partition to be read from its start
    caught_up: bool = False
    # partition -> the first offset not read yet
    next_offsets: dict[int, int] = field(default_factory=dict)


E = TypeVar("E", bound=Event)


def decode_keyed(topic: Topic, value: bytes, model: str, kind: type[E]) -> E:
    """The record read under ``model``'s key on ``topic``: a ``kind`` of that model, or
    :class:`~adaptloop.schemas.errors.DecodeError` (a record under another model's key would make
    a :class:`Reader` take another model's history for its own)."""
    record = decode(topic, value)
    assert isinstance(record, kind)  # the topic's one event
    if (owner := getattr(record, "model", None)) != model:
        raise DecodeError("invalid", f"a record of model {owner!r} under the key {model!r}")
    return record


Record = tuple[int, int, bytes | None, bytes | None]
"""A record read: (partition, offset, key, value)."""


class Routes:
    """Which reader of a shared follower gets which record: the readers of its key, each record
    once.

    A reader added to a partition read already has the partition read again from its start: it waits
    for that (:meth:`started`), then gets every record of its key, and is caught up at the
    partition's next end. The readers that have read the partition already skip what they have seen.
    No Kafka here, and no lock: the owner holds one around each call.

    >>> routes = Routes()
    >>> first = routes.add(Subscription(b"m", 0, reader=None))
    >>> routes.started([0])
    >>> [(s is first, r) for s, r in routes.records([(0, 0, b"m", b"v1"), (0, 1, b"x", b"another model")])]
    [(True, (0, 0, b'v1'))]
    >>> [s is first for s in routes.ended(0)]
    [True]
    >>> later = routes.add(Subscription(b"m", 0, reader=None))  # its partition is to be read again
    >>> [(s is later, r) for s, r in routes.records([(0, 2, b"m", b"v3")])]  # before the re-read: the first's
    [(False, (0, 2, b'v3'))]
    >>> routes.started([0])
    >>> [(s is later, r[1]) for s, r in routes.records([(0, offset, b"m", b"v") for offset in (0, 2, 3)])]
    [(True, 0), (True, 2), (False, 3), (True, 3)]
    >>> [s is later for s in routes.ended(0)]  # the first was caught up already
    [True]
    """

    def __init__(self) -> None:
        self._by_key: dict[bytes, list[Subscription]] = {}
        self._by_partition: dict[int, list[Subscription]] = {}

    def add(self, subscription: Subscription) -> Subscription:
        self._by_key.setdefault(subscription.key, []).append(subscription)
        self._by_partition.setdefault(subscription.partition, []).append(subscription)
        return subscription

    def remove(self, subscription: Subscription) -> bool:
        """Forget ``subscription``; True if no one reads its partition any more."""
        readers = self._by_key.get(subscription.key, [])
        if subscription in readers:
            readers.remove(subscription)
            if not readers:
                del self._by_key[subscription.key]
        on_partition = self._by_partition.get(subscription.partition, [])
        if subscription not in on_partition:
            return False
        on_partition.remove(subscription)
        if on_partition:
            return False
        del self._by_partition[subscription.partition]
        return True

    def started(self, partitions: Iterable[int]) -> None:
        """``partitions`` are read from their start from now on: their waiting readers start
        reading."""
        for partition in partitions:
            for subscription in self._by_partition.get(partition, []):
                subscription.started = True

    def records(
        self, records: Iterable[Record]
    ) -> list[tuple[Subscription, tuple[int, int, bytes | None]]]:
        """Each (reader, (partition, offset, value)) to hand, in the records' order."""
        handed = []
        for partition, offset, key, value in records:
            for subscription in self._by_key.get(key or b"", []):
                if not subscription.started or offset < subscription.next_offsets.get(partition, 0):
                    continue
                subscription.next_offsets[partition] = offset + 1
                handed.append((subscription, (partition, offset, value)))
        return handed

    def ended(self, partition: int) -> list[Subscription]:
        """The readers that have read ``partition``'s history now: they are caught up."""
        done = [s for s in self._by_partition.get(partition, []) if s.started and not s.caught_up]
        for subscription in done:
            subscription.caught_up = True
        return done


class KeyedFollower:
    """The process's follower of one topic keyed by model (per connection and topic), shared by its
    ModelClients: each model's records sit on the partition its key hashes to, and only the
    partitions of the models followed are read.

    Get it with :meth:`acquire` and give it back with :meth:`release`: the last user's release stops
    it. Each client :meth:`subscribe`\\ s its model; a model added later has its partition read
    again from its start (the subscribers that have read it already skip what they have seen).
    :class:`ModelUpdates` follows ``model-updates`` (the versions),
    :class:`~adaptloop.streams.retirement.ModelSpecs` ``model-specs`` (the retirements).
    """

    TOPIC: ClassVar[Topic]
    _shared: ClassVar[dict[tuple[Any, ...], KeyedFollower]] = {}
    _shared_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, bootstrap: KafkaConnection, prefix: str, key: tuple[Any, ...]) -> None:
        self.bootstrap, self.prefix, self.topic = bootstrap, prefix, self.TOPIC.full_name(prefix)
        self._key = key
        self._users = 0
        self._lock = threading.Lock()  # guards the routes (and a subclass's state)
        self._routes = Routes()
        self._count_lock = threading.Lock()
        self._partition_count: int | None = None
        self._follower = Follower(
            bootstrap,
            self.topic,
            name=self.TOPIC.name,
            on_records=self._records,
            on_start=self._started,
            on_end=self._ended,
        )

    @classmethod
    def acquire(cls, bootstrap: ConnectionLike, prefix: str = "") -> Self:
        """The follower of the topic of this connection and prefix, made if this process has
        none."""
        connection = KafkaConnection.of(bootstrap)
        # Two identities are two followers: the key holds the address and every property, secrets
        # included (as the values they are, never shown).
        key = (
            cls.TOPIC.full_name(prefix),
            connection.bootstrap,
            *sorted(connection.librdkafka().items()),
        )
        with cls._shared_lock:
            shared = cls._shared.get(key)
            if shared is None:
                shared = cls._shared[key] = cls(connection, prefix, key)
            shared._users += 1
            assert isinstance(shared, cls)
            return shared

    def release(self) -> None:
        """One user fewer; the last one stops the follower."""
        with KeyedFollower._shared_lock:
            self._users -= 1
            if self._users > 0:
                return
            del KeyedFollower._shared[self._key]
        self._follower.close()
        self._closed()

    def _closed(self) -> None:
        """What a subclass does once its follower has stopped."""

    def partitions(self, wait: float) -> int:
        """How many partitions the topic has, once it exists (a worker creates it when it starts)."""
        deadline = time.monotonic() + wait
        if not self._count_lock.acquire(timeout=wait):
            raise TimedOut(f"the partitions of {self.topic!r} were not found within {wait:.0f}s")
        try:
            if self._partition_count is None:
                admin = wait_for_broker(self.bootstrap, timeout=wait)
                while True:
                    remaining = max(deadline - time.monotonic(), 0.5)
                    topic = admin.list_topics(self.topic, timeout=remaining).topics.get(self.topic)
                    if topic is not None and topic.error is None and topic.partitions:
                        self._partition_count = len(topic.partitions)
                        break
                    if time.monotonic() > deadline:
                        raise TimedOut(
                            f"topic {self.topic!r} does not exist after {wait:.0f}s: start "
                            "a worker "
                            "('adaptloop worker') or create the topics ('adaptloop topics "
                            "create'), with the same "
                            "topic_prefix"
                        )
                    time.sleep(0.5)
            return self._partition_count
        finally:
            self._count_lock.release()

    def subscribe(self, model: str, partition: int, reader: Reader) -> Subscription:
        """Hand ``reader`` every record of ``model``'s key, from the start of its ``partition``."""
        with self._lock:
            subscription = self._routes.add(Subscription(model.encode(), partition, reader))
            # under the lock: an unsubscribe's drop cannot overtake it
            self._follower.follow([partition])
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        """Hand ``subscription``'s reader nothing more (but a record being handed to it now); stop
        reading its partition if no one else reads it."""
        with self._lock:
            if self._routes.remove(subscription):
                self._follower.drop([subscription.partition])

    def _started(self, partitions: list[int]) -> None:
        with self._lock:
            self._routes.started(partitions)

    def _records(self, messages: list[Message]) -> None:
        with self._lock:
            handed = self._routes.records(
                (m.partition() or 0, m.offset() or 0, m.key(), m.value()) for m in messages
            )
        # outside the lock: loading takes time
        for subscription, (partition, offset, value) in handed:
            try:
                subscription.reader.read(partition, offset, value)
            except Exception:  # one reader's bug must not stop the others' models
                log.exception(
                    "a reader of %s failed on partition %d offset %d", self.topic, partition, offset
                )

    def _ended(self, partition: int) -> None:
        with self._lock:
            done = self._routes.ended(partition)
        for subscription in done:
            try:
                subscription.reader.caught_up()
            except Exception:
                log.exception("a reader of %s failed on catching up", self.topic)


class ModelUpdates(KeyedFollower):
    """The process's follower of ``model-updates``: each client's model's versions, and the one
    producer the clients that bring none of their own send their predictions with."""

    TOPIC = MODEL_UPDATES

    def __init__(self, bootstrap: KafkaConnection, prefix: str, key: tuple[Any, ...]) -> None:
        self._producer: EventProducer | None = None
        super().__init__(bootstrap, prefix, key)

    def producer(self) -> EventProducer:
        """The producer the clients that bring none of their own send their predictions with."""
        with self._lock:
            if self._producer is None:
                self._producer = EventProducer(self.bootstrap, topic_prefix=self.prefix)
            return self._producer

    def _closed(self) -> None:
        """Deliver what the shared producer holds."""
        with self._lock:
            producer, self._producer = self._producer, None
        if producer is not None:
            producer.flush()
