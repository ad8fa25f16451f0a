"""The archive agent: every event topic into the Parquet archive, in micro-batches, exactly once.

Like the learner it uses the consumer helper's client (confluent-kafka) rather than
faust, because exactly-once here needs to choose where each partition starts. After
each file it commits the offset after the file's last record; on assignment each
partition starts from its committed offset (or from the files, for a partition never
committed, or where files end before it), and any file beyond that start is set aside
and written again: a file planted under a forged name cannot make the archiver skip
records. A crash loses at most the unwritten buffer, which is read again. Aborted
transactions are never archived (``read_committed``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from adaptloop.schemas.topics import Topic
from adaptloop.snapshots.archive import ParquetArchive
from adaptloop.snapshots.columns import RawRecord
from adaptloop.snapshots.snapshot import (
    ARCHIVED_TOPICS,
    create_snapshot,
    prune_snapshots,
    snapshot_name,
)
from adaptloop.streams.connection import ConnectionLike, KafkaConnection
from adaptloop.streams.consumer import position_of
from adaptloop.streams.metrics import ARCHIVED, EVENTS_IN, record_lag

log = logging.getLogger(__name__)


class ArchiveSettings(Protocol):
    """What the archive reads of the worker's settings (:class:`adaptloop.settings.Settings` has it
    all)."""

    group: str
    archive_flush_seconds: float
    archive_flush_rows: int
    archive_buffer_rows: int
    snapshot_seconds: float | None
    keep_snapshots: int | None

    @property
    def archive_location(self) -> str: ...

    @property
    def snapshots_dir(self) -> Path: ...

    @property
    def models_location(self) -> str: ...


class ArchiveAgent:
    """Buffers records per partition and writes one Parquet file per partition when ``flush_rows``
    have come or ``flush_seconds`` have passed, and all of them when ``buffer_rows`` are buffered in
    all.

    Typical use (needs a broker)::

        ArchiveAgent("localhost:9092", archive=ParquetArchive("/var/lib/adaptloop/archive")).run(stop)
    """

    @classmethod
    def from_settings(cls, settings: ArchiveSettings, connection: KafkaConnection) -> ArchiveAgent:
        """The archive of the worker ``settings`` describe, its topics prefixed as ``connection``
        says.

        An archive in an object store takes no periodic snapshots (each would copy every archived
        row).
        """
        archive = ParquetArchive(settings.archive_location)
        snapshot_seconds = settings.snapshot_seconds
        if archive.storage.remote and snapshot_seconds is not None:
            log.info(
                "the archive is in an object store: this worker takes no periodic snapshots "
                "(each would copy "
                "every archived row); take one where it is needed with `adaptloop snapshot create`"
            )
            snapshot_seconds = None
        return cls(
            connection,
            archive=archive,
            prefix=connection.topic_prefix,
            group=f"{settings.group}-archive",
            flush_seconds=settings.archive_flush_seconds,
            flush_rows=settings.archive_flush_rows,
            buffer_rows=settings.archive_buffer_rows,
            snapshot_dir=settings.snapshots_dir,
            models_dir=settings.models_location,
            snapshot_seconds=snapshot_seconds,
            keep_snapshots=settings.keep_snapshots,
        )

    def __init__(
        self,
        connection: ConnectionLike,
        *,
        archive: ParquetArchive,
        prefix: str = "",
        group: str = "adaptloop-archive",
        flush_seconds: float = 60.0,
        flush_rows: int = 50_000,
        buffer_rows: int = 200_000,
        snapshot_dir: Path | None = None,
        models_dir: Path | str | None = None,
        snapshot_seconds: float | None = None,
        keep_snapshots: int | None = None,
    ) -> None:
        self.archive = archive
        self.prefix = prefix
        self.flush_seconds = flush_seconds
        self.flush_rows = flush_rows
        self.buffer_rows = buffer_rows
        self.snapshot_dir, self.models_dir, self.snapshot_seconds = (
            snapshot_dir,
            models_dir,
            snapshot_seconds,
        )
        self.keep_snapshots = keep_snapshots
        self._last_snapshot = time.monotonic()
        self._lag_recorded_at = 0.0
        self.topics: dict[str, Topic] = {
            topic.full_name(prefix): topic for topic in ARCHIVED_TOPICS
        }
        self.buffers: dict[tuple[str, int], list[RawRecord]] = defaultdict(list)
        self.buffered_since: dict[tuple[str, int], float] = {}
        self.written_rows = 0
        removed = archive.remove_partial_files()
        if removed:
            log.warning("removed %d partial archive files left by a crash", removed)
        self.consumer = KafkaConnection.of(connection).group_consumer(
            f"{prefix}{group}",
            **{
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "isolation.level": "read_committed",
                "partition.assignment.strategy": "range",
                "session.timeout.ms": 10_000,
                "heartbeat.interval.ms": 2_000,
            },
        )
        self.consumer.subscribe(
            list(self.topics), on_assign=self._on_assign, on_revoke=self._on_revoke
        )

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # another owner may have written
        self.archive = ParquetArchive(self.archive.root, self.archive.compression)
        committed = consumer.committed(partitions, timeout=30)
        for tp, done in zip(partitions, committed, strict=True):
            on_disk = self.archive.next_offsets(tp.topic).get(tp.partition, 0)
            start = min(done.offset, on_disk) if done.offset >= 0 else on_disk
            aside = self.archive.resume(tp.topic, tp.partition, start)
            if aside:
                log.warning(
                    "%s[%d]: %d archive file(s) beyond the committed offset %d set aside "
                    "(%s); their records are "
                    "archived again from Kafka",
                    tp.topic,
                    tp.partition,
                    len(aside),
                    start,
                    ", ".join(key.rsplit("/", 1)[-1] for key in aside),
                )
            tp.offset = start if start > 0 else OFFSET_BEGINNING
        consumer.assign(partitions)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.flush(force=True)
        consumer.unassign()

    def step(self, max_records: int = 5000, timeout: float = 0.5) -> int:
        """Read one batch into the buffers and write what is due; return the records read."""
        messages = self.consumer.consume(max_records, timeout)
        now = time.monotonic()
        read: Counter[str] = Counter()
        for message in messages:
            error = message.error()
            if error is not None:
                if error.fatal():
                    raise KafkaException(error)
                if error.code() != KafkaError._PARTITION_EOF:
                    log.warning("archive consumer: %s", error.str())
                continue
            topic_name, partition, offset = position_of(message)
            key = (topic_name, partition)
            _, stamp = message.timestamp()
            self.buffers[key].append(
                RawRecord(
                    partition, offset, stamp if stamp > 0 else None, message.key(), message.value()
                )
            )
            self.buffered_since.setdefault(key, now)
            read[key[0]] += 1
        # counted per batch: a labelled metric costs microseconds
        for topic_name, count in read.items():
            EVENTS_IN.labels("archive", topic_name).inc(count)
        # Every buffer is written once they hold buffer_rows in all: memory is bounded whatever the
        # number of topics and partitions (flush_rows alone would allow flush_rows for each).
        self.flush(force=sum(map(len, self.buffers.values())) >= self.buffer_rows)
        self._snapshot_if_due()
        if now - self._lag_recorded_at > 10:
            record_lag("archive", self.consumer)
            self._lag_recorded_at = now
        return sum(read.values())

    def flush(self, force: bool = False) -> int:
        """Write every buffer that is full, old enough, or all of them if ``force``; return rows
        written."""
        now = time.monotonic()
        written = 0
        done: list[TopicPartition] = []
        for key in list(self.buffers):
            records = self.buffers[key]
            if records and (
                force
                or len(records) >= self.flush_rows
                or now - self.buffered_since[key] >= self.flush_seconds
            ):
                topic_name, partition = key
                if (
                    self.archive.write(self.topics[topic_name], topic_name, partition, records)
                    is not None
                ):
                    written += len(records)
                    ARCHIVED.labels(topic_name).inc(len(records))
                done.append(TopicPartition(topic_name, partition, records[-1].offset + 1))
                del self.buffers[key], self.buffered_since[key]
        if done:
            self.written_rows += written
            self.consumer.commit(offsets=done, asynchronous=False)  # where the archive resumes
        return written

    def _snapshot_if_due(self) -> None:
        if self.snapshot_seconds is None or self.snapshot_dir is None:
            return
        if time.monotonic() - self._last_snapshot >= self.snapshot_seconds:
            self._last_snapshot = time.monotonic()
            path = self.snapshot_dir / snapshot_name(datetime.now(UTC))
            info = create_snapshot(self.archive.root, self.models_dir, path, prefix=self.prefix)
            log.info("snapshot %s: %d rows", info.path, sum(info.rows.values()))
            if self.keep_snapshots is not None:
                for old in prune_snapshots(self.snapshot_dir, self.keep_snapshots):
                    log.info("snapshot %s deleted (keep_snapshots=%d)", old, self.keep_snapshots)

    def run(self, stop: threading.Event | None = None) -> None:
        """Archive until ``stop`` is set; write every buffer on the way out."""
        stop = stop or threading.Event()
        try:
            while not stop.is_set():
                self.step()
            self.flush(force=True)
        finally:
            self.consumer.close()
