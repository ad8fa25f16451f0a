"""The versions currently published on ``model-updates``: the latest record of each model."""

from __future__ import annotations

import time
import uuid

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from schemas.codec import decode
from schemas.errors import DecodeError
from schemas.system import ModelVersion
from schemas.topics import MODEL_UPDATES
from streams.producer import KAFKA_LOG


def published_versions(bootstrap: str, prefix: str = "", timeout: float = 30.0) -> dict[str, ModelVersion]:
    """Read the compacted topic up to its current end; return the last record of each model."""
    topic = MODEL_UPDATES.full_name(prefix)
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"versions-{uuid.uuid4().hex}",
                         "enable.auto.commit": False}, logger=KAFKA_LOG)
    latest: dict[str, ModelVersion] = {}
    try:
        partitions = consumer.list_topics(topic, timeout=timeout).topics[topic].partitions
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout)[1] for p in partitions}
        todo = {p for p, end in ends.items() if end > 0}
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in todo])
        deadline = time.monotonic() + timeout
        while todo and time.monotonic() < deadline:
            for message in consumer.consume(500, 0.2):
                if message.error() is not None:
                    continue
                try:
                    version: ModelVersion = decode(MODEL_UPDATES, message.value())  # type: ignore[assignment]
                    latest[version.model] = version
                except DecodeError:
                    pass
                if message.offset() + 1 >= ends[message.partition()]:
                    todo.discard(message.partition())
            # Compaction or transaction markers can leave the last offsets without a record.
            for tp in consumer.position([TopicPartition(topic, p) for p in list(todo)]):
                if tp.offset >= ends[tp.partition]:
                    todo.discard(tp.partition)
        return latest
    finally:
        consumer.close()
