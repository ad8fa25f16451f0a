"""adaptloop ingest: River's Phishing through the real loop in ordered mode learns exactly what
River learns in process, and the audit of the snapshot it takes says the same accuracy."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from river import datasets, linear_model, metrics, preprocessing

from adaptloop.learners.spec import LearnerSpec
from adaptloop.schemas.topics import MODEL_UPDATES
from adaptloop.snapshots.audit import run_audit
from adaptloop.streams.versions import read_all
from adaptloop.worker import settings_env

from .loop_helpers import loop_settings, running_worker

pytestmark = pytest.mark.kafka


def test_ordered_ingest_of_phishing_equals_rivers_progressive_accuracy(kafka_bootstrap, tmp_path):
    spec = LearnerSpec(
        name="phishing", recipe="logistic", metrics=["Accuracy"], checkpoint_seconds=1
    )
    settings = loop_settings(kafka_bootstrap, tmp_path / "home", [spec], partitions=3).model_copy(
        update={"archive_flush_seconds": 1.0}
    )
    reference, accuracy = (
        preprocessing.StandardScaler() | linear_model.LogisticRegression(),
        metrics.Accuracy(),
    )
    for x, y in datasets.Phishing():
        accuracy.update(y, reference.predict_one(x))
        reference.learn_one(x, y)

    with running_worker(settings, tmp_path / "worker.log") as worker:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "adaptloop",
                "ingest",
                "river:Phishing",
                "--model",
                "phishing",
                "--ordered",
            ],
            env={**os.environ, **settings_env(settings), "COLUMNS": "200"},
            capture_output=True,
            text=True,
            timeout=600,
        )
        worker.check_alive()
        learned = [
            v
            for v in read_all(kafka_bootstrap, MODEL_UPDATES, settings.topic_prefix)
            if v.examples_seen == 1250
        ]
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1,250 decisions: joined 1,250" in done.stdout, done.stdout
    assert f"shadow.Accuracy {accuracy.get():.4f}" in done.stdout, done.stdout
    # No version served them: no production accuracy (not 0.0), in the output and in the audit.
    assert "production.Accuracy -" in done.stdout, done.stdout
    # The time to learned and the time to archived apart, in the order they happen; progress along
    # the way (plain lines: the output is a pipe).
    times = re.search(
        r"sent in ([\d.]+)s; learned in ([\d.]+)s .*; archived in ([\d.]+)s \(the archive "
        r"writes every 1s: "
        r"archive_flush_seconds\); ([\d.]+)s in all",
        done.stdout,
    )
    assert times, done.stdout
    sent, learned_in, archived_in, total = map(float, times.groups())
    assert 0 < sent <= learned_in <= archived_in <= total
    for step in (
        "sending decisions and outcomes: ",
        "decisions ended in the join and learned: 1,250 of 1,250",
    ):
        assert step in done.stdout, done.stdout
    assert learned and learned[0].metrics["shadow.Accuracy"] == accuracy.get()  # exactly River's
    snapshot = re.search(r"snapshot (\S+\.duckdb)", done.stdout)[1]
    versions = run_audit(snapshot, "versions").to_pylist()
    final = max(versions, key=lambda v: v["examples_seen"])
    assert final["examples_seen"] == 1250
    assert final["shadow_accuracy"] == round(accuracy.get(), 4) == 0.8928
    assert final["production_accuracy"] is None
    # The ingested decisions are external: learned from, never a published version's production.
    by_version = run_audit(snapshot, "metric_by_version").to_pylist()
    assert [(row["model_version"], row["served_by"], row["decisions"]) for row in by_version] == [
        ("ingest", "external", 1250)
    ]
