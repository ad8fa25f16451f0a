"""Audit SQL over a snapshot: any query, or one of the named ones analysts ask most.

>>> sorted(NAMED_QUERIES)[:3]
['alerts', 'canary', 'dead_letters']
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pyarrow as pa

from adaptloop.schemas.errors import ConfigError, LimitExceeded


@dataclass(frozen=True)
class NamedQuery:
    description: str
    sql: str
    params: tuple[str, ...] = field(default=())


# schemas.system.reason_pattern in SQL: quoted values, then numbers, replaced by "…".
_QUOTE = "chr(39)"
_REASON_PATTERN = (
    "regexp_replace(regexp_replace(regexp_replace(reason, "
    f"{_QUOTE} || '[^' || {_QUOTE} || ']*' || {_QUOTE}, {_QUOTE} || '…' || {_QUOTE}, 'g'), "
    "'\"[^\"]*\"', '\"…\"', 'g'), '[0-9][0-9.,:T+\\-]*', '…', 'g')"
)
_NUMERIC_JSON = "('BOOLEAN', 'UBIGINT', 'BIGINT', 'DOUBLE')"


def _number(column: str) -> str:
    return (
        f"(CASE json_type({column}) WHEN 'BOOLEAN' THEN {column}::BOOLEAN::INT::DOUBLE ELSE "
        f"{column}::DOUBLE END)"
    )


def json_equal(a: str, b: str) -> str:
    """SQL: whether two JSON values are equal as Python compares them (``True == 1 == 1.0``; text as
    text)."""
    return (
        f"CASE WHEN json_type({a}) IN {_NUMERIC_JSON} AND json_type({b}) IN {_NUMERIC_JSON} "
        f"THEN {_number(a)} = {_number(b)} ELSE {a}::JSON = {b}::JSON END"
    )


NAMED_QUERIES: dict[str, NamedQuery] = {
    "versions": NamedQuery(
        "Every model version in order: why it was made, what it had learned, its metrics at "
        "that point.",
        """
        SELECT model, version, parent, reason, examples_seen,
               round(TRY_CAST(metrics->>'$."shadow.Accuracy"' AS DOUBLE), 4) AS shadow_accuracy,
               round(TRY_CAST(metrics->>'$."production.Accuracy"' AS DOUBLE), 4) AS production_accuracy,
               actor, timestamp AS published_at
        FROM model_updates ORDER BY model, _kafka_timestamp, _offset
        """,
    ),
    "metric_by_version": NamedQuery(
        "Production accuracy of the served predictions, per model version that served them "
        "(from the joins); "
        "served_by says whether a published version (version), the model's default "
        "(default) or something the "
        "loop never published, a service's own model (external), answered. Labels and "
        "predictions compare as "
        "the learner compares them (true equals 1).",
        f"""
        SELECT t.model, t.model_version,
               CASE WHEN t.fallback THEN 'default' WHEN v.version IS NOT NULL THEN 'version' ELSE 'external' END
                   AS served_by,
               count(*) AS decisions, count(*) FILTER (status = 'joined') AS with_outcome,
               round(avg(CASE WHEN status = 'joined' THEN ({json_equal("t.prediction", "t.label")})::INT END), 4)
                   AS accuracy,
               min(predicted_at) AS first_served, max(predicted_at) AS last_served
        FROM (SELECT * FROM training_examples
              QUALIFY row_number() OVER (PARTITION BY model, decision_id ORDER BY _offset DESC) = 1) t
        LEFT JOIN (SELECT DISTINCT model, version FROM model_updates) v
               ON v.model = t.model AND v.version = t.model_version
        GROUP BY ALL ORDER BY first_served
        """,
    ),
    "canary": NamedQuery(
        "Canaries, per round (a stable version and the line of versions judged against it) "
        "and group: the "
        "decisions each group served (by the record in force when each was made), those "
        "with an outcome, their "
        "accuracy, and how the gate ended the round (promoted, rolled_back; replaced: an "
        "operator's or a spec's "
        "change; running: not yet).",
        f"""
        WITH records AS (
            SELECT model, version, timestamp AS published_at, canary->>'$.stable' AS stable,
                   TRY_CAST(canary->>'$.share' AS DOUBLE) AS share, coalesce(canary->>'$.state', 'none') AS state,
                   count(*) FILTER (coalesce(canary->>'$.state', 'none') <> 'running')
                       OVER (PARTITION BY model ORDER BY _offset ROWS UNBOUNDED PRECEDING) AS round
            FROM model_updates
        ),
        lines AS (SELECT DISTINCT model, round, version FROM records WHERE state = 'running'),
        ends AS (
            SELECT model, round - 1 AS round, published_at AS ended_at,
                   CASE WHEN state IN ('promoted', 'rolled_back') THEN state ELSE 'replaced' END AS verdict
            FROM records WHERE state <> 'running'
        ),
        decisions AS (
            SELECT * FROM training_examples WHERE NOT fallback
            QUALIFY row_number() OVER (PARTITION BY model, decision_id ORDER BY _offset DESC) = 1
        ),
        served AS (
            SELECT t.*, r.round, r.stable, r.share,
                   CASE WHEN t.model_version = r.stable THEN 'stable' WHEN l.version IS NOT NULL THEN 'canary' END
                       AS "group"
            FROM decisions t
            ASOF JOIN records r ON r.model = t.model AND t.predicted_at >= r.published_at
            LEFT JOIN lines l ON l.model = t.model AND l.round = r.round AND l.version = t.model_version
            WHERE r.state = 'running'
        )
        SELECT s.model, s.round, any_value(s.stable) AS stable, any_value(s.share) AS share, s."group",
               count(DISTINCT s.model_version) AS versions, count(*) AS decisions,
               count(*) FILTER (s.status = 'joined') AS with_outcome,
               round(avg(CASE WHEN s.status = 'joined' THEN ({json_equal("s.prediction", "s.label")})::INT END), 4)
                   AS accuracy,
               coalesce(any_value(e.verdict), 'running') AS verdict, any_value(e.ended_at) AS ended_at
        FROM served s LEFT JOIN ends e ON e.model = s.model AND e.round = s.round
        WHERE s."group" IS NOT NULL
        GROUP BY s.model, s.round, s."group" ORDER BY s.model, s.round, s."group"
        """,
    ),
    "decision": NamedQuery(
        "Which model version answered a decision, what it knew then (offsets, examples) and "
        "what happened.",
        """
        SELECT p.decision_id, p.model, p.model_version, p.prediction, p.timestamp AS predicted_at,
               v.examples_seen AS version_examples_seen, v.offsets AS version_learned_up_to, v.parent,
               t.status AS join_status, t.label, t.outcome_at
        FROM predictions p
        LEFT JOIN (SELECT * FROM model_updates
                   QUALIFY row_number() OVER (PARTITION BY model, version ORDER BY _offset) = 1) v
               ON v.model = p.model AND v.version = p.model_version
        LEFT JOIN (SELECT * FROM training_examples WHERE decision_id = $decision_id
                   QUALIFY row_number() OVER (PARTITION BY model ORDER BY _offset DESC) = 1) t
               ON t.decision_id = p.decision_id AND t.model = p.model
        WHERE p.decision_id = $decision_id
        """,
        ("decision_id",),
    ),
    "label_lag": NamedQuery(
        "How long outcomes take to arrive, per model (seconds, from the joined examples).",
        """
        SELECT model, count(*) AS joined,
               round(quantile_cont(epoch(outcome_at) - epoch(predicted_at), 0.5), 3) AS p50_s,
               round(quantile_cont(epoch(outcome_at) - epoch(predicted_at), 0.99), 3) AS p99_s,
               round(max(epoch(outcome_at) - epoch(predicted_at)), 3) AS max_s
        FROM training_examples WHERE status = 'joined' GROUP BY model ORDER BY model
        """,
    ),
    "joins": NamedQuery(
        "How decisions ended in the join, per model: joined, defaulted, expired, late (a "
        "late outcome turns an "
        "expired decision late).",
        """
        SELECT model, status, count(*) AS decisions FROM (
            SELECT model, decision_id, arg_max(status, _offset) AS status FROM training_examples GROUP BY ALL
        ) GROUP BY ALL ORDER BY model, status
        """,
    ),
    "dead_letters": NamedQuery(
        "Unusable records by where they came from and why: one row per cause (the reason "
        "with its particulars, "
        "quoted values and numbers, taken out), with its count and an example.",
        f"""
        SELECT source_topic, consumer, kind, {_REASON_PATTERN} AS cause, count(*) AS records,
               min(reason) AS example_reason, min(timestamp) AS first_seen, max(timestamp) AS last_seen
        FROM dead_letters GROUP BY ALL ORDER BY records DESC, cause
        """,
    ),
    "session": NamedQuery(
        "One agent session's timeline: its steps (action, variant, cost, tokens, latency), "
        "routes, feedback and "
        "guardrail alerts, in time order.",
        """
        SELECT timestamp, 'feedback' AS source, kind, run_id, step, variant, action, value, cost, tokens,
               latency_ms, comment AS detail
        FROM agent_feedback WHERE session_id = $session_id
        UNION ALL
        SELECT timestamp, 'guardrail' AS source, rule, NULL, NULL, NULL, NULL, observed::VARCHAR, NULL, NULL, NULL,
               'threshold ' || threshold || ': ' || evidence
        FROM guardrail_alerts WHERE session_id = $session_id
        ORDER BY timestamp, step NULLS LAST
        """,
        ("session_id",),
    ),
    "alerts": NamedQuery(
        "Drift and guardrail alerts, newest first.",
        """
        SELECT 'drift' AS kind, timestamp, model AS subject, detector AS rule, signal AS detail, statistic AS observed,
               threshold FROM drift_alerts
        UNION ALL
        SELECT 'guardrail', timestamp, subject, rule, coalesce(agent, tenant, ''), observed, threshold
        FROM guardrail_alerts
        ORDER BY timestamp DESC
        """,
    ),
    "lineage": NamedQuery(
        "A model's history, newest first: each version with its parent, why it was made and "
        "by whom (and, while "
        "a canary runs or when its gate decides, the canary's split and the gate's figures).",
        """
        SELECT timestamp AS published_at, version, parent, reason, examples_seen, offsets AS learned_up_to,
               dataset_hash, actor, note, canary
        FROM model_updates WHERE model = $model ORDER BY _offset DESC
        """,
        ("model",),
    ),
    "errors": NamedQuery(
        "Archived records that could not be decoded, by topic and reason.",
        """
        SELECT _topic AS topic, split_part(_error, ':', 1) AS kind, count(*) AS records, any_value(_error) AS example
        FROM archive_errors GROUP BY ALL ORDER BY records DESC
        """,
    ),
}


def _query_text(query: str) -> tuple[str, tuple[str, ...]]:
    named = NAMED_QUERIES.get(query)
    if named is not None:
        return named.sql, named.params
    if re.fullmatch(r"[a-z_]+", query.strip()):
        raise ConfigError(
            f"no named query {query!r}; named queries: {', '.join(sorted(NAMED_QUERIES))}"
        )
    return query, tuple(re.findall(r"\$([a-zA-Z_]\w*)", query))


AUDIT_SECONDS = 60.0
"""How long one audit query may run (the ``audit_seconds`` setting's default)."""
AUDIT_MEMORY_MB = 1024
"""How much memory one audit query may take, its result included (the ``audit_memory_mb`` setting's
default)."""


def run_audit(
    snapshot: Path,
    query: str,
    params: dict[str, str] | None = None,
    *,
    seconds: float = AUDIT_SECONDS,
    memory_mb: int = AUDIT_MEMORY_MB,
) -> pa.Table:
    """Run SQL (or a named query) read-only against ``snapshot``; return an Arrow table.

    Parameters are DuckDB's named ``$name`` placeholders, given as ``params``. The query runs in a
    sandbox: one ``SELECT`` (no ``COPY``, ``ATTACH``, ``SET``, ``INSTALL``...), with DuckDB's access
    to files limited to the snapshot's archive, read only, and its configuration locked: an audit
    reads, it never writes a file (a ``COPY`` into the archive would put forged rows into the next
    snapshot).

    It is also bounded: it is interrupted after ``seconds``, and refused once DuckDB's working
    memory or the result's rows take more than ``memory_mb`` (nothing spills to disk): a
    :class:`LimitExceeded` names the limit and its setting. A cross join of two big tables would
    otherwise run for hours and take the host's memory.
    """
    sql, needed = _query_text(query)
    params = dict(params or {})
    missing = [name for name in needed if name not in params]
    if missing:
        raise ConfigError(
            f"the query needs {', '.join('--param ' + name + '=...' for name in missing)}"
        )
    statements = duckdb.extract_statements(sql)
    kinds = [statement.type for statement in statements]
    if kinds != [duckdb.StatementType.SELECT]:
        shown = ", ".join(kind.name for kind in kinds) or "nothing"
        raise ConfigError(
            f"an audit runs one query (SELECT ... or WITH ... SELECT ...), not {shown}"
        )
    with duckdb.connect(str(snapshot), read_only=True) as db:
        _sandbox(db, memory_mb)
        timed_out = threading.Event()

        def interrupt() -> None:
            timed_out.set()
            db.interrupt()

        timer = threading.Timer(seconds, interrupt)
        timer.start()
        try:
            return _bounded_result(db, sql, {name: params[name] for name in needed}, memory_mb)
        # Arrow's reader reports an interrupt as an OSError
        except (duckdb.InterruptException, OSError):
            if timed_out.is_set():
                raise _limit_hit(f"ran longer than {seconds:g} s", "audit_seconds") from None
            raise
        except duckdb.OutOfMemoryException:
            raise _limit_hit(
                f"needed more than {memory_mb:,} MB of memory", "audit_memory_mb"
            ) from None
        finally:
            timer.cancel()
            timer.join()  # an interrupt under way ends before the connection closes


def _bounded_result(
    db: duckdb.DuckDBPyConnection, sql: str, params: dict[str, str], memory_mb: int
) -> pa.Table:
    """The query's rows, read batch by batch: refused as soon as they take more than
    ``memory_mb``."""
    reader = db.sql(sql, params=params or None).to_arrow_reader(100_000)
    batches, size = [], 0
    for batch in reader:
        size += batch.nbytes
        if size > memory_mb * 2**20:
            raise _limit_hit(f"returned more than {memory_mb:,} MB of rows", "audit_memory_mb")
        batches.append(batch)
    return pa.Table.from_batches(batches, reader.schema)


def _limit_hit(what: str, setting: str) -> LimitExceeded:
    return LimitExceeded(
        f"the audit query {what} and was stopped: the limit is the setting {setting} "
        f"(ADAPTLOOP_{setting.upper()}); "
        "narrow the query (a WHERE, a LIMIT, an aggregate instead of a join's rows) or "
        "raise the limit"
    )


def _sandbox(db: duckdb.DuckDBPyConnection, memory_mb: int) -> None:
    """Files: the snapshot's archive only (none for an object store's: that snapshot holds its
    rows); no other external access; at most ``memory_mb`` of memory, nothing spilled to disk;
    settings locked for the session."""
    archive = (
        db.execute("SELECT archive FROM snapshot_info").fetchone()
        if _has_table(db, "snapshot_info")
        else None
    )
    if archive is not None and archive[0] and "://" not in archive[0]:
        db.execute("SET allowed_directories = $dirs", {"dirs": [str(Path(archive[0])) + "/"]})
    db.execute(f"SET memory_limit = '{int(memory_mb)}MB'")
    db.execute("SET temp_directory = ''")
    db.execute("SET enable_external_access = false")
    db.execute("SET lock_configuration = true")


def _has_table(db: duckdb.DuckDBPyConnection, name: str) -> bool:
    found = db.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE table_name = $n", {"n": name}
    ).fetchone()
    return found is not None and found[0] > 0
