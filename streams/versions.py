"""Reading a topic to its current end: the versions published on ``model-updates``, or any topic's events."""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterable

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from adaptloop.schemas.base import Event
from adaptloop.schemas.codec import decode
from adaptloop.schemas.errors import DecodeError, TimedOut
from adaptloop.schemas.system import ModelVersion
from adaptloop.schemas.topics import MODEL_UPDATES, Topic
from adaptloop.streams.connection import kafka_config
from adaptloop.streams.producer import KAFKA_LOG

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
    bootstrap: str, topic: Topic, prefix: str = "", timeout: float = 30.0, *, strict: bool = False
) -> list[Event]:
    """Every decodable, committed event of ``topic`` from its start up to its end as of now.

    Undecodable records and tombstones are skipped here: the consumers that act on the topic dead-letter the
    former. ``strict``: raise :class:`TimedOut` rather than return what ``timeout`` allowed to read.
    """
    events: list[Event] = []
    for _, value in read_raw(bootstrap, topic.full_name(prefix), timeout, strict=strict):
        if value is not None:
            with contextlib.suppress(DecodeError):
                events.append(decode(topic, value))
    return events


def read_raw(
    bootstrap: str, name: str, timeout: float = 30.0, *, strict: bool = False
) -> list[tuple[bytes | None, bytes | None]]:
    """The (key, value) of every committed record of topic ``name`` up to its end as of now (none if the topic
    does not exist). ``strict``: raise :class:`TimedOut` if the end is not reached within ``timeout`` (an open
    transaction holds committed readers back until it ends): a restore must not go on with part of a state."""
    consumer = Consumer(
        {
            **kafka_config(bootstrap),
            "group.id": f"read-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        },
        logger=KAFKA_LOG,
    )
    records: list[tuple[bytes | None, bytes | None]] = []
    try:
        partitions = partitions_of(consumer, name, timeout)
        if partitions is None:
            return records
        ends = {p: high for p, (_, high) in watermarks(consumer, name, partitions, timeout).items()}
        todo = {p for p, end in ends.items() if end > 0}
        consumer.assign([TopicPartition(name, p, OFFSET_BEGINNING) for p in todo])
        deadline = time.monotonic() + timeout
        while todo and time.monotonic() < deadline:
            for message in consumer.consume(1000, 0.2):
                if message.error() is None:
                    records.append((message.key(), message.value()))
            # Compaction or transaction markers can leave the last offsets without a record.
            for tp in consumer.position([TopicPartition(name, p) for p in list(todo)]):
                if tp.offset >= ends[tp.partition]:
                    todo.discard(tp.partition)
        if todo and strict:
            raise TimedOut(
                f"could not read {name} to its end within {timeout:.0f}s (partitions {sorted(todo)}); is the "
                "broker up, or does a transaction of a stopped writer hold it until its timeout?"
            )
        return records
    finally:
        consumer.close()


def published_versions(bootstrap: str, prefix: str = "", timeout: float = 30.0) -> dict[str, ModelVersion]:
    """The last record of each model on the compacted ``model-updates`` topic."""
    latest: dict[str, ModelVersion] = {}
    for version in read_all(bootstrap, MODEL_UPDATES, prefix, timeout):
        latest[version.model] = version  # type: ignore[attr-defined,assignment]
    return latest
