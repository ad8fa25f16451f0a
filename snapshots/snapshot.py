"""Point-in-time DuckDB snapshots: what the archive and the model store held at one moment.

A snapshot is a small DuckDB file an analyst opens read-only (``duckdb -readonly
FILE``) while the worker keeps running. It holds

- ``manifest``: per topic and partition, the offset after the last archived record
  and the number of rows below it: the snapshot's exact cut of each stream;
- one view per topic (``predictions``, ``training_examples``, ``model_updates``...) over
  the Parquet archive, cut at the manifest's offsets, so files archived later never
  show up; ``archive_errors`` lists the records that could not be decoded, with why;
- ``model_catalogue``: every model version in the store with its hash, size, bytes and when it was
  last stored (the store keeps each model's newest ``keep_versions``);
- ``snapshot_info``: when, from where, by which adaptloop.

The Parquet files stay where they are (the views name them), so a snapshot is
cheap to take; it is never written again after it is created. A self-contained
snapshot copies the rows instead, and opens anywhere; a snapshot of an archive in an
object store is always one (DuckDB reads such files through a connection's dataset,
which a view cannot keep).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import version as package_version
from pathlib import Path

import duckdb
import pyarrow as pa

from adaptloop.learners.storage import Storage
from adaptloop.schemas.topics import (
    AGENT_FEEDBACK,
    DEAD_LETTER_REPLAYS,
    DEAD_LETTERS,
    DRIFT_ALERTS,
    GUARDRAIL_ALERTS,
    MODEL_COMMANDS,
    MODEL_HEALTH,
    MODEL_SPECS,
    MODEL_UPDATES,
    OUTCOMES,
    PREDICTIONS,
    PREFERENCE_STORE,
    PREFERENCES,
    TRAINING_EXAMPLES,
    Topic,
)
from adaptloop.snapshots.archive import ParquetArchive
from adaptloop.snapshots.columns import arrow_schema

ARCHIVED_TOPICS: tuple[Topic, ...] = (
    PREDICTIONS,
    OUTCOMES,
    TRAINING_EXAMPLES,
    AGENT_FEEDBACK,
    PREFERENCES,
    MODEL_UPDATES,
    MODEL_COMMANDS,
    MODEL_SPECS,
    PREFERENCE_STORE,
    DRIFT_ALERTS,
    MODEL_HEALTH,
    GUARDRAIL_ALERTS,
    DEAD_LETTERS,
    DEAD_LETTER_REPLAYS,
)
"""Every event topic; only the join's internal clock is not archived."""

SESSIONS = """
WITH alerts AS (SELECT session_id, count(*) AS alerts, string_agg(DISTINCT rule, ', ') AS alert_rules
                FROM guardrail_alerts WHERE session_id IS NOT NULL GROUP BY ALL)
SELECT f.session_id, any_value(f.agent) AS agent, string_agg(DISTINCT f.variant, ', ') AS variants,
       any_value(f.tenant) AS tenant, any_value(f.user_id) AS user_id,
       min(f.timestamp) AS started, max(f.timestamp) AS ended, count(DISTINCT f.run_id) AS runs,
       count(*) FILTER (kind = 'step') AS steps, sum(f.cost) AS cost, sum(f.tokens) AS tokens,
       sum(f.latency_ms) AS latency_ms,
       count(*) FILTER (kind = 'thumbs' AND value IN ('1.0', '1', 'true')) AS thumbs_up,
       count(*) FILTER (kind = 'thumbs' AND value IN ('-1.0', '-1', 'false')) AS thumbs_down,
       avg(TRY_CAST(value AS DOUBLE)) FILTER (kind = 'rating') AS rating,
       coalesce(any_value(a.alerts), 0) AS alerts, any_value(a.alert_rules) AS alert_rules
FROM agent_feedback f LEFT JOIN alerts a USING (session_id)
GROUP BY f.session_id ORDER BY started
"""
"""One row per agent session: its agent and variants, when, its steps with their cost, tokens and
latency, its feedback and its guardrail alerts (`adaptloop audit session` gives one session's
timeline)."""

PREFERENCE_VARIANTS = """
WITH records AS (
    SELECT agent, part, parts, segments, _offset,
           substr(split_part(shard, '/', 1), length(agent) + 2) AS input_shard,
           (offsets::JSON ->> substr(split_part(shard, '/', 1), length(agent) + 2))::BIGINT AS position
    FROM preference_store
), parts AS (  -- one record per part of each publication (a part sent again counts once)
    SELECT * FROM records
    QUALIFY row_number() OVER (PARTITION BY agent, input_shard, position, part ORDER BY _offset DESC) = 1
), newest AS (  -- the newest complete publication of each shard
    SELECT agent, input_shard, max(position) AS position
    FROM (SELECT agent, input_shard, position FROM parts GROUP BY ALL HAVING count(*) = any_value(parts))
    GROUP BY ALL
), cells AS (
    SELECT p.agent, segment.key AS segment, variant.key AS variant, variant.value AS stats
    FROM parts p JOIN newest USING (agent, input_shard, position), json_each(p.segments) segment,
         json_each(segment.value) variant
)
SELECT agent, segment, variant,
       sum((stats ->> 'ups')::DOUBLE) AS ups, sum((stats ->> 'downs')::DOUBLE) AS downs,
       (1 + ups) / (2 + ups + downs) AS thumbs_posterior_mean,
       sum((stats ->> 'ratings')::BIGINT) AS ratings,
       sum((stats ->> 'ratings')::BIGINT * (stats ->> 'rating_mean')::DOUBLE) / nullif(ratings, 0) AS rating_mean
FROM cells GROUP BY ALL ORDER BY agent, segment, variant
"""
"""The preference store as the agents' clients see it: each shard's newest complete publication,
merged (counts add up), per agent, segment and variant; the thumbs posterior is Beta(1 + ups, 1 +
downs), its mean here."""


def table_name(topic: Topic) -> str:
    """The SQL name of a topic's view: ``training-examples`` -> ``training_examples``."""
    return topic.name.replace("-", "_")


@dataclass(frozen=True)
class SnapshotInfo:
    path: Path
    created_at: datetime
    rows: dict[str, int]  # topic -> rows in the snapshot (errors included)
    offsets: dict[str, dict[int, int]]  # topic -> partition -> next offset


def create_snapshot(
    archive_root: Path | str,
    models_root: Path | str | None,
    out: Path,
    *,
    prefix: str = "",
    topics: Iterable[Topic] = ARCHIVED_TOPICS,
    include_model_bytes: bool = True,
    self_contained: bool = False,
) -> SnapshotInfo:
    """Write a snapshot of the archive (and the model store) to ``out``, atomically.

    ``self_contained``: the rows are copied into the file (tables instead of views over the
    archive), so it opens on any machine, without the archive: one to hand to a colleague or keep
    with an audit. A snapshot of an archive in an object store always is.

    >>> import tempfile
    >>> from adaptloop.schemas.topics import OUTCOMES
    >>> from adaptloop.snapshots.columns import RawRecord
    >>> root = Path(tempfile.mkdtemp())
    >>> _ = ParquetArchive(root / "archive").write(OUTCOMES, "outcomes", 0, [
    ...     RawRecord(0, 0, 0, b"d1", b'{"decision_id": "d1", "label": true, "source": "s"}')])
    >>> info = create_snapshot(root / "archive", None, root / "s.duckdb", topics=[OUTCOMES])
    >>> info.rows, info.offsets
    ({'outcomes': 1}, {'outcomes': {0: 1}})
    >>> duckdb.connect(str(info.path), read_only=True).sql("SELECT decision_id, label FROM outcomes").fetchall()
    [('d1', 'true')]
    """
    # a fresh look at the files: the cut is what is stored now
    archive = ParquetArchive(archive_root)
    self_contained = self_contained or archive.storage.remote
    kind = "TABLE" if self_contained else "VIEW"
    created_at = datetime.now(UTC)
    out.parent.mkdir(parents=True, exist_ok=True)
    temp = out.with_name(f".{out.name}.tmp")
    temp.unlink(missing_ok=True)
    rows: dict[str, int] = {}
    offsets: dict[str, dict[int, int]] = {}
    with duckdb.connect(str(temp)) as db:
        db.execute(
            "CREATE TABLE manifest (topic VARCHAR, partition INTEGER, next_offset BIGINT, "
            "rows BIGINT, "
            "PRIMARY KEY (topic, partition))"
        )
        error_selects = []
        for topic in topics:
            name = topic.full_name(prefix)
            offsets[name] = dict(sorted(archive.next_offsets(name).items()))
            view = table_name(topic)
            if not offsets[name]:
                db.register("empty_topic", pa.Table.from_pylist([], schema=arrow_schema(topic)))
                db.execute(
                    f"CREATE TABLE {view} AS SELECT * EXCLUDE (_value, _error) FROM empty_topic"
                )
                db.unregister("empty_topic")
                rows[name] = 0
                continue
            db.executemany(
                "INSERT INTO manifest VALUES (?, ?, ?, 0)",
                [
                    (name, partition, next_offset)
                    for partition, next_offset in offsets[name].items()
                ],
            )
            source = (
                f"(SELECT a.* FROM {archive.rows_sql(db, name)} a JOIN manifest m "
                "ON m.topic = a._topic AND m.partition = a._partition AND a._offset < "
                "m.next_offset)"
            )
            db.execute(
                f"CREATE {kind} {view} AS SELECT * EXCLUDE (_value, _error) FROM "
                f"{source} WHERE _error IS NULL"
            )
            error_selects.append(
                f"SELECT _topic, _partition, _offset, _kafka_timestamp, _error, _key, _value "
                f"FROM {source} WHERE _error IS NOT NULL"
            )
            counts = db.execute(
                f"SELECT _partition, count(*) FROM {source} GROUP BY ALL"
            ).fetchall()
            db.executemany(
                "UPDATE manifest SET rows = ? WHERE topic = ? AND partition = ?",
                [(count, name, partition) for partition, count in counts],
            )
            rows[name] = sum(count for _, count in counts)
        if error_selects:
            db.execute(f"CREATE {kind} archive_errors AS " + " UNION ALL ".join(error_selects))
        if PREFERENCE_STORE in topics:
            db.execute(f"CREATE VIEW preference_variants AS {PREFERENCE_VARIANTS}")
        if AGENT_FEEDBACK in topics and GUARDRAIL_ALERTS in topics:
            db.execute(f"CREATE VIEW sessions AS {SESSIONS}")
        _write_catalogue(db, models_root, include_model_bytes)
        db.execute(
            "CREATE TABLE snapshot_info AS SELECT ?::TIMESTAMPTZ AS created_at, ? AS "
            "archive, ? AS models, "
            "? AS topic_prefix, ? AS adaptloop_version",
            [
                created_at,
                archive.storage.root,
                Storage(models_root).root if models_root else None,
                prefix,
                package_version("adaptloop"),
            ],
        )
        db.execute("CHECKPOINT")
    os.replace(temp, out)
    return SnapshotInfo(out, created_at, rows, offsets)


def _write_catalogue(
    db: duckdb.DuckDBPyConnection, models_root: Path | str | None, include_bytes: bool
) -> None:
    db.execute(
        "CREATE TABLE model_catalogue (model VARCHAR, version VARCHAR, sha256 VARCHAR, "
        "size_bytes BIGINT, "
        "stored_at TIMESTAMPTZ, bytes BLOB, PRIMARY KEY (model, version))"
    )
    if models_root is None:
        return
    storage = Storage(models_root)
    for model in storage.directories():
        for key, stored_ns in storage.files(f"{model}/versions", ".pkl"):
            data = storage.read(key)
            db.execute(
                "INSERT INTO model_catalogue VALUES (?, ?, ?, ?, ?, ?)",
                [
                    model,
                    key.rsplit("/", 1)[1].removesuffix(".pkl"),
                    hashlib.sha256(data).hexdigest(),
                    len(data),
                    datetime.fromtimestamp(stored_ns / 1e9, tz=UTC),
                    data if include_bytes else None,
                ],
            )


def snapshot_name(when: datetime) -> str:
    """``snapshot-20261124T101500Z.duckdb``: names sort by time."""
    return f"snapshot-{when.astimezone(UTC):%Y%m%dT%H%M%S}Z.duckdb"


def prune_snapshots(directory: Path, keep: int) -> list[Path]:
    """Delete all but the newest ``keep`` snapshots in ``directory`` (by their names' time); return
    those deleted.

    >>> import tempfile
    >>> directory = Path(tempfile.mkdtemp())
    >>> for name in ("snapshot-20261124T101500Z.duckdb", "snapshot-20261124T102500Z.duckdb",
    ...              "snapshot-20261124T103500Z.duckdb", "audit-march.duckdb"):
    ...     _ = (directory / name).write_bytes(b"")
    >>> [path.name for path in prune_snapshots(directory, keep=2)]
    ['snapshot-20261124T101500Z.duckdb']
    >>> sorted(path.name for path in directory.iterdir())  # other files are not the worker's to delete
    ['audit-march.duckdb', 'snapshot-20261124T102500Z.duckdb', 'snapshot-20261124T103500Z.duckdb']
    """
    found = sorted(directory.glob("snapshot-*.duckdb"))
    deleted = found[: max(0, len(found) - keep)]
    for path in deleted:
        path.unlink(missing_ok=True)
    return deleted


def latest_snapshot(directory: Path) -> Path | None:
    """The newest snapshot in ``directory``, if any."""
    found = sorted(directory.glob("snapshot-*.duckdb"))
    return found[-1] if found else None
