"""``adaptloop snapshot create`` says how far the archive had caught up with the topics, and
``--flush`` waits until it holds every record the topics had (transactions' commit markers, never
archived, do not count)."""

from __future__ import annotations

import threading
import uuid

import duckdb
import pytest
from typer.testing import CliRunner

from adaptloop.cli import app
from adaptloop.schemas import OutcomeEvent
from adaptloop.snapshots.archive import ParquetArchive
from adaptloop.streams import EventProducer, ensure_topics
from adaptloop.streams.archive_agent import ArchiveAgent

pytestmark = pytest.mark.kafka


def _row(output: str, topic: str) -> list[str]:
    line = next(line for line in output.splitlines() if line.startswith(f"│ {topic} "))
    return [cell.strip() for cell in line.strip("│ ").split("│")]


def test_snapshot_create_says_what_is_not_archived_and_flush_waits_for_it(
    kafka_bootstrap, tmp_path, monkeypatch
):
    prefix = f"fl{uuid.uuid4().hex[:8]}."
    ensure_topics(kafka_bootstrap, prefix=prefix, partitions=1)
    with EventProducer(
        kafka_bootstrap, topic_prefix=prefix, transactional_id=f"{prefix}t"
    ) as producer:
        # three transactions of ten: each ends with a commit marker, an offset of its own
        for i in range(30):
            producer.send(OutcomeEvent(decision_id=f"d{i}", label=True, source="test"))
            if i % 10 == 9:
                producer.commit_transaction()
    for env, value in {
        "BOOTSTRAP": kafka_bootstrap,
        "TOPIC_PREFIX": prefix,
        "HOME": str(tmp_path),
    }.items():
        monkeypatch.setenv(f"ADAPTLOOP_{env}", value)
    monkeypatch.setenv("ADAPTLOOP_ARCHIVE_FLUSH_SECONDS", "2")
    monkeypatch.setenv("COLUMNS", "300")
    outcomes = f"{prefix}outcomes"

    first = CliRunner().invoke(
        app, ["snapshot", "create", "--out", str(tmp_path / "before.duckdb")]
    )
    assert first.exit_code == 0, first.output
    assert _row(first.output, outcomes)[2:] == ["0", "-", "0:33", "33 (partitions 0)"]
    assert f"the archive had not caught up with 1 topic(s) ({outcomes})" in first.output
    assert "every 2s (archive_flush_seconds)" in first.output

    agent = ArchiveAgent(
        kafka_bootstrap,
        archive=ParquetArchive(tmp_path / "archive"),
        prefix=prefix,
        group=f"{prefix}a",
        flush_seconds=2,
    )
    stop = threading.Event()
    archiving = threading.Thread(target=agent.run, args=(stop,))
    archiving.start()
    try:
        second = CliRunner().invoke(
            app,
            [
                "snapshot",
                "create",
                "--flush",
                "--flush-timeout",
                "300",
                "--out",
                str(tmp_path / "after.duckdb"),
            ],
        )
    finally:
        stop.set()
        archiving.join(60)
    assert second.exit_code == 0, second.output
    # Every record archived: the archive's cut is after the last record, one before the last commit
    # marker.
    assert _row(second.output, outcomes)[2:] == ["30", "0:32", "0:33", "0"]
    assert (
        "the archive held every record of the topics when the snapshot was taken" in second.output
    )
    with duckdb.connect(str(tmp_path / "after.duckdb"), read_only=True) as db:
        assert db.execute("SELECT count(DISTINCT decision_id) FROM outcomes").fetchone() == (30,)
