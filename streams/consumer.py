"""The one consumer helper: batched reads of adaptloop topics, decoded, bad records
dead-lettered."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import NamedTuple

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from adaptloop.schemas.base import Event
from adaptloop.schemas.topics import Topic
from adaptloop.schemas.trusted import TRUSTED_READERS
from adaptloop.streams.connection import ConnectionLike, KafkaConnection
from adaptloop.streams.deadletter import DeadLetters

log = logging.getLogger(__name__)


def position_of(message: Message) -> tuple[str, int, int]:
    """The topic, partition and offset of a fetched record (the client's types allow None, which
    only error events have)."""
    topic, partition, offset = message.topic(), message.partition(), message.offset()
    assert topic is not None and partition is not None and offset is not None
    return topic, partition, offset


def is_record(message: Message) -> bool:
    """Whether a fetched message is a record; an error event is not: the end of a partition is
    skipped, a fatal error raised, any other logged."""
    error = message.error()
    if error is None:
        return True
    if error.code() == KafkaError._PARTITION_EOF:
        return False
    if error.fatal():
        raise KafkaException(error)
    log.warning("consumer error on %s: %s", message.topic(), error.str())
    return False


class Record(NamedTuple):
    """A decoded event with where it came from (a tuple: cheap to make, one per record).

    ``timestamp``: Kafka's timestamp of the record in epoch seconds: when the broker appended it on
    a topic with ``message.timestamp.type=LogAppendTime``, else the time its producer gave it.
    """

    topic: Topic
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    event: Event
    timestamp: float = 0.0


class EventConsumer:
    """Reads adaptloop topics in batches, in a consumer group; yields decoded :class:`Record` s.
    Made from a :class:`~adaptloop.streams.connection.KafkaConnection` (whose topic prefix it uses
    unless ``prefix`` says otherwise) or a bare address.

    ``trusted``: read the topics only the worker writes (``training-examples``) with their fast
    reader (:mod:`adaptloop.schemas.trusted`).

    Offsets are committed only by :meth:`commit`, after the dead letters of the
    batch are acknowledged: a crash re-reads records, it never loses one.

    Typical use (needs a broker)::

        with EventConsumer("localhost:9092", "audit", [OUTCOMES], dead_letters=dead) as consumer:
            for record in consumer.poll():
                handle(record.event)
            consumer.commit()
    """

    def __init__(
        self,
        connection: ConnectionLike,
        group: str,
        topics: Sequence[Topic],
        *,
        dead_letters: DeadLetters,
        prefix: str | None = None,
        config: dict[str, object] | None = None,
        on_assign: Callable[[Consumer, list[TopicPartition]], None] | None = None,
        on_revoke: Callable[[Consumer, list[TopicPartition]], None] | None = None,
        trusted: bool = False,
    ) -> None:
        connection = KafkaConnection.of(connection)
        prefix = connection.topic_prefix if prefix is None else prefix
        self.dead_letters = dead_letters
        self._topics = {topic.full_name(prefix): topic for topic in topics}
        # The worker's own topics read with their fast reader: their events are structs of the
        # contract's fields, not pydantic models (schemas.trusted says what each checks).
        self._readers = {
            name: TRUSTED_READERS[topic]
            for name, topic in self._topics.items()
            if trusted and topic in TRUSTED_READERS
        }
        self._consumer = connection.group_consumer(
            group,
            **{
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "partition.assignment.strategy": "cooperative-sticky",
                # The join writes in transactions: never read records of an aborted one.
                "isolation.level": "read_committed",
                **(config or {}),
            },
        )
        callbacks = {
            name: cb for name, cb in (("on_assign", on_assign), ("on_revoke", on_revoke)) if cb
        }
        self._consumer.subscribe(list(self._topics), **callbacks)

    @property
    def kafka(self) -> Consumer:
        """The underlying confluent-kafka consumer (for seeks, positions, lag)."""
        return self._consumer

    def poll(self, max_records: int = 1000, timeout: float = 1.0) -> list[Record]:
        """Up to ``max_records`` decoded records; bad ones are dead-lettered, not returned."""
        records: list[Record] = []
        topics, readers, decode = self._topics, self._readers, self.dead_letters.decode
        for message in self.fetch(max_records, timeout):
            if not is_record(message):
                continue
            name, partition, offset = position_of(message)
            key, value = message.key(), message.value()
            topic = topics[name]
            event = decode(topic, name, partition, offset, key, value, readers.get(name))
            # (a record without a value was dead-lettered: value is bytes here)
            if event is not None:
                stamp = message.timestamp()[1] / 1000.0
                records.append(Record(topic, partition, offset, key, value, event, stamp))  # type: ignore[arg-type]
        return records

    def topic_of(self, name: str) -> Topic:
        """The topic read under the full name ``name``."""
        return self._topics[name]

    def fetch(self, max_records: int, timeout: float) -> list[Message]:
        """The messages there are now, as the client gives them (not decoded: for the join, whose
        core decodes its inputs' bytes itself; error events among them), up to ``max_records``;
        if none, wait up to ``timeout`` for the first.

        (librdkafka's batch consume waits for a *full* batch or the timeout: under a trickle
        every poll would wait the whole timeout.)
        """
        messages = self._consumer.consume(max_records, 0)
        if not messages:
            messages = self._consumer.consume(1, timeout)
            if messages and max_records > 1:
                messages += self._consumer.consume(max_records - 1, 0)
        return messages

    def commit(self, wait: bool = True) -> None:
        """Commit what was polled, once the batch's dead letters are safely on the broker.

        ``wait=False``: commit without waiting for the dead letters or the broker, for a reader that
        resumes from offsets of its own (the learner's checkpoints), to whom the group's offsets
        only show its lag.
        """
        try:
            if wait:
                self.dead_letters.producer.flush()
                self._consumer.commit(asynchronous=False)
            else:
                self._consumer.commit(asynchronous=True)
        except KafkaException as error:
            if error.args[0].code() != KafkaError._NO_OFFSET:
                raise

    def close(self) -> None:
        self._consumer.close()

    def __enter__(self) -> EventConsumer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
