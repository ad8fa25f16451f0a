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
    assert [cell.strip() for cell in row.strip("│ ").split("│")] == ["models/churn", "1", "0.0", "newest 25"]
    assert "newest 3" in next(line for line in result.output.splitlines() if "snapshots" in line)
