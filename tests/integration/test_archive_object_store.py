"""The archive in an object store (a real S3 API server on 127.0.0.1): it keeps the local archive's
promises (no duplicate, no gap, forged files set aside), and a worker's archive there is what an
analyst on another host snapshots, audits and replays, with nothing read from the worker's disk."""

from __future__ import annotations

import time

import duckdb
import pytest
from river import datasets

from adaptloop.learners.signing import ModelKeys
from adaptloop.learners.spec import LearnerSpec
from adaptloop.learners.storage import Storage
from adaptloop.samples import MALFORMED_RECORDS, sample_events
from adaptloop.schemas import OutcomeEvent, PredictionEvent, encode
from adaptloop.schemas.topics import MODEL_UPDATES, OUTCOMES, PREDICTIONS, TRAINING_EXAMPLES
from adaptloop.settings import Settings
from adaptloop.snapshots.archive import ParquetArchive, count_archived
from adaptloop.snapshots.audit import run_audit
from adaptloop.snapshots.columns import RawRecord
from adaptloop.snapshots.replay import replay
from adaptloop.snapshots.snapshot import create_snapshot
from adaptloop.snapshots.usage import disk_usage

from .loop_helpers import learn_all, loop_settings, running_worker

STAMP = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def _archive_uri(bucket_uri: str) -> str:
    return bucket_uri.replace("/models?", "/archive?")


def _records(event_type: type, count: int, start: int = 0) -> list[RawRecord]:
    return [
        RawRecord(0, start + i, STAMP + i, event.decision_id.encode(), encode(event))
        for i, event in enumerate(sample_events(event_type, count))
    ]


def _tables(path) -> dict[str, list[tuple]]:
    with duckdb.connect(str(path), read_only=True) as db:
        return {
            name: db.execute(f"SELECT * FROM {name} ORDER BY _offset").fetchall()
            for name in ("outcomes", "predictions", "archive_errors")
        } | {"manifest": db.execute("SELECT * FROM manifest ORDER BY ALL").fetchall()}


def test_an_archive_in_an_object_store_keeps_the_local_archives_promises(s3_bucket, tmp_path):
    uri, local = _archive_uri(s3_bucket), tmp_path / "archive"
    outcomes = _records(OutcomeEvent, 1000)
    predictions = _records(PredictionEvent, 40)
    predictions += [
        RawRecord(0, 40 + i, STAMP, None, value)
        for i, value in enumerate(MALFORMED_RECORDS.values())
    ]
    for root in (uri, local):
        archive = ParquetArchive(root)
        archive.write(OUTCOMES, "outcomes", 0, outcomes[:300])
        # the same batch after a crash
        assert archive.write(OUTCOMES, "outcomes", 0, outcomes[:300]) is None
        # overlapping: only 300..699 are new
        archive.write(OUTCOMES, "outcomes", 0, outcomes[200:700])
        archive.write(PREDICTIONS, "predictions", 0, predictions)
        reopened = ParquetArchive(root)  # a restarted writer learns its position from the files
        assert reopened.next_offsets("outcomes") == {0: 700}

    # A file planted under a forged name: the archiver resumes from its committed offset and sets it
    # aside.
    storage = Storage(uri)
    planted = "topic=outcomes/date=2026-01-01/p000-000000000700-100000000000.parquet"
    storage.write(planted, storage.read(ParquetArchive(uri).files("outcomes")[0]))
    reopened = ParquetArchive(uri)
    assert reopened.next_offsets("outcomes") == {0: 100_000_000_001}  # what the names claim
    assert reopened.resume("outcomes", 0, 700) == [planted + ".untrusted"]
    assert not storage.exists(planted) and storage.exists(planted + ".untrusted")
    reopened.write(OUTCOMES, "outcomes", 0, outcomes[650:])
    ParquetArchive(local).write(OUTCOMES, "outcomes", 0, outcomes[650:])

    assert count_archived(uri, "outcomes") == count_archived(local, "outcomes") == 1000
    labelled = count_archived(uri, "outcomes", "label AND source = ?", ["billing"])
    assert labelled == count_archived(local, "outcomes", "label AND source = ?", ["billing"])
    assert labelled == sum(1 for e in sample_events(OutcomeEvent, 1000) if e.label)
    assert (
        ParquetArchive(uri).usage()["outcomes"][0]
        == ParquetArchive(local).usage()["outcomes"][0]
        == 3
    )

    # Snapshots of both hold the same rows; the object store's copies them in and opens without the
    # archive.
    from_s3 = create_snapshot(uri, None, tmp_path / "s3.duckdb", topics=[OUTCOMES, PREDICTIONS])
    from_disk = create_snapshot(
        local, None, tmp_path / "disk.duckdb", topics=[OUTCOMES, PREDICTIONS]
    )
    assert from_s3.rows == from_disk.rows == {"outcomes": 1000, "predictions": 44}
    assert from_s3.offsets == from_disk.offsets
    assert _tables(from_s3.path) == _tables(from_disk.path)
    with duckdb.connect(str(from_s3.path), read_only=True) as db:
        assert db.execute(
            "SELECT count(*) FROM duckdb_views() WHERE view_name = 'outcomes'"
        ).fetchone() == (0,)
        assert db.execute("SELECT archive FROM snapshot_info").fetchone() == (uri.split("?")[0],)
    assert [
        row["_offset"]
        for row in run_audit(from_s3.path, "SELECT _offset FROM archive_errors").to_pylist()
    ] == [
        40,
        41,
        42,
        43,
    ]


@pytest.mark.kafka
def test_an_analyst_on_another_host_snapshots_and_replays_a_workers_archive_in_the_object_store(
    kafka_bootstrap, s3_bucket, tmp_path
):
    spec = LearnerSpec(
        name="phishing", recipe="logistic", checkpoint_every=250, checkpoint_seconds=3600
    )
    settings = loop_settings(kafka_bootstrap, tmp_path / "worker-home", [spec], partitions=2)
    ModelKeys.create(tmp_path / "deployment-keys")  # a store shared by hosts: the deployment's key
    settings = settings.model_copy(
        update={
            "store": s3_bucket,
            "model_signing_key": tmp_path / "deployment-keys" / "model-signing.key",
            "archive": _archive_uri(s3_bucket),
            "archive_flush_seconds": 0.5,
            "snapshot_seconds": 1,  # not taken: each would copy the whole archive
        }
    )
    rows = list(datasets.Phishing())
    prefix = settings.topic_prefix
    with running_worker(settings, tmp_path / "worker.log") as worker:
        seen = learn_all(settings, worker, rows)
        final = max(seen, key=lambda v: v.examples_seen)
        versions, published = len(seen), {v.version for v in seen}
        # Another host: its own home, the archive's and the store's URIs, the worker's public key.
        analyst = Settings(
            bootstrap=kafka_bootstrap,
            topic_prefix=prefix,
            home=tmp_path / "analyst-home",
            store=s3_bucket,
            archive=_archive_uri(s3_bucket),
            model_verify_key=tmp_path / "deployment-keys" / "model-signing.pub",
        )
        examples, updates = TRAINING_EXAMPLES.full_name(prefix), MODEL_UPDATES.full_name(prefix)
        deadline = time.monotonic() + 180
        while (
            count_archived(analyst.archive_location, examples) < len(rows)
            or count_archived(analyst.archive_location, updates) < versions
        ):
            assert time.monotonic() < deadline, "the archive did not catch up within 180 s"
            time.sleep(0.5)
    # nothing archived on the worker's disk
    assert not (tmp_path / "worker-home" / "archive").exists()
    assert not list((tmp_path / "worker-home").glob("snapshots/*.duckdb"))

    info = create_snapshot(
        analyst.archive_location,
        analyst.models_location,
        tmp_path / "analyst.duckdb",
        prefix=prefix,
    )
    assert info.rows[examples] == len(rows) and info.rows[updates] == versions
    joined = run_audit(
        info.path, "SELECT count(*) AS n FROM training_examples WHERE status = 'joined'"
    )
    assert joined.to_pylist() == [{"n": len(rows)}]
    # what status shows
    used = disk_usage(analyst.models_location, analyst.archive_location, analyst.snapshots_dir)
    assert used["models/phishing"].files == len(published) and used["models/phishing"].bytes > 0
    assert used[f"archive/{examples}"].files >= 1 and used[f"archive/{updates}"].files >= 1

    steps = replay(
        analyst.archive_location, analyst.model_store(), spec, final.version, prefix=prefix
    )
    assert steps[-1].examples_seen == len(rows)
    assert all(step.reproduced and step.dataset_hash_matches for step in steps)
