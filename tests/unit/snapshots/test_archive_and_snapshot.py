"""The Parquet archive and DuckDB snapshots, without a broker: exact rows, no duplicates, atomic
files."""

from __future__ import annotations

import random
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta

import duckdb
import orjson
import pytest

from adaptloop.learners.preferences import PreferenceStore, Publications
from adaptloop.samples import MALFORMED_RECORDS, SAMPLERS, sample_events
from adaptloop.schemas import (
    DeadLetter,
    ModelVersion,
    OutcomeEvent,
    PredictionEvent,
    PreferenceSnapshot,
    TrainingExample,
    encode,
    topic_for,
)
from adaptloop.schemas.errors import ConfigError, DecodeError
from adaptloop.schemas.system import reason_pattern
from adaptloop.schemas.topics import (
    DEAD_LETTERS,
    MODEL_UPDATES,
    OUTCOMES,
    PREDICTIONS,
    PREFERENCE_STORE,
    TRAINING_EXAMPLES,
)
from adaptloop.snapshots.archive import ParquetArchive
from adaptloop.snapshots.audit import NAMED_QUERIES, run_audit
from adaptloop.snapshots.columns import RawRecord, event_row, json_fields
from adaptloop.snapshots.snapshot import ARCHIVED_TOPICS, create_snapshot

STAMP = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def _records(event_type, count, start=0, seed=0):
    return [
        RawRecord(0, start + i, STAMP + i, event.decision_id.encode(), encode(event))
        for i, event in enumerate(sample_events(event_type, count, seed=seed))
    ]


def test_replayed_and_overlapping_batches_add_no_duplicates_and_leave_no_gap(tmp_path):
    archive = ParquetArchive(tmp_path)
    records = _records(OutcomeEvent, 1000)
    archive.write(OUTCOMES, "outcomes", 0, records[:300])
    # the same batch again (a crash before commit)
    archive.write(OUTCOMES, "outcomes", 0, records[:300])
    archive.write(OUTCOMES, "outcomes", 0, records[200:700])  # overlapping: only 300..699 are new
    reopened = ParquetArchive(tmp_path)  # a restarted writer learns its position from the files
    assert reopened.next_offsets("outcomes") == {0: 700}
    reopened.write(OUTCOMES, "outcomes", 0, records[650:])
    offsets = duckdb.sql(
        f"SELECT _offset FROM read_parquet('{tmp_path}/topic=outcomes/*/*.parquet') ORDER BY 1"
    ).fetchall()
    assert [o for (o,) in offsets] == list(range(1000))
    assert len(reopened.files("outcomes")) == 3


def test_partial_files_are_invisible_and_removed(tmp_path):
    archive = ParquetArchive(tmp_path)
    archive.write(OUTCOMES, "outcomes", 0, _records(OutcomeEvent, 10))
    partial = (
        next(tmp_path.glob("topic=outcomes/date=*"))
        / ".p000-000000000010-000000000019.parquet.k2x9q"
    )
    partial.write_bytes(b"PAR1 half a file")
    assert ParquetArchive(tmp_path).next_offsets("outcomes") == {0: 10}
    assert archive.remove_partial_files() == 1 and not partial.exists()


def test_archived_events_keep_every_field_and_bad_records_keep_their_reason(tmp_path):
    archive = ParquetArchive(tmp_path)
    good = _records(PredictionEvent, 50)
    bad = [
        RawRecord(0, 50 + i, STAMP, None, value)
        for i, value in enumerate(MALFORMED_RECORDS.values())
    ]
    archive.write(PREDICTIONS, "predictions", 0, good + bad)
    info = create_snapshot(tmp_path, None, tmp_path / "s.duckdb", topics=[PREDICTIONS])
    assert info.rows == {"predictions": 54} and info.offsets == {"predictions": {0: 54}}
    with duckdb.connect(str(info.path), read_only=True) as db:
        rows = db.execute(
            "SELECT decision_id, features::JSON, tenant, action_probability FROM "
            "predictions ORDER BY _offset"
        ).fetchall()
        errors = db.execute(
            "SELECT _offset, _error FROM archive_errors ORDER BY _offset"
        ).fetchall()
    expected = list(sample_events(PredictionEvent, 50))
    assert [(r[0], r[2], r[3]) for r in rows] == [
        (e.decision_id, e.tenant, e.action_probability) for e in expected
    ]
    assert [o for o, _ in errors] == [50, 51, 52, 53]
    assert errors[0][1].startswith("malformed:")


def test_a_snapshot_is_cut_at_its_manifest_offsets_and_opens_in_another_process(tmp_path):
    archive = ParquetArchive(tmp_path / "archive")
    for partition in (0, 1):
        records = [
            RawRecord(partition, r.offset, r.timestamp_ms, r.key, r.value)
            for r in _records(TrainingExample, 400 + partition, seed=partition)
        ]
        archive.write(TRAINING_EXAMPLES, "training-examples", partition, records)
    info = create_snapshot(tmp_path / "archive", None, tmp_path / "s.duckdb")
    # Written after the snapshot: must not show up in it.
    later = _records(TrainingExample, 500, seed=0)
    archive.write(TRAINING_EXAMPLES, "training-examples", 0, later)
    code = (
        "import duckdb, sys; db = duckdb.connect(sys.argv[1], read_only=True); "
        "print(db.execute('SELECT count(*) FROM training_examples').fetchone()[0], "
        'db.execute("SELECT sum(next_offset) FROM manifest WHERE topic = '
        "'training-examples'\").fetchone()[0])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(info.path)], capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == ["801", "801"]
    assert set(info.rows) == {topic.name for topic in ARCHIVED_TOPICS}
    assert info.rows["training-examples"] == 801 and info.rows["predictions"] == 0


def test_named_queries_run_on_a_snapshot(tmp_path):
    archive = ParquetArchive(tmp_path / "archive")
    archive.write(TRAINING_EXAMPLES, "training-examples", 0, _records(TrainingExample, 200))
    archive.write(PREDICTIONS, "predictions", 0, _records(PredictionEvent, 200))
    info = create_snapshot(tmp_path / "archive", None, tmp_path / "s.duckdb")
    joins = run_audit(info.path, "joins").to_pylist()
    assert joins == [{"model": "churn", "status": "joined", "decisions": 200}]
    decision = run_audit(info.path, "decision", {"decision_id": "d-7"}).to_pylist()
    assert [row["decision_id"] for row in decision] == ["d-7"]
    for name, query in NAMED_QUERIES.items():
        # every named query is valid SQL
        run_audit(info.path, name, dict.fromkeys(query.params, "x"))
    with pytest.raises(ConfigError, match="--param decision_id"):
        run_audit(info.path, "decision")
    with pytest.raises(ConfigError, match="named queries"):
        run_audit(info.path, "no_such_query")


def test_report_draws_pngs_that_open(tmp_path):
    import matplotlib.image

    from adaptloop.samples import sample_events as samples
    from adaptloop.schemas import AgentFeedbackEvent, ModelVersion
    from adaptloop.schemas.topics import AGENT_FEEDBACK, MODEL_UPDATES
    from adaptloop.snapshots.report import write_report

    archive = ParquetArchive(tmp_path / "archive")
    archive.write(TRAINING_EXAMPLES, "training-examples", 0, _records(TrainingExample, 300))
    versions = [
        RawRecord(0, i, STAMP + i, None, encode(v)) for i, v in enumerate(samples(ModelVersion, 14))
    ]
    archive.write(MODEL_UPDATES, "model-updates", 0, versions)
    feedback = [
        RawRecord(0, i, STAMP + i, None, encode(e))
        for i, e in enumerate(samples(AgentFeedbackEvent, 200))
    ]
    archive.write(AGENT_FEEDBACK, "agent-feedback", 0, feedback)
    info = create_snapshot(tmp_path / "archive", None, tmp_path / "s.duckdb")
    written = write_report(info.path, tmp_path / "report")
    assert {path.name for path in written} == {
        "m0-metrics.png",
        "m1-metrics.png",
        "m2-metrics.png",
        "m3-metrics.png",
        "m4-metrics.png",
        "m5-metrics.png",
        "m6-metrics.png",
        "traffic-share.png",
    }
    for path in written:
        height, width, _ = matplotlib.image.imread(path).shape
        assert height > 200 and width > 400


@pytest.mark.parametrize("event_type", list(SAMPLERS), ids=lambda t: t.__name__)
def test_archive_rows_hold_the_values_of_model_dump(event_type):
    """event_row() reads the instance's fields directly; its columns must be model_dump()'s."""
    for event in sample_events(event_type, 200, seed=5):
        topic = topic_for(event)
        expected = event.model_dump()
        for name in json_fields(topic):
            if expected[name] is not None:
                expected[name] = orjson.dumps(expected[name]).decode()
        assert event_row(topic, event) == expected


def test_training_examples_are_archived_as_the_learner_reads_them_with_the_contracts_columns(
    monkeypatch,
):
    """The archive reads ``training-examples`` (written by the join alone) with the learner's fast
    reader, never pydantic: every row holds what the contract's decoding would put there, and a
    record in another shape gets the learner's own reason."""
    import adaptloop.snapshots.columns as columns
    from adaptloop.schemas.trusted import decode_training

    statuses = ["joined", "defaulted", "expired", "late", "rejected"]
    examples = [  # every way a decision ends, labels of every type
        TrainingExample.model_validate(
            example.model_dump()
            | {
                "status": statuses[i % 5],
                "label": [True, i, i / 7, f"class {i}"][i % 4],
                "reward": i / 3 if i % 3 else None,
            }
            | ({"label": None, "outcome_at": None} if i % 5 == 2 else {})
            | ({"reason": "features: x is not a number"} if i % 5 == 4 else {})
        )
        for i, example in enumerate(sample_events(TrainingExample, 400, seed=11))
    ]
    assert {type(example.label) for example in examples} >= {bool, int, float, str, type(None)}
    forged = b'{"model": "churn", "decision_id": "d1", "source": "s"}'
    records = [
        RawRecord(i % 3, i, STAMP + i, b"churn", encode(example))
        for i, example in enumerate(examples)
    ]
    records.append(RawRecord(0, 400, STAMP, b"churn", forged))

    def refuse(topic, data, **_):
        raise AssertionError("validated by pydantic")

    with monkeypatch.context() as patch:
        patch.setattr(columns, "decode", refuse)
        fast = columns.to_table(TRAINING_EXAMPLES, "training-examples", records)
    monkeypatch.delitem(columns.TRUSTED_READERS, TRAINING_EXAMPLES)
    contract = columns.to_table(TRAINING_EXAMPLES, "training-examples", records)

    assert fast.drop_columns(["_error"]).equals(contract.drop_columns(["_error"]))
    errors = fast.column("_error").to_pylist()
    with pytest.raises(DecodeError) as refused:
        decode_training(forged)
    assert errors == [None] * 400 + [f"{refused.value.kind}: {refused.value.reason}"]
    assert contract.column("_error").to_pylist()[400] is not None


def test_a_valid_event_no_column_holds_keeps_its_bytes_and_the_reason(monkeypatch):
    """Defence in depth: a row that cannot be converted is archived with its error, never crashes
    the archive."""
    import adaptloop.snapshots.columns as columns

    def refuse(topic, event, json_names=None):
        raise TypeError("Integer exceeds 64-bit range")

    monkeypatch.setattr(columns, "event_row", refuse)
    value = encode(OutcomeEvent(decision_id="d1", label=True, source="s"))
    table = columns.to_table(OUTCOMES, "outcomes", [RawRecord(0, 7, STAMP, b"d1", value)])
    assert table.column("_error").to_pylist() == [
        ("unarchivable: TypeError: Integer exceeds 64-bit range")
    ]
    assert table.column("_value").to_pylist() == [value] and table.column(
        "_offset"
    ).to_pylist() == [7]


def test_an_audit_reads_and_never_writes_a_file(tmp_path):
    archive = ParquetArchive(tmp_path / "archive")
    archive.write(OUTCOMES, "outcomes", 0, _records(OutcomeEvent, 10))
    info = create_snapshot(tmp_path / "archive", None, tmp_path / "s.duckdb", topics=[OUTCOMES])
    assert run_audit(info.path, "SELECT count(*) AS n FROM outcomes").to_pylist() == [{"n": 10}]
    forged = (
        tmp_path
        / "archive"
        / "topic=outcomes"
        / "date=2026-01-01"
        / "p000-000000000000-100000000000.parquet"
    )
    copy = f"COPY (SELECT * FROM outcomes) TO '{forged}' (FORMAT parquet)"
    with pytest.raises(ConfigError, match="not COPY"):
        run_audit(info.path, copy)
    with pytest.raises(ConfigError, match="not SELECT, COPY"):
        run_audit(info.path, f"SELECT 1; {copy}")
    (tmp_path / "secret.csv").write_text("password\nhunter2\n")
    for escape in (
        "SELECT * FROM read_csv('/etc/passwd')",
        f"SELECT * FROM '{tmp_path}/secret.csv'",
    ):
        with pytest.raises(duckdb.PermissionException):
            run_audit(info.path, escape)
    assert not forged.exists()


def test_the_archiver_resumes_from_its_committed_offset_and_sets_forged_files_aside(tmp_path):
    archive = ParquetArchive(tmp_path)
    records = _records(OutcomeEvent, 100)
    archive.write(OUTCOMES, "outcomes", 0, records[:60])
    forged = (
        tmp_path / "topic=outcomes" / "date=2026-01-01" / "p000-000000000060-100000000000.parquet"
    )
    forged.write_bytes(
        (tmp_path / "topic=outcomes").glob("date=*/*.parquet").__next__().read_bytes()
    )
    reopened = ParquetArchive(tmp_path)
    assert reopened.next_offsets("outcomes") == {0: 100_000_000_001}  # what the file names claim
    aside = reopened.resume("outcomes", 0, 60)  # what the archiver committed
    assert aside == [f"topic=outcomes/date=2026-01-01/{forged.name}.untrusted"]
    assert (forged.parent / f"{forged.name}.untrusted").exists() and not forged.exists()
    reopened.write(OUTCOMES, "outcomes", 0, records[60:])
    offsets = duckdb.sql(
        f"SELECT _offset FROM read_parquet('{tmp_path}/topic=outcomes/*/*.parquet') ORDER BY 1"
    )
    assert [offset for (offset,) in offsets.fetchall()] == list(range(100))


def test_a_self_contained_snapshot_opens_without_the_archive(tmp_path):
    archive = ParquetArchive(tmp_path / "archive")
    archive.write(OUTCOMES, "outcomes", 0, _records(OutcomeEvent, 25))
    info = create_snapshot(
        tmp_path / "archive", None, tmp_path / "s.duckdb", topics=[OUTCOMES], self_contained=True
    )
    moved = tmp_path / "colleague" / "s.duckdb"
    moved.parent.mkdir()
    info.path.rename(moved)
    import shutil

    shutil.rmtree(tmp_path / "archive")
    assert run_audit(moved, "SELECT count(*) AS n FROM outcomes").to_pylist() == [{"n": 25}]
    assert duckdb.connect(str(moved), read_only=True).sql(
        "SELECT count(*) FROM outcomes"
    ).fetchall() == [(25,)]


def test_metric_by_version_compares_as_the_learner_does_and_keeps_external_decisions_apart(
    tmp_path,
):
    version = next(iter(sample_events(ModelVersion, 1))).model_copy(update={"model": "churn"})
    rng = random.Random(3)
    # (model_version, fallback, prediction, label): labels of several JSON types, as services send
    served = [
        *[
            (
                version.version,
                False,
                rng.choice([True, False, 1, 0]),
                rng.choice([True, False, 1, 0]),
            )
            for _ in range(60)
        ],
        *[("default", True, False, rng.choice([True, False])) for _ in range(15)],
        *[
            ("java-rules", False, rng.choice([1.0, 0.0]), rng.choice([True, False, 1]))
            for _ in range(25)
        ],
        *[
            (
                version.version,
                False,
                rng.choice(["gold", "silver", "1"]),
                rng.choice(["gold", "silver", 1]),
            )
            for _ in range(40)
        ],
    ]
    examples = [
        TrainingExample(
            model="churn",
            decision_id=f"d-{i}",
            model_version=model_version,
            features={"x": 1.0},
            prediction=prediction,
            label=label,
            fallback=fallback,
            predicted_at=datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=i),
        )
        for i, (model_version, fallback, prediction, label) in enumerate(served)
    ]
    archive = ParquetArchive(tmp_path / "archive")
    records = [RawRecord(0, i, STAMP + i, b"churn", encode(e)) for i, e in enumerate(examples)]
    archive.write(TRAINING_EXAMPLES, "training-examples", 0, records)
    archive.write(
        MODEL_UPDATES, "model-updates", 0, [RawRecord(0, 0, STAMP, b"churn", encode(version))]
    )
    info = create_snapshot(tmp_path / "archive", None, tmp_path / "s.duckdb")

    rows = {
        row["model_version"]: row for row in run_audit(info.path, "metric_by_version").to_pylist()
    }
    expected_by = {version.version: "version", "default": "default", "java-rules": "external"}
    for model_version, served_by in expected_by.items():
        mine = [(p, y) for v, _, p, y in served if v == model_version]
        # Python's equality, as River's metrics and the learner use it: True == 1 == 1.0.
        accuracy = round(sum(p == y for p, y in mine) / len(mine), 4)
        assert (rows[model_version]["served_by"], rows[model_version]["decisions"]) == (
            served_by,
            len(mine),
        )
        assert rows[model_version]["accuracy"] == accuracy


def test_dead_letters_are_grouped_by_cause_as_the_cli_groups_them(tmp_path):
    reasons = [
        *[
            (
                f"decision 'd-{i}': label 'yes' is a string; model 'churn' (binary) takes true or "
                "false"
            )
            for i in range(7)
        ],
        *[
            f"features of decision \"d-{i}\": 'plan' is text; model 'churn' takes numbers"
            for i in range(3)
        ],
        *[
            f"timestamp 9999-01-0{i}T00:00:00+00:00 is {i},000s ahead of this worker's clock"
            for i in range(1, 5)
        ],
        "not valid JSON",
    ]
    letters = [
        next(iter(sample_events(DeadLetter, 1))).model_copy(
            update={"reason": reason, "kind": "rejected"}
        )
        for reason in reasons
    ]
    archive = ParquetArchive(tmp_path / "archive")
    archive.write(
        DEAD_LETTERS,
        "dead-letters",
        0,
        [RawRecord(0, i, STAMP + i, None, encode(e)) for i, e in enumerate(letters)],
    )
    info = create_snapshot(tmp_path / "archive", None, tmp_path / "s.duckdb")
    rows = run_audit(info.path, "dead_letters").to_pylist()
    assert {row["cause"]: row["records"] for row in rows} == Counter(
        reason_pattern(r) for r in reasons
    )
    assert [row["records"] for row in rows] == [7, 4, 3, 1]
    assert all(reason_pattern(row["example_reason"]) == row["cause"] for row in rows)


def test_preference_variants_merge_each_shards_newest_complete_publication_as_clients_do(tmp_path):
    rng = random.Random(5)

    def shard_store(n: int) -> PreferenceStore:
        store = PreferenceStore()
        for _ in range(n):
            segment, variant = rng.choice(["eu", "us"]), rng.choice(["a", "b", "c"])
            if rng.random() < 0.7:
                store.add_thumbs(segment, "support", variant, rng.random() < 0.4)
            else:
                store.add_rating(segment, "support", variant, rng.uniform(1, 5))
        return store

    def publication(
        store: PreferenceStore, shard: int, position: int, split: bool
    ) -> list[PreferenceSnapshot]:
        segments = store.stats("support")
        groups = [{k: v} for k, v in segments.items()] if split else [segments]
        return [
            PreferenceSnapshot(
                agent="support",
                shard=f"support@agent-feedback:{shard}/{part}",
                offsets={f"agent-feedback:{shard}": position},
                segments=group,
                updates=position,
                part=part,
                parts=len(groups),
            )
            for part, group in enumerate(groups)
        ]

    old, new0, new1 = shard_store(50), shard_store(300), shard_store(200)
    records = [
        # shard 0's older publication: replaced by the newer one
        *publication(old, 0, 50, split=False),
        *publication(new0, 0, 300, split=True),  # in two parts
        *publication(new1, 1, 200, split=False),
        # incomplete: shard 1 keeps its position 200
        *publication(shard_store(400), 1, 600, split=True)[:1],
    ]
    archive = ParquetArchive(tmp_path / "archive")
    raw = [RawRecord(0, i, STAMP + i, e.shard.encode(), encode(e)) for i, e in enumerate(records)]
    archive.write(PREFERENCE_STORE, "preference-store", 0, raw)
    info = create_snapshot(tmp_path / "archive", None, tmp_path / "s.duckdb")

    publications, merged = Publications(), PreferenceStore()
    for record in records:
        publications.add(record)
    for part in publications.of("support"):
        merged.merge("support", part.segments)
    expected = merged.stats("support")
    rows = (
        duckdb.connect(str(info.path), read_only=True)
        .execute("SELECT * FROM preference_variants")
        .fetchall()
    )
    assert len(rows) == sum(len(variants) for variants in expected.values())
    for agent, segment, variant, ups, downs, mean, ratings, rating_mean in rows:
        stats = expected[segment][variant]
        assert (agent, ups, downs, ratings) == ("support", stats.ups, stats.downs, stats.ratings)
        assert mean == (1 + stats.ups) / (2 + stats.ups + stats.downs)
        assert (rating_mean is None and stats.ratings == 0) or abs(
            rating_mean - stats.rating_mean
        ) < 1e-9


def test_sessions_view_and_a_sessions_timeline(tmp_path):
    from adaptloop.schemas import AgentFeedbackEvent, GuardrailAlert
    from adaptloop.schemas.topics import AGENT_FEEDBACK, GUARDRAIL_ALERTS

    start = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)

    def step(i: int, **fields) -> AgentFeedbackEvent:
        base = {
            "trace_id": f"t{i}",
            "run_id": "r1",
            "session_id": "s1",
            "agent": "support",
            "variant": "b",
        }
        return AgentFeedbackEvent(
            **{**base, "step": i, "timestamp": start + timedelta(seconds=i), **fields}
        )

    events = [
        step(0, kind="route", value=0.4),
        *[
            step(i, kind="step", action="search", cost=0.01, tokens=100, latency_ms=250.0)
            for i in range(1, 6)
        ],
        step(6, kind="thumbs", value=True),
        step(7, kind="thumbs", value=-1.0),
        step(8, kind="rating", value=4.0),
        step(9, kind="step", session_id="s2", cost=1.0),
    ]
    alert = GuardrailAlert(
        rule="tool_loop",
        subject="s1",
        agent="support",
        session_id="s1",
        observed=5.0,
        threshold=4.0,
        timestamp=start + timedelta(seconds=5, milliseconds=500),
    )
    archive = ParquetArchive(tmp_path / "archive")
    archive.write(
        AGENT_FEEDBACK,
        "agent-feedback",
        0,
        [RawRecord(0, i, STAMP, None, encode(e)) for i, e in enumerate(events)],
    )
    archive.write(
        GUARDRAIL_ALERTS, "guardrail-alerts", 0, [RawRecord(0, 0, STAMP, None, encode(alert))]
    )
    info = create_snapshot(tmp_path / "archive", None, tmp_path / "s.duckdb")
    with duckdb.connect(str(info.path), read_only=True) as db:
        db.execute("SELECT * FROM sessions WHERE session_id = 's1'")
        row = dict(zip([c[0] for c in db.description], db.fetchone(), strict=True))
    assert (row["steps"], row["tokens"], row["thumbs_up"], row["thumbs_down"], row["rating"]) == (
        5,
        500,
        1,
        1,
        4.0,
    )
    assert row["cost"] == pytest.approx(0.05) and row["latency_ms"] == 1250.0
    assert (row["alerts"], row["alert_rules"], row["variants"]) == (1, "tool_loop", "b")
    timeline = run_audit(info.path, "session", {"session_id": "s1"}).to_pylist()
    assert [(r["source"], r["kind"]) for r in timeline][:7] == [
        ("feedback", "route"),
        *[("feedback", "step")] * 5,
        ("guardrail", "tool_loop"),
    ]
    assert len(timeline) == 10


def test_a_metric_over_no_decisions_is_null_in_the_snapshot_and_the_audit(tmp_path):
    from adaptloop.learners.online import OnlineLearner
    from adaptloop.learners.spec import LearnerSpec
    from adaptloop.learners.store import ModelStore

    version = ModelStore(tmp_path / "models").checkpoint(
        OnlineLearner(LearnerSpec(name="churn", metrics=["Accuracy"]))
    )
    scored = version.model_copy(
        update={"metrics": {"shadow.Accuracy": 0.75, "production.Accuracy": None}}
    )
    ParquetArchive(tmp_path / "archive").write(
        MODEL_UPDATES,
        "model-updates",
        0,
        [RawRecord(0, i, 0, None, encode(v)) for i, v in enumerate([version, scored])],
    )
    snapshot = create_snapshot(tmp_path / "archive", None, tmp_path / "s.duckdb").path
    with duckdb.connect(str(snapshot), read_only=True) as db:
        rows = db.execute(
            """SELECT metrics->>'$."shadow.Accuracy"', metrics->>'$."production.Accuracy"',
                      json_type(metrics->'$."production.Accuracy"') FROM model_updates ORDER BY _offset"""
        ).fetchall()
    assert rows == [(None, None, "NULL"), ("0.75", None, "NULL")]
    audit = (
        run_audit(snapshot, "versions")
        .select(["shadow_accuracy", "production_accuracy"])
        .to_pylist()
    )
    assert audit == [
        {"shadow_accuracy": None, "production_accuracy": None},
        {"shadow_accuracy": 0.75, "production_accuracy": None},
    ]
