"""adaptloop ingest: River's Phishing through the real loop in ordered mode learns exactly what River learns in
process, and the audit of the snapshot it takes says the same accuracy."""

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
    spec = LearnerSpec(name="phishing", recipe="logistic", metrics=["Accuracy"], checkpoint_seconds=1)
    settings = loop_settings(kafka_bootstrap, tmp_path / "home", [spec], partitions=3).model_copy(
        update={"archive_flush_seconds": 1.0}
    )
    reference, accuracy = preprocessing.StandardScaler() | linear_model.LogisticRegression(), metrics.Accuracy()
    for x, y in datasets.Phishing():
        accuracy.update(y, reference.predict_one(x))
        reference.learn_one(x, y)

    with running_worker(settings, tmp_path / "worker.log") as worker:
        done = subprocess.run(
            [sys.executable, "-m", "adaptloop", "ingest", "river:Phishing", "--model", "phishing", "--ordered"],
            env={**os.environ, **settings_env(settings), "COLUMNS": "200"},
            capture_output=True,
            text=True,
            timeout=600,
        )
        worker.check_alive()
        learned = [
            v for v in read_all(kafka_bootstrap, MODEL_UPDATES, settings.topic_prefix) if v.examples_seen == 1250
        ]
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1250 decisions" in done.stdout and "joined 1250" in done.stdout, done.stdout
    assert f"shadow.Accuracy {accuracy.get():.4f}" in done.stdout, done.stdout
    assert learned and learned[0].metrics["shadow.Accuracy"] == accuracy.get()  # exactly River's
    snapshot = re.search(r"snapshot (\S+\.duckdb)", done.stdout)[1]
    versions = run_audit(snapshot, "versions").to_pylist()
    final = max(versions, key=lambda v: v["examples_seen"])
    assert final["examples_seen"] == 1250
    assert final["shadow_accuracy"] == round(accuracy.get(), 4) == 0.8928
    # The ingested decisions are external: learned from, never a published version's production.
    by_version = run_audit(snapshot, "metric_by_version").to_pylist()
    assert [(row["model_version"], row["served_by"], row["decisions"]) for row in by_version] == [
        ("ingest", "external", 1250)
    ]
