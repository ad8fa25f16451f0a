"""What ``adaptloop status`` shows: each model's current version and metrics, alerts, and each
role's lag."""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import duckdb
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from adaptloop.schemas.errors import AdaptloopError
from adaptloop.schemas.system import DriftAlert, ModelHealth, ModelVersion
from adaptloop.schemas.topics import (
    DRIFT_ALERTS,
    MODEL_COMMANDS,
    MODEL_HEALTH,
    MODEL_UPDATES,
    OUTCOMES,
    PREDICTIONS,
    TRAINING_EXAMPLES,
    Topic,
)
from adaptloop.snapshots.replay import SWAPS, model_history
from adaptloop.snapshots.snapshot import ARCHIVED_TOPICS
from adaptloop.streams.connection import ConnectionLike, KafkaConnection
from adaptloop.streams.reader import topic_ends as ends_of_topics
from adaptloop.streams.reader import watermarks
from adaptloop.streams.versions import read_all

log = logging.getLogger(__name__)

COORDINATOR_ERRORS = frozenset(
    {
        KafkaError.NOT_COORDINATOR,
        KafkaError.COORDINATOR_NOT_AVAILABLE,
        KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
        KafkaError._TIMED_OUT,
    }
)
"""A group's coordinator moving or loading (or a new broker creating its offsets topic): asked
again."""


@dataclass(frozen=True)
class Status:
    # model -> its latest record on model-updates (the version it serves)
    versions: dict[str, ModelVersion]
    # model -> the record that describes the served version itself: its own record (what it had
    # learned and scored when it was made) for a version swapped in by a rollback or promotion,
    # whose latest record carries the stream's figures; None where that record is gone (compacted
    # away and not archived).
    own: dict[str, ModelVersion | None]
    health: dict[str, ModelHealth]  # model -> its latest health, as its learner published it
    drift_alerts: Counter[str]  # model -> alerts
    # role -> records its group has not committed yet (None: the group never committed; str: why
    # unknown)
    lag: dict[str, int | str | None]


def group_lag(
    connection: ConnectionLike, group: str, topics: list[str], timeout: float = 10.0
) -> int | str | None:
    """Records behind the end of ``topics`` for consumer ``group`` (by its committed offsets); None
    if the group never committed, or why the broker could not say (its coordinator moving or
    loading, past a few retries)."""
    consumer = KafkaConnection.of(connection).group_consumer(group, **{"enable.auto.commit": False})
    try:
        metadata = consumer.list_topics(timeout=timeout).topics
        tps = [
            TopicPartition(t, p) for t in topics if t in metadata for p in metadata[t].partitions
        ]
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


def own_records(
    records: list[ModelVersion], archive_root: Path | str | None, prefix: str
) -> dict[str, ModelVersion | None]:
    """For each model, the record of its current version (the last of ``records``, in topic order)
    as made.

    A rollback or promotion publishes the version it swaps in again, with the learner's running
    figures (the stream's examples and metrics, from which learning goes on). What that version
    itself had learned and scored is in the record that first published it (see
    :func:`first_published`): on ``model-updates`` while compaction keeps it, in the archive
    (``archive_root``) for ever.
    """
    latest = {record.model: record for record in records}
    own: dict[str, ModelVersion | None] = {}
    for model, current in latest.items():
        if current.reason not in SWAPS:
            own[model] = current
            continue
        history = [record for record in records if record.model == model]
        own[model] = first_published(history, current.version) or _archived_record(
            archive_root, prefix, model, current.version
        )
    return own


def first_published(history: list[ModelVersion], version: str) -> ModelVersion | None:
    """The record that first published ``version`` in ``history`` (one model's records, in
    publication order), or None if ``history`` lacks it.

    That is the first record that learned it; or else the swap that brought it, when ``history``
    holds every numbered record up to it: a challenger's promotion publishes the version it
    promotes for the first time. A history with numbers missing (compacted) may have lost the
    version's first record, which only the archive then has.

    >>> def record(sequence, version, reason):
    ...     return ModelVersion(model="m", version=version * 16, sequence=sequence, reason=reason,
    ...                         examples_seen=sequence * 100, sha256="ab" * 32, uri="u", size_bytes=1)
    >>> learned = [record(1, "a", "initial"), record(2, "b", "checkpoint")]
    >>> first_published([*learned, record(3, "a", "rollback")], "a" * 16).examples_seen
    100
    >>> first_published([*learned, record(3, "c", "promotion")], "c" * 16).reason
    'promotion'
    >>> first_published([learned[1], record(3, "c", "promotion")], "c" * 16) is None
    True
    """
    records = [record for record in history if record.version == version]
    learned = next((record for record in records if record.reason not in SWAPS), None)
    if learned is not None or not records:
        return learned
    numbers = {record.sequence or 0 for record in history}
    return records[0] if numbers == set(range(1, len(numbers) + 1)) else None


def _archived_record(
    archive_root: Path | str | None, prefix: str, model: str, version: str
) -> ModelVersion | None:
    """The archived record that first published ``version`` of ``model`` (None if the archive has
    none)."""
    if archive_root is None:
        return None
    try:
        history = model_history(archive_root, model, prefix)
    # an archive out of reach: the figures are unknown
    except (duckdb.Error, OSError, AdaptloopError) as error:
        log.warning(
            "cannot read %s's record of %s from the archive %s: %s",
            model,
            version,
            archive_root,
            error,
        )
        return None
    return first_published(history, version)


def loop_status(
    connection: ConnectionLike, prefix: str, group: str, archive_root: Path | str | None = None
) -> Status:
    """The state of the loop, read from Kafka (no worker needed); the archive at ``archive_root`` is
    read for the records of versions a rollback or promotion swapped back in (see
    :func:`own_records`)."""

    def names(*topics: Topic) -> list[str]:
        return [topic.full_name(prefix) for topic in topics]

    alerts = Counter(
        alert.model
        for alert in read_all(connection, DRIFT_ALERTS, prefix)
        if isinstance(alert, DriftAlert)
    )
    lag = {
        "join": group_lag(connection, f"{prefix}{group}-join", names(PREDICTIONS, OUTCOMES)),
        "learn": group_lag(
            connection, f"{prefix}{group}-learner", names(TRAINING_EXAMPLES, MODEL_COMMANDS)
        ),
        "archive": group_lag(connection, f"{prefix}{group}-archive", names(*ARCHIVED_TOPICS)),
    }
    health = {
        h.model: h for h in read_all(connection, MODEL_HEALTH, prefix) if isinstance(h, ModelHealth)
    }
    records = [
        r for r in read_all(connection, MODEL_UPDATES, prefix) if isinstance(r, ModelVersion)
    ]
    versions = {record.model: record for record in records}
    return Status(versions, own_records(records, archive_root, prefix), health, alerts, lag)


@dataclass(frozen=True)
class ArchiveCut:
    """How far the archive holds a topic: per partition, the next offset it holds, and the topic's
    end."""

    topic: str
    archived: dict[int, int]  # partition -> the next offset the archive holds
    ends: dict[int, int]  # partition -> the topic's end offset
    waiting: frozenset[int]  # partitions with committed records past the archive's cut

    @property
    def behind(self) -> int:
        """Offsets past the archive's cut: records, and the markers of transactions (which are never
        archived)."""
        return sum(
            max(0, end - self.archived.get(partition, 0)) for partition, end in self.ends.items()
        )


def topic_ends(
    connection: ConnectionLike, names: list[str], timeout: float = 10.0
) -> dict[str, dict[int, int]]:
    """The end offset of each partition of each topic in ``names`` (a topic that does not exist:
    none)."""
    return ends_of_topics(KafkaConnection.of(connection), names, timeout)


def archive_cuts(
    connection: ConnectionLike,
    archived: dict[str, dict[int, int]],
    ends: dict[str, dict[int, int]],
    timeout: float = 10.0,
) -> list[ArchiveCut]:
    """For each topic of ``archived`` (topic -> partition -> next offset archived), how it stands
    against ``ends`` (the topics' ends when asked): which partitions hold committed records the
    archive has not.

    An end offset alone cannot say: a transaction's commit marker takes an offset too, and is never
    archived. So a partition behind its end is read from the archive's cut, read-committed, for the
    first record before the end; one not read to a verdict within ``timeout`` counts as waiting.
    """
    todo = {
        (name, partition): end
        for name, partitions in ends.items()
        for partition, end in partitions.items()
        if archived.get(name, {}).get(partition, 0) < end
    }
    connection = KafkaConnection.of(connection)
    waiting: set[tuple[str, int]] = set()
    deadline = time.monotonic() + timeout
    for name in {name for name, _ in todo}:
        behind = {p: end for (n, p), end in todo.items() if n == name}
        start = {p: archived.get(name, {}).get(p, 0) for p in behind}
        with connection.reader(name, start=start) as reader:
            for message in reader.to_end(max(deadline - time.monotonic(), 1.0), until=behind):
                # a committed record the archive has not
                waiting.add((name, message.partition() or 0))
                reader.skip(message.partition() or 0)
            waiting |= {(name, p) for p in reader.unfinished}  # not read to a verdict: waiting
    return [
        ArchiveCut(
            name,
            archived.get(name, {}),
            ends.get(name, {}),
            frozenset(p for n, p in waiting if n == name),
        )
        for name in archived
    ]
