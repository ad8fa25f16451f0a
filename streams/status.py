"""What ``adaptloop status`` shows: each model's current version and metrics, alerts, and each role's lag."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from adaptloop.schemas.system import DriftAlert, ModelHealth, ModelVersion
from adaptloop.schemas.topics import (
    DRIFT_ALERTS,
    MODEL_COMMANDS,
    MODEL_HEALTH,
    OUTCOMES,
    PREDICTIONS,
    TRAINING_EXAMPLES,
    Topic,
)
from adaptloop.snapshots.snapshot import ARCHIVED_TOPICS
from adaptloop.streams.connection import kafka_config
from adaptloop.streams.producer import KAFKA_LOG
from adaptloop.streams.versions import published_versions, read_all, watermarks

COORDINATOR_ERRORS = frozenset(
    {
        KafkaError.NOT_COORDINATOR,
        KafkaError.COORDINATOR_NOT_AVAILABLE,
        KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
        KafkaError._TIMED_OUT,
    }
)
"""A group's coordinator moving or loading (or a new broker creating its offsets topic): asked again."""


@dataclass(frozen=True)
class Status:
    versions: dict[str, ModelVersion]
    health: dict[str, ModelHealth]  # model -> its latest health, as its learner published it
    drift_alerts: Counter[str]  # model -> alerts
    # role -> records its group has not committed yet (None: the group never committed; str: why unknown)
    lag: dict[str, int | str | None]


def group_lag(bootstrap: str, group: str, topics: list[str], timeout: float = 10.0) -> int | str | None:
    """Records behind the end of ``topics`` for consumer ``group`` (by its committed offsets); None if
    the group never committed, or why the broker could not say (its coordinator moving or loading,
    past a few retries)."""
    consumer = Consumer(kafka_config(bootstrap, **{"group.id": group, "enable.auto.commit": False}), logger=KAFKA_LOG)
    try:
        metadata = consumer.list_topics(timeout=timeout).topics
        tps = [TopicPartition(t, p) for t in topics if t in metadata for p in metadata[t].partitions]
        deadline = time.monotonic() + timeout
        while True:
            try:
                committed = consumer.committed(tps, timeout=timeout)
                break
            except KafkaException as error:
                if not (error.args[0].retriable() or error.args[0].code() in COORDINATOR_ERRORS):
                    raise
                if time.monotonic() > deadline:
                    return f"unknown: {error.args[0].str()}"
                time.sleep(0.5)
        if all(tp.offset < 0 for tp in committed):
            return None
        lag = 0
        for tp in committed:
            _, high = watermarks(consumer, tp.topic, [tp.partition], timeout)[tp.partition]
            lag += high - max(tp.offset, 0)
        return lag
    finally:
        consumer.close()


def loop_status(bootstrap: str, prefix: str, group: str) -> Status:
    """The state of the loop, read from Kafka (no worker needed)."""

    def names(*topics: Topic) -> list[str]:
        return [topic.full_name(prefix) for topic in topics]

    alerts = Counter(
        alert.model for alert in read_all(bootstrap, DRIFT_ALERTS, prefix) if isinstance(alert, DriftAlert)
    )
    lag = {
        "join": group_lag(bootstrap, f"{prefix}{group}-join", names(PREDICTIONS, OUTCOMES)),
        "learn": group_lag(bootstrap, f"{prefix}{group}-learner", names(TRAINING_EXAMPLES, MODEL_COMMANDS)),
        "archive": group_lag(bootstrap, f"{prefix}{group}-archive", names(*ARCHIVED_TOPICS)),
    }
    health = {h.model: h for h in read_all(bootstrap, MODEL_HEALTH, prefix) if isinstance(h, ModelHealth)}
    return Status(published_versions(bootstrap, prefix), health, alerts, lag)
