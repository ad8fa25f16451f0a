"""What ``adaptloop status`` shows: each model's current version and metrics, alerts, and each role's lag."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from confluent_kafka import Consumer, TopicPartition

from schemas.system import ModelVersion
from schemas.topics import DRIFT_ALERTS, MODEL_COMMANDS, OUTCOMES, PREDICTIONS, TRAINING_EXAMPLES, Topic
from snapshots.snapshot import ARCHIVED_TOPICS
from streams.producer import KAFKA_LOG
from streams.versions import published_versions, read_all


@dataclass(frozen=True)
class Status:
    versions: dict[str, ModelVersion]
    drift_alerts: Counter  # model -> alerts
    lag: dict[str, int | None]  # role -> records its group has not committed yet (None: the group never committed)


def group_lag(bootstrap: str, group: str, topics: list[str], timeout: float = 10.0) -> int | None:
    """Records behind the end of ``topics`` for consumer ``group`` (by its committed offsets)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False},
                        logger=KAFKA_LOG)
    try:
        metadata = consumer.list_topics(timeout=timeout).topics
        tps = [TopicPartition(t, p) for t in topics if t in metadata for p in metadata[t].partitions]
        committed = consumer.committed(tps, timeout=timeout)
        if all(tp.offset < 0 for tp in committed):
            return None
        lag = 0
        for tp in committed:
            _, high = consumer.get_watermark_offsets(tp, timeout=timeout)
            lag += high - max(tp.offset, 0)
        return lag
    finally:
        consumer.close()


def loop_status(bootstrap: str, prefix: str, group: str) -> Status:
    """The state of the loop, read from Kafka (no worker needed)."""
    def names(*topics: Topic) -> list[str]:
        return [topic.full_name(prefix) for topic in topics]

    alerts = Counter(alert.model for alert in read_all(bootstrap, DRIFT_ALERTS, prefix))
    lag = {
        "join": group_lag(bootstrap, f"{prefix}{group}-join", names(PREDICTIONS, OUTCOMES)),
        "learn": group_lag(bootstrap, f"{prefix}{group}-learner", names(TRAINING_EXAMPLES, MODEL_COMMANDS)),
        "archive": group_lag(bootstrap, f"{prefix}{group}-archive", names(*ARCHIVED_TOPICS)),
    }
    return Status(published_versions(bootstrap, prefix), alerts, lag)
