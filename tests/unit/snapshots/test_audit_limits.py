"""Audit queries are bounded: one that runs too long or takes too much memory is stopped with an
error naming the limit and its setting, and the next query on the same snapshot is answered."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from adaptloop.samples import sample_events
from adaptloop.schemas import OutcomeEvent, encode
from adaptloop.schemas.errors import LimitExceeded
from adaptloop.schemas.topics import OUTCOMES
from adaptloop.settings import Settings
from adaptloop.snapshots.archive import ParquetArchive
from adaptloop.snapshots.audit import AUDIT_MEMORY_MB, AUDIT_SECONDS, run_audit
from adaptloop.snapshots.columns import RawRecord
from adaptloop.snapshots.snapshot import create_snapshot

ROWS = 2000
# 1.6e13 rows
CROSS_JOIN = "SELECT count(*) AS n FROM outcomes a, outcomes b, outcomes c, outcomes d"
MARGIN = 20.0  # seconds past the limit, for a loaded machine: the query alone would run for hours


@pytest.fixture
def snapshot(tmp_path):
    archive = ParquetArchive(tmp_path / "archive")
    events = sample_events(OutcomeEvent, ROWS, seed=1)
    archive.write(
        OUTCOMES,
        "outcomes",
        0,
        [
            RawRecord(0, i, 1_767_225_600_000 + i, e.decision_id.encode(), encode(e))
            for i, e in enumerate(events)
        ],
    )
    return create_snapshot(
        tmp_path / "archive", None, tmp_path / "s.duckdb", topics=[OUTCOMES]
    ).path


def test_a_cross_join_is_stopped_at_the_time_limit_and_the_snapshot_still_answers(snapshot):
    started = time.monotonic()
    with pytest.raises(
        LimitExceeded,
        match=r"ran longer than 1 s .* audit_seconds "
        r"\(ADAPTLOOP_AUDIT_SECONDS\)",
    ):
        run_audit(snapshot, CROSS_JOIN, seconds=1)
    assert time.monotonic() - started < 1 + MARGIN
    assert run_audit(snapshot, "SELECT count(*) AS n FROM outcomes", seconds=1).to_pylist() == [
        {"n": ROWS}
    ]


def test_a_query_over_the_memory_limit_is_stopped_in_duckdb_or_in_its_result(snapshot):
    distinct = (
        "SELECT count(DISTINCT a.decision_id || b.decision_id) AS n FROM outcomes a, outcomes b"
    )
    memory = r"more than 16 MB of memory .* audit_memory_mb \(ADAPTLOOP_AUDIT_MEMORY_MB"
    with pytest.raises(LimitExceeded, match=memory):
        run_audit(snapshot, distinct, memory_mb=16)  # DuckDB's hash table of 4 million strings
    rows = "SELECT a.decision_id, b.decision_id AS other FROM outcomes a, outcomes b"
    with pytest.raises(LimitExceeded, match=r"returned more than 16 MB of rows .* audit_memory_mb"):
        # 4 million rows, each cheap to make, read into the result
        run_audit(snapshot, rows, memory_mb=16)
    assert run_audit(
        snapshot, "SELECT count(*) AS n FROM outcomes a, outcomes b", memory_mb=16
    ).to_pylist() == [{"n": ROWS * ROWS}]


def test_the_cli_stops_a_query_at_the_configured_limit_and_answers_the_next(snapshot):
    env = {**os.environ, "ADAPTLOOP_AUDIT_SECONDS": "1", "COLUMNS": "200"}
    command = [sys.executable, "-m", "adaptloop", "audit", "--snapshot", str(snapshot)]
    stopped = subprocess.run(
        [*command, CROSS_JOIN], env=env, capture_output=True, text=True, timeout=120
    )
    assert stopped.returncode == 1, stopped.stdout + stopped.stderr
    assert "ran longer than 1 s" in stopped.stdout + stopped.stderr
    assert "ADAPTLOOP_AUDIT_SECONDS" in stopped.stdout + stopped.stderr
    answered = subprocess.run(
        [*command, "SELECT count(*) AS n FROM outcomes"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert answered.returncode == 0 and f"{ROWS}" in answered.stdout, (
        answered.stdout + answered.stderr
    )


def test_the_settings_default_to_the_audit_limits():
    assert (Settings().audit_seconds, Settings().audit_memory_mb) == (
        AUDIT_SECONDS,
        AUDIT_MEMORY_MB,
    )
