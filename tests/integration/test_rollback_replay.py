"""Rollback, lineage, replay and snapshots on a running loop (real broker, real worker)."""

from __future__ import annotations

import pickle
import subprocess
import sys
import time
import urllib.request

import duckdb
import orjson
import pytest
from river import datasets, linear_model, preprocessing

from adaptloop.learners.spec import LearnerSpec
from adaptloop.learners.store import ModelStore, model_bytes
from adaptloop.schemas import ModelVersion, decode
from adaptloop.schemas.topics import MODEL_UPDATES, TRAINING_EXAMPLES
from adaptloop.snapshots.archive import count_archived, topic_glob
from adaptloop.snapshots.audit import run_audit
from adaptloop.snapshots.replay import replay
from adaptloop.snapshots.snapshot import create_snapshot
from adaptloop.streams import EventProducer
from adaptloop.streams.model_client import ModelClient
from adaptloop.streams.rollback import request_rollback
from adaptloop.testing import free_port

from .loop_helpers import loop_settings, read_until, running_worker, send_decisions

pytestmark = pytest.mark.kafka


def _version_at(settings, worker, count: int) -> ModelVersion:
    seen = read_until(
        settings,
        [MODEL_UPDATES],
        lambda events: any(
            isinstance(e, ModelVersion) and e.examples_seen == count for e in events
        ),
        timeout=120,
        worker=worker,
    )
    return [e for e in seen if isinstance(e, ModelVersion) and e.examples_seen == count][-1]


def _wait_archived(archive_root, topic_name: str, rows: int, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while (count := count_archived(archive_root, topic_name)) < rows:
        if time.monotonic() > deadline:
            raise AssertionError(
                f"{topic_name}: {count} rows archived after {timeout}s, not {rows}"
            )
        time.sleep(0.5)


def test_rollback_is_served_learned_from_recorded_and_replayed_byte_for_byte(
    kafka_bootstrap, tmp_path
):
    spec = LearnerSpec(
        name="phishing",
        recipe="logistic",
        metrics=["Accuracy"],
        checkpoint_every=250,
        checkpoint_seconds=None,
        min_examples=0,
    )
    settings = loop_settings(kafka_bootstrap, tmp_path / "home", [spec], partitions=2)
    port = free_port()
    settings = settings.model_copy(
        update={"archive_flush_seconds": 0.5, "snapshot_seconds": None, "metrics_port": port}
    )
    data = list(datasets.Phishing())
    store = ModelStore(settings.models_dir)
    prefix = settings.topic_prefix

    with running_worker(settings, tmp_path / "worker.log") as worker:
        with EventProducer(kafka_bootstrap, topic_prefix=prefix) as producer:
            send_decisions(producer, data[:750], 0)
            producer.flush()
            good, current = _version_at(settings, worker, 250), _version_at(settings, worker, 750)
            with ModelClient(
                "phishing", bootstrap=kafka_bootstrap, store=store, prefix=prefix
            ) as client:
                assert client.wait_for_version(current.version, timeout=60)
                rolled = request_rollback(
                    kafka_bootstrap,
                    store,
                    "phishing",
                    good.version,
                    actor="test-operator",
                    reason="labels from a broken source",
                    prefix=prefix,
                    timeout=60,
                )
                assert (rolled.version, rolled.parent, rolled.reason, rolled.actor) == (
                    good.version,
                    current.version,
                    "rollback",
                    "test-operator",
                )
                assert client.wait_for_version(good.version, timeout=60)  # serving swapped back
            send_decisions(producer, data[750:], 750)
            producer.flush()
            after = _version_at(settings, worker, 1000)
            final = _version_at(settings, worker, 1250)
        assert after.parent == good.version  # learning continued from the rolled-back version

        archive_root = settings.archive_location
        _wait_archived(archive_root, TRAINING_EXAMPLES.full_name(prefix), 1250)
        # initial, 250, 500, 750, rollback, 1000, 1250
        _wait_archived(archive_root, MODEL_UPDATES.full_name(prefix), 7)
        # A snapshot taken while the worker runs opens in a separate process.
        info = create_snapshot(
            archive_root, settings.models_dir, tmp_path / "audit.duckdb", prefix=prefix
        )
        code = (
            "import duckdb, sys; db = duckdb.connect(sys.argv[1], read_only=True); "
            "print(db.execute('SELECT count(*) FROM predictions').fetchone()[0], "
            'db.execute("SELECT sum(next_offset) FROM manifest WHERE topic LIKE '
            "'%predictions'\").fetchone()[0])"
        )
        out = subprocess.run(
            [sys.executable, "-c", code, str(info.path)], capture_output=True, text=True, check=True
        )
        assert out.stdout.split() == ["1250", "1250"]  # non-transactional topic: rows == offsets

        # The worker's metrics and health, while it runs.
        health = urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=10)
        assert health.status == 200 and orjson.loads(health.read())["roles"] == {
            "join": True,
            "learn": True,
            "archive": True,
            "agents": True,
        }
        metrics = (
            urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
        )
        samples = {
            line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
            for line in metrics.splitlines()
            if line and not line.startswith("#")
        }
        assert samples['adaptloop_examples_learned_total{model="phishing"}'] == 1250
        assert samples['adaptloop_model_versions_total{model="phishing",reason="rollback"}'] == 1
        assert samples['adaptloop_join_results_total{model="phishing",status="joined"}'] >= 1250
        assert (
            sum(v for k, v in samples.items() if k.startswith("adaptloop_archived_rows_total"))
            >= 2500
        )

    # River in process, on the examples in the order Kafka holds them: 250 learned, then the
    # rollback discards what was learned after, then examples 750.. are learned on top.
    rows = duckdb.execute(
        "SELECT _value FROM "
        f"read_parquet('{topic_glob(archive_root, TRAINING_EXAMPLES.full_name(prefix))}') "
        "ORDER BY _offset"
    ).fetchall()
    examples = [decode(TRAINING_EXAMPLES, value) for (value,) in rows]
    assert len(examples) == 1250 and {e.status for e in examples} == {"joined"}
    reference = preprocessing.StandardScaler() | linear_model.LogisticRegression()
    for example in examples[:250]:
        reference.learn_one(example.features, example.label)
    assert model_bytes(reference) == store.load_bytes("phishing", good.version)
    for example in examples[750:]:
        reference.learn_one(example.features, example.label)
    assert store.load_bytes("phishing", final.version) == model_bytes(reference)

    steps = replay(archive_root, store, spec, final.version, prefix=prefix)
    assert [(s.reason, s.examples_seen) for s in steps] == [
        ("initial", 0),
        ("checkpoint", 250),
        ("checkpoint", 500),
        ("checkpoint", 750),
        ("rollback", 750),
        ("checkpoint", 1000),
        ("checkpoint", 1250),
    ]
    assert all(s.reproduced and s.dataset_hash_matches for s in steps)
    assert pickle.loads(store.load_bytes("phishing", final.version)) is not None

    # Pruned versions: the rollback target comes from the replay's own chain, and the replayed
    # version is stored again, byte for byte, so a rollback can serve it.
    kept = store.load_bytes("phishing", final.version)
    for version in (good.version, final.version):
        (settings.models_dir / "phishing" / "versions" / f"{version}.pkl").unlink()
    steps = replay(archive_root, store, spec, final.version, prefix=prefix, restore=True)
    assert all(s.reproduced for s in steps) and store.load_bytes("phishing", final.version) == kept
    # only the version asked for is stored again
    assert good.version not in store.versions("phishing")

    history = run_audit(info.path, "lineage", {"model": "phishing"}).to_pylist()
    assert [(h["reason"], h["actor"]) for h in history][:3] == [
        ("checkpoint", None),
        ("checkpoint", None),
        ("rollback", "test-operator"),
    ]
