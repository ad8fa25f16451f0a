"""Reading a topic to its current end: the versions published on ``model-updates``, or any topic's events.

Which published version is a model's current one (:func:`is_newer`): the record with the highest ``sequence``
on the model's own partition of ``model-updates`` (where its key puts it). The order records are read in says
nothing (partitions are read in any order), and a record of the model on another partition was not written
by its learner's producer: it is ignored, with a warning. Records from before sequence numbers count as 0:
older than any numbered one, and among themselves the later on the partition is the newer, as before.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections.abc import Iterable

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from adaptloop.schemas.base import Event
from adaptloop.schemas.codec import decode
from adaptloop.schemas.errors import DecodeError, TimedOut
from adaptloop.schemas.system import ModelVersion
from adaptloop.schemas.topics import MODEL_UPDATES, Topic, partition_for
from adaptloop.streams.connection import ConnectionLike, KafkaConnection
from adaptloop.streams.producer import KAFKA_LOG

log = logging.getLogger(__name__)

LEADERSHIP_ERRORS = frozenset(
    {KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE, KafkaError.UNKNOWN_TOPIC_OR_PART}
)
"""A partition whose leader the broker has not taken up yet: a topic just created is in the metadata, with its
leader, a moment before that broker answers for it. Asked again."""


def partitions_of(client: Consumer, name: str, timeout: float) -> list[int] | None:
    """The partitions of topic ``name``, or None if there is no such topic.

    A topic whose leaders are still being chosen is asked again until ``timeout``; any other error of the topic
    (no permission to describe it, above all) raises :class:`~confluent_kafka.KafkaException`, rather than
    pass for a topic with nothing in it.
    """
    deadline = time.monotonic() + timeout
    while True:
        metadata = client.list_topics(name, timeout=max(deadline - time.monotonic(), 1.0)).topics.get(name)
        error = None if metadata is None else metadata.error
        if metadata is None or (error is not None and error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART):
            return None
        if error is None:
            return sorted(metadata.partitions)
        if error.code() != KafkaError.LEADER_NOT_AVAILABLE or time.monotonic() > deadline:
            raise KafkaException(error)
        time.sleep(0.1)


def watermarks(consumer: Consumer, name: str, partitions: Iterable[int], timeout: float) -> dict[int, tuple[int, int]]:
    """The (low, high) offsets of each of ``partitions`` of topic ``name``.

    A partition without a leader yet (:data:`LEADERSHIP_ERRORS`) is asked again until ``timeout``; any other
    error, or one that lasts, raises :class:`~confluent_kafka.KafkaException`.
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


def read_all(
    connection: ConnectionLike, topic: Topic, prefix: str = "", timeout: float = 30.0, *, strict: bool = False
) -> list[Event]:
    """Every decodable, committed event of ``topic`` from its start up to its end as of now.

    Undecodable records and tombstones are skipped here: the consumers that act on the topic dead-letter the
    former. ``strict``: raise :class:`TimedOut` rather than return what ``timeout`` allowed to read.
    """
    events: list[Event] = []
    for _, value in read_raw(connection, topic.full_name(prefix), timeout, strict=strict):
        if value is not None:
            with contextlib.suppress(DecodeError):
                events.append(decode(topic, value))
    return events


def read_raw(
    connection: ConnectionLike, name: str, timeout: float = 30.0, *, strict: bool = False
) -> list[tuple[bytes | None, bytes | None]]:
    """The (key, value) of every committed record of topic ``name`` up to its end as of now (none if the topic
    does not exist). ``strict``: raise :class:`TimedOut` if the end is not reached within ``timeout`` (an open
    transaction holds committed readers back until it ends): a restore must not go on with part of a state."""
    return [(key, value) for _, _, key, value in read_placed(connection, name, timeout, strict=strict)[0]]


def read_placed(
    connection: ConnectionLike, name: str, timeout: float = 30.0, *, strict: bool = False
) -> tuple[list[tuple[int, int, bytes | None, bytes | None]], int]:
    """:func:`read_raw` with where each record was: ((partition, offset, key, value) of each, in partition and
    offset order; and how many partitions the topic has, 0 if it does not exist)."""
    consumer = Consumer(
        {
            **KafkaConnection.of(connection).config(),
            "group.id": f"read-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        },
        logger=KAFKA_LOG,
    )
    records: list[tuple[int, int, bytes | None, bytes | None]] = []
    try:
        partitions = partitions_of(consumer, name, timeout)
        if partitions is None:
            return records, 0
        ends = {p: high for p, (_, high) in watermarks(consumer, name, partitions, timeout).items()}
        todo = {p for p, end in ends.items() if end > 0}
        consumer.assign([TopicPartition(name, p, OFFSET_BEGINNING) for p in todo])
        deadline = time.monotonic() + timeout
        while todo and time.monotonic() < deadline:
            for message in consumer.consume(1000, 0.2):
                if message.error() is None:
                    records.append((message.partition() or 0, message.offset() or 0, message.key(), message.value()))
            # Compaction or transaction markers can leave the last offsets without a record.
            for tp in consumer.position([TopicPartition(name, p) for p in list(todo)]):
                if tp.offset >= ends[tp.partition]:
                    todo.discard(tp.partition)
        if todo and strict:
            raise TimedOut(
                f"could not read {name} to its end within {timeout:.0f}s (partitions {sorted(todo)}); is the "
                "broker up, or does a transaction of a stopped writer hold it until its timeout?"
            )
        return sorted(records, key=lambda record: record[:2]), len(partitions)
    finally:
        consumer.close()


def published_versions(connection: ConnectionLike, prefix: str = "", timeout: float = 30.0) -> dict[str, ModelVersion]:
    """Each model's current version on the compacted ``model-updates`` topic: its newest record by
    :func:`is_newer`, from the model's own partition."""
    latest: dict[str, ModelVersion] = {}
    records, partitions = read_placed(connection, MODEL_UPDATES.full_name(prefix), timeout)
    for partition, offset, _, value in records:
        if value is None:
            continue
        try:
            version = decode(MODEL_UPDATES, value)
        except DecodeError:
            continue
        assert isinstance(version, ModelVersion)
        if not on_its_partition(version.model, partition, partitions, offset):
            continue
        current = latest.get(version.model)
        if current is None or is_newer(version, current):
            latest[version.model] = version
    return latest


def home_partition(model: str, partitions: int) -> int:
    """The partition of ``model-updates`` where the learner's producer puts the records of ``model`` (by key)."""
    return partition_for(model.encode(), partitions)


def on_its_partition(model: str, partition: int, partitions: int, offset: int) -> bool:
    """Whether a record of ``model`` read at ``partition`` is where its learner writes it; warn if not."""
    home = home_partition(model, partitions)
    if partition == home:
        return True
    log.warning(
        "ignored a record of model %s on partition %d of model-updates (offset %d): its learner publishes it on "
        "partition %d only",
        model,
        partition,
        offset,
        home,
    )
    return False


def is_newer(record: ModelVersion, than: ModelVersion) -> bool:
    """Whether ``record`` replaces ``than`` as the model's current version: a higher ``sequence`` (a record from
    before numbers counts as 0), or the same, read later on the model's partition (a record published again).

    >>> from adaptloop.schemas import ModelVersion
    >>> def v(sequence): return ModelVersion(model="m", version="ab12ab12ab12ab12", examples_seen=1,
    ...                                      sha256="ab12" * 16, uri="u", size_bytes=1, sequence=sequence)
    >>> is_newer(v(3), v(2)), is_newer(v(2), v(3)), is_newer(v(None), v(1)), is_newer(v(None), v(None))
    (True, False, False, True)
    """
    return (record.sequence or 0) >= (than.sequence or 0)
