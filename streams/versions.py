"""Reading a topic to its current end: the versions published on ``model-updates``, or any topic's events."""

from __future__ import annotations

import contextlib
import time
import uuid

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from adaptloop.schemas.base import Event
from adaptloop.schemas.codec import decode
from adaptloop.schemas.errors import DecodeError
from adaptloop.schemas.system import ModelVersion
from adaptloop.schemas.topics import MODEL_UPDATES, Topic
from adaptloop.streams.producer import KAFKA_LOG


def read_all(bootstrap: str, topic: Topic, prefix: str = "", timeout: float = 30.0) -> list[Event]:
    """Every decodable, committed event of ``topic`` from its start up to its end as of now.

    Undecodable records are skipped here: the consumers that act on the topic dead-letter them.
    """
    name = topic.full_name(prefix)
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"read-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        },
        logger=KAFKA_LOG,
    )
    events: list[Event] = []
    try:
        metadata = consumer.list_topics(name, timeout=timeout).topics[name]
        if metadata.error is not None:
            return events
        ends = {
            p: consumer.get_watermark_offsets(TopicPartition(name, p), timeout=timeout)[1] for p in metadata.partitions
        }
        todo = {p for p, end in ends.items() if end > 0}
        consumer.assign([TopicPartition(name, p, OFFSET_BEGINNING) for p in todo])
        deadline = time.monotonic() + timeout
        while todo and time.monotonic() < deadline:
            for message in consumer.consume(1000, 0.2):
                if message.error() is not None:
                    continue
                with contextlib.suppress(DecodeError):
                    events.append(decode(topic, message.value()))
            # Compaction or transaction markers can leave the last offsets without a record.
            for tp in consumer.position([TopicPartition(name, p) for p in list(todo)]):
                if tp.offset >= ends[tp.partition]:
                    todo.discard(tp.partition)
        return events
    finally:
        consumer.close()


def published_versions(bootstrap: str, prefix: str = "", timeout: float = 30.0) -> dict[str, ModelVersion]:
    """The last record of each model on the compacted ``model-updates`` topic."""
    latest: dict[str, ModelVersion] = {}
    for version in read_all(bootstrap, MODEL_UPDATES, prefix, timeout):
        latest[version.model] = version  # type: ignore[attr-defined,assignment]
    return latest
