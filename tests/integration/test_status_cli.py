"""``adaptloop status``: what Kafka says of the loop, and what is kept on disk."""

from __future__ import annotations

import uuid

import orjson
import pytest
from typer.testing import CliRunner

from adaptloop.cli import app
from adaptloop.learners.online import OnlineLearner
from adaptloop.learners.spec import LearnerSpec
from adaptloop.learners.store import ModelStore
from adaptloop.streams import ensure_topics

pytestmark = pytest.mark.kafka


def test_status_shows_the_files_each_model_keeps(kafka_bootstrap, tmp_path, monkeypatch):
    prefix = f"st{uuid.uuid4().hex[:8]}."
    ensure_topics(kafka_bootstrap, prefix=prefix, partitions=1)
    spec = LearnerSpec(name="churn", keep_versions=25)
    store = ModelStore(tmp_path / "models")
    learner = OnlineLearner(spec)
    store.checkpoint(learner)
    store.checkpoint(learner)  # nothing learned: the same version, no new file
    for env, value in {
        "BOOTSTRAP": kafka_bootstrap,
        "TOPIC_PREFIX": prefix,
        "HOME": str(tmp_path),
        "MODELS": orjson.dumps([spec.model_dump(mode="json")]).decode(),
        "KEEP_SNAPSHOTS": "3",
    }.items():
        monkeypatch.setenv(f"ADAPTLOOP_{env}", value)
    result = CliRunner().invoke(app, ["status"], terminal_width=200)
    assert result.exit_code == 0, result.output
    row = next(line for line in result.output.splitlines() if "models/churn" in line)
    assert [cell.strip() for cell in row.strip("│ ").split("│")] == [
        "models/churn",
        "1",
        "0.0",
        "newest 25",
    ]
    assert "newest 3" in next(line for line in result.output.splitlines() if "snapshots" in line)


def _versions(tmp_path):
    """Three records of churn as its learner makes them: v1 after 300 examples, v2 after 900, then a
    rollback to v1 (published again with the stream's figures: 900 examples and the running
    accuracy)."""
    from datetime import UTC, datetime

    from river import datasets

    from adaptloop.schemas import TrainingExample

    store = ModelStore(tmp_path / "models")
    learner = OnlineLearner(LearnerSpec(name="churn", recipe="logistic", metrics=["Accuracy"]))
    records = []
    for i, (x, y) in enumerate(datasets.Phishing().take(900)):
        example = TrainingExample(
            model="churn",
            decision_id=str(i),
            model_version="v0",  # no version of churn served them: no production accuracy
            features=x,
            prediction=y,
            label=y,
            predicted_at=datetime.now(UTC),
        )
        learner.learn(example, ("training-examples:0", i))
        if i in (299, 899):
            records.append(store.checkpoint(learner))
    learner.model = store.load_model("churn", records[0].version)
    records.append(store.checkpoint(learner, reason="rollback", actor="ops"))
    return records


def _status_row(output: str, model: str) -> list[str]:
    row = next(line for line in output.splitlines() if line.startswith(f"│ {model} "))
    return [cell.strip() for cell in row.strip("│ ").split("│")]


def _env(monkeypatch, tmp_path, kafka_bootstrap, prefix):
    # rich's width where output is not a terminal: no cell is cut
    monkeypatch.setenv("COLUMNS", "300")
    for env, value in {
        "BOOTSTRAP": kafka_bootstrap,
        "TOPIC_PREFIX": prefix,
        "HOME": str(tmp_path),
    }.items():
        monkeypatch.setenv(f"ADAPTLOOP_{env}", value)


def test_status_shows_a_rolled_back_to_version_with_its_own_figures(
    kafka_bootstrap, tmp_path, monkeypatch
):
    from adaptloop.streams.producer import EventProducer

    prefix = f"st{uuid.uuid4().hex[:8]}."
    ensure_topics(kafka_bootstrap, prefix=prefix, partitions=1)
    v1, v2, rollback = _versions(tmp_path)
    assert (rollback.version, rollback.examples_seen, rollback.metrics) == (
        v1.version,
        900,
        v2.metrics,
    )
    assert v1.metrics["shadow.Accuracy"] != v2.metrics["shadow.Accuracy"]
    with EventProducer(kafka_bootstrap, topic_prefix=prefix) as producer:
        for record in (v1, v2, rollback):
            producer.send(record)
    _env(monkeypatch, tmp_path, kafka_bootstrap, prefix)
    result = CliRunner().invoke(app, ["status"])
    assert result.exit_code == 0, result.output
    # v1's own figures (300 examples, its accuracy then), not the stream's; no decision served: "-"
    assert _status_row(result.output, "churn")[:6] == [
        "churn",
        v1.version,
        "rollback",
        "300",
        f"{v1.metrics['shadow.Accuracy']:.3f}",
        "-",
    ]


def test_status_finds_a_version_s_own_record_in_the_archive_once_compacted_away(
    kafka_bootstrap, tmp_path, monkeypatch
):
    from adaptloop.schemas import encode
    from adaptloop.schemas.topics import MODEL_UPDATES
    from adaptloop.snapshots.archive import ParquetArchive
    from adaptloop.snapshots.columns import RawRecord
    from adaptloop.streams.producer import EventProducer

    prefix = f"st{uuid.uuid4().hex[:8]}."
    ensure_topics(kafka_bootstrap, prefix=prefix, partitions=1)
    v1, v2, rollback = _versions(tmp_path)
    with EventProducer(kafka_bootstrap, topic_prefix=prefix) as producer:
        producer.send(rollback)  # the earlier records are gone from the compacted topic...
    name = MODEL_UPDATES.full_name(prefix)
    ParquetArchive(tmp_path / "archive").write(  # ...and kept in the archive
        MODEL_UPDATES,
        name,
        0,
        [RawRecord(0, i, 0, b"churn", encode(r)) for i, r in enumerate((v1, v2))],
    )
    _env(monkeypatch, tmp_path, kafka_bootstrap, prefix)
    result = CliRunner().invoke(app, ["status"])
    assert result.exit_code == 0, result.output
    assert _status_row(result.output, "churn")[3:6] == [
        "300",
        f"{v1.metrics['shadow.Accuracy']:.3f}",
        "-",
    ]

    # nowhere: said, never the stream's figures instead
    (tmp_path / "archive").rename(tmp_path / "gone")
    result = CliRunner().invoke(app, ["status"])
    assert result.exit_code == 0, result.output
    assert _status_row(result.output, "churn")[3:6] == ["-", "-", "-"]
    assert (
        f"the record that first published {v1.version} is neither on model-updates" in result.output
    )
