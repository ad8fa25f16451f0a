"""The archive role's periodic snapshots: written on time, the newest ``keep_snapshots`` kept."""

from __future__ import annotations

import time
import uuid

import duckdb
import pytest

from adaptloop.snapshots.archive import ParquetArchive
from adaptloop.streams import ensure_topics
from adaptloop.streams.archive_agent import ArchiveAgent

pytestmark = pytest.mark.kafka


def test_periodic_snapshots_keep_the_newest_and_leave_other_files(kafka_bootstrap, tmp_path):
    prefix = f"snap{uuid.uuid4().hex[:8]}."
    ensure_topics(kafka_bootstrap, prefix=prefix, partitions=1)
    snapshots = tmp_path / "snapshots"
    snapshots.mkdir()
    (snapshots / "kept-for-the-audit.duckdb").write_bytes(b"")
    agent = ArchiveAgent(
        kafka_bootstrap,
        archive=ParquetArchive(tmp_path / "archive"),
        prefix=prefix,
        group=f"g{uuid.uuid4().hex[:6]}",
        snapshot_dir=snapshots,
        snapshot_seconds=1.0,
        keep_snapshots=2,
    )
    written = set()
    try:
        # one a second (names have a second's resolution): 3 in a few seconds
        deadline = time.monotonic() + 120
        while len(written) < 3 and time.monotonic() < deadline:
            agent.step(timeout=0.1)
            written |= {path.name for path in snapshots.glob("snapshot-*.duckdb")}
    finally:
        agent.consumer.close()
    left = sorted(path.name for path in snapshots.glob("snapshot-*.duckdb"))
    assert len(written) >= 3 and left == sorted(written)[-2:]
    assert (snapshots / "kept-for-the-audit.duckdb").exists()
    with duckdb.connect(str(snapshots / left[-1]), read_only=True) as db:
        assert db.execute("SELECT count(*) FROM outcomes").fetchone() == (0,)


def test_buffers_are_written_once_they_hold_buffer_rows_in_all(kafka_bootstrap, tmp_path):
    from adaptloop.schemas import OutcomeEvent
    from adaptloop.streams import EventProducer

    prefix = f"buf{uuid.uuid4().hex[:8]}."
    ensure_topics(kafka_bootstrap, prefix=prefix, partitions=3)
    with EventProducer(kafka_bootstrap, topic_prefix=prefix) as producer:
        for i in range(2500):
            producer.send(OutcomeEvent(decision_id=f"d{i}", label=True, source="test"))
    archive = ParquetArchive(tmp_path / "archive")
    agent = ArchiveAgent(
        kafka_bootstrap,
        archive=archive,
        prefix=prefix,
        group=f"g{uuid.uuid4().hex[:6]}",
        flush_seconds=3600,
        flush_rows=1_000_000,
        buffer_rows=1000,
    )
    peak = 0
    try:
        deadline = time.monotonic() + 120
        while agent.written_rows < 2000 and time.monotonic() < deadline:
            agent.step(max_records=300, timeout=0.2)
            peak = max(peak, sum(map(len, agent.buffers.values())))
    finally:
        agent.consumer.close()
    # Neither a partition's flush_rows nor flush_seconds was reached: the total wrote them.
    assert agent.written_rows >= 2000 and peak < 1000
    name = f"{prefix}outcomes"
    with duckdb.connect() as db:
        rows = db.execute(
            f"SELECT count(*), count(DISTINCT (_partition, _offset)) FROM "
            f"read_parquet('{tmp_path}/archive/topic={name}/*/*.parquet')"
        ).fetchone()
    assert rows == (agent.written_rows, agent.written_rows)
