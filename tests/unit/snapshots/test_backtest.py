"""Backtests on an archive with a drift: the numbers are River's, run in process on the same
examples, and a candidate with a drift policy beats the production spec."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest
from river import linear_model, metrics, preprocessing
from river.datasets import synth

from adaptloop.learners.spec import DriftSpec, LearnerSpec
from adaptloop.schemas import ModelVersion, TrainingExample, encode
from adaptloop.schemas.topics import MODEL_UPDATES, TRAINING_EXAMPLES
from adaptloop.snapshots.archive import ParquetArchive
from adaptloop.snapshots.backtest import SERVED, backtest, candidate_spec
from adaptloop.snapshots.columns import RawRecord

START = datetime(2026, 11, 1, tzinfo=UTC)
PRODUCTION = LearnerSpec(
    name="churn", recipe="logistic", metrics=["Accuracy"], drift=DriftSpec(policy="alert")
)


def _drifting_stream(n: int = 6000, flip_at: int = 2500):
    """SEA with its labels flipped from ``flip_at`` on: an abrupt concept drift."""
    for i, (x, y) in enumerate(synth.SEA(seed=3).take(n)):
        yield {f"x{k}": v for k, v in x.items()}, (not y) if i >= flip_at else y


def _archive(tmp_path):
    version = "0123456789abcdef"
    rows = list(_drifting_stream())
    records = []
    for i, (x, y) in enumerate(rows):
        at = START + timedelta(seconds=i)
        example = TrainingExample(
            model="churn",
            decision_id=f"d{i}",
            # a third served by a service's own model
            model_version=version if i % 3 else "java-rules",
            features=x,
            prediction=bool(i % 2),
            label=y,
            predicted_at=at,
            timestamp=at,
        )
        records.append(RawRecord(0, i, 0, b"churn", encode(example)))
    archive = ParquetArchive(tmp_path / "archive")
    archive.write(TRAINING_EXAMPLES, "training-examples", 0, records)
    published = ModelVersion.model_validate(
        {
            "model": "churn",
            "version": version,
            "examples_seen": 0,
            "offsets": {},
            "metrics": {},
            "sha256": version * 4,
            "uri": "x",
            "size_bytes": 1,
        }
    )
    archive.write(
        MODEL_UPDATES, "model-updates", 0, [RawRecord(0, 0, 0, b"churn", encode(published))]
    )
    return tmp_path / "archive", rows


def test_a_drift_policy_candidate_beats_production_and_the_numbers_are_rivers(tmp_path):
    archive, rows = _archive(tmp_path)
    challenger = candidate_spec(PRODUCTION, {"drift": {"policy": "challenger"}})
    plain = candidate_spec(PRODUCTION, {"params": {"l2": 0.01}})
    production, drift, l2, served = backtest(
        archive, PRODUCTION, {"challenger": challenger, "l2": plain}
    )

    # River in process, on the same examples in the same order.
    for result, model in (
        (production, preprocessing.StandardScaler() | linear_model.LogisticRegression()),
        (l2, preprocessing.StandardScaler() | linear_model.LogisticRegression(l2=0.01)),
    ):
        accuracy = metrics.Accuracy()
        for x, y in rows:
            accuracy.update(y, model.predict_one(x))
            model.learn_one(x, y)
        assert result.value == accuracy.get() and result.examples == len(rows)

    # the challenger took over after the flip
    assert drift.promotions >= 1 and drift.value > production.value + 0.02
    assert drift.curve[-1][1] > production.curve[-1][1]
    # What production served: only the decisions its published versions answered, compared as the
    # learner does.
    answered = [(i, y) for i, (_, y) in enumerate(rows) if i % 3]
    assert served.name == SERVED and served.examples == len(answered)
    assert served.value == sum(bool(i % 2) == y for i, y in answered) / len(answered)


def test_the_cli_prints_the_table_and_draws_the_png(tmp_path):
    archive, _ = _archive(tmp_path)
    home = tmp_path / "home"
    (home / "archive").parent.mkdir(parents=True, exist_ok=True)
    (home / "archive").symlink_to(archive)
    env = {
        **os.environ,
        "ADAPTLOOP_HOME": str(home),
        "ADAPTLOOP_MODELS": PRODUCTION.model_dump_json().join("[]"),
        "COLUMNS": "160",
    }
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "adaptloop",
            "backtest",
            "churn",
            "-c",
            '{"drift": {"policy": "challenger"}}',
            "--png",
            str(tmp_path / "b.png"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert (
        "production spec (replayed)" in done.stdout
        and '{"drift": {"policy": "challenger"}}' in done.stdout
    )
    assert (tmp_path / "b.png").stat().st_size > 10_000
    bad = subprocess.run(
        [sys.executable, "-m", "adaptloop", "backtest", "churn", "-c", '{"recipe": "nope"}'],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode != 0 and "recipe" in bad.stdout + bad.stderr


@pytest.mark.parametrize("changes", [{"name": "other"}, {"task": "regression"}])
def test_a_candidate_learns_the_same_model(tmp_path, changes):
    archive, _ = _archive(tmp_path)
    from adaptloop.schemas.errors import ConfigError

    with pytest.raises(ConfigError, match="same model"):
        backtest(archive, PRODUCTION, {"x": candidate_spec(PRODUCTION, changes)})
