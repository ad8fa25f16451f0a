"""One record cannot degrade a model for good: a decision with 10,000 features, for two models
without a contract, is one dead letter per model (with the reason), and every version of each model
is byte for byte the version of a model that learned the same stream without it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from river import datasets
from typer.testing import CliRunner

from adaptloop.cli import app
from adaptloop.learners.online import OnlineLearner
from adaptloop.learners.spec import LearnerSpec
from adaptloop.learners.store import ModelStore, model_bytes
from adaptloop.schemas import (
    DeadLetter,
    ModelVersion,
    OutcomeEvent,
    PredictionEvent,
    TrainingExample,
)
from adaptloop.schemas.topics import DEAD_LETTERS, MODEL_UPDATES, TRAINING_EXAMPLES
from adaptloop.streams import EventProducer

from .loop_helpers import loop_settings, read_until, running_worker

pytestmark = pytest.mark.kafka

MODELS = {"wide-logistic": "logistic", "wide-tree": "hoeffding"}
WIDE_AT = 200  # the wide decision comes after this many rows


def _reference_versions(spec: LearnerSpec, rows) -> dict[int, bytes]:
    """The model bytes of a learner that learned ``rows`` (features, label), after each 100 examples
    and at the end."""
    learner, versions = OnlineLearner(spec), {}
    now = datetime(2026, 1, 1, tzinfo=UTC)
    for i, (x, y) in enumerate(rows):
        example = TrainingExample(
            model=spec.name,
            decision_id=f"d{i}",
            model_version="v0",
            features=x,
            label=y,
            predicted_at=now,
        )
        assert learner.learn(example)
        if (i + 1) % spec.checkpoint_every == 0 or i + 1 == len(rows):
            versions[i + 1] = model_bytes(learner.model)
    return versions


def test_a_10000_feature_record_is_a_dead_letter_and_the_models_are_those_that_never_saw_it(
    kafka_bootstrap, tmp_path, monkeypatch
):
    specs = [
        LearnerSpec(
            name=name,
            recipe=recipe,
            metrics=["Accuracy"],
            checkpoint_every=100,
            checkpoint_seconds=None,
            min_examples=0,
        )
        for name, recipe in MODELS.items()
    ]
    settings = loop_settings(kafka_bootstrap, tmp_path / "home", specs, partitions=1)
    rows = list(datasets.Phishing())[:400]
    wide = {f"f{k}": 1.0 for k in range(10_000)}
    start = datetime.now(UTC)
    with running_worker(settings, tmp_path / "worker.log") as worker:
        with EventProducer(kafka_bootstrap, topic_prefix=settings.topic_prefix) as producer:
            for i, (x, y) in enumerate(rows):
                at = start + timedelta(milliseconds=i)
                for name in MODELS:
                    if i == WIDE_AT:
                        producer.send(
                            PredictionEvent(
                                decision_id=f"{name}-wide",
                                model=name,
                                model_version="v0",
                                features=wide,
                                timestamp=at,
                            )
                        )
                        producer.send(
                            OutcomeEvent(
                                decision_id=f"{name}-wide", label=True, source="t", timestamp=at
                            )
                        )
                    producer.send(
                        PredictionEvent(
                            decision_id=f"{name}-d{i}",
                            model=name,
                            model_version="v0",
                            features=x,
                            timestamp=at,
                        )
                    )
                    producer.send(
                        OutcomeEvent(decision_id=f"{name}-d{i}", label=y, source="t", timestamp=at)
                    )
        events = read_until(
            settings,
            [MODEL_UPDATES, DEAD_LETTERS],
            lambda seen: (
                {(e.model, e.examples_seen) for e in seen if isinstance(e, ModelVersion)}
                >= {(name, len(rows)) for name in MODELS}
                and sum(isinstance(e, DeadLetter) for e in seen) >= len(MODELS)
            ),
            timeout=180,
            worker=worker,
        )
    store = ModelStore(settings.models_dir)
    versions_of_logistic_at_400 = 0
    for spec in specs:
        versions = {
            e.examples_seen: e
            for e in events
            if isinstance(e, ModelVersion) and e.model == spec.name and e.examples_seen
        }
        reference = _reference_versions(spec, rows)
        assert sorted(versions) == sorted(reference) == [100, 200, 300, 400]
        # the size and the learning of a model that never saw it
        for seen, version in versions.items():
            assert store.load_bytes(spec.name, version.version) == reference[seen], (
                spec.name,
                seen,
            )
            assert version.size_bytes == len(reference[seen])
        if spec.name == "wide-logistic":
            versions_of_logistic_at_400 = versions[400].size_bytes
    letters = [e for e in events if isinstance(e, DeadLetter)]
    assert sorted((d.source_topic, d.kind, d.reason) for d in letters) == sorted(
        (
            TRAINING_EXAMPLES.full_name(settings.topic_prefix),
            "rejected",
            (
                f"decision '{name}-wide': over the feature budget: 10000 features; model "
                f"'{name}' takes 1000 per "
                "example at most (max_event_features)"
            ),
        )
        for name in MODELS
    )

    # The operator raises the logistic model's budget and replays its letter: the model learns the
    # record.
    raised = [
        spec.model_copy(update={"max_event_features": 20_000, "checkpoint_seconds": 1.0})
        if spec.name == "wide-logistic"
        else spec
        for spec in specs
    ]
    for name, value in {
        "BOOTSTRAP": kafka_bootstrap,
        "TOPIC_PREFIX": settings.topic_prefix,
        "HOME": str(settings.home),
    }.items():
        monkeypatch.setenv(f"ADAPTLOOP_{name}", value)
    monkeypatch.setenv("COLUMNS", "300")
    with running_worker(
        settings.model_copy(update={"models": raised}), tmp_path / "worker-2.log"
    ) as worker:
        replay = [
            "deadletters",
            "replay",
            "--reason",
            "model 'wide-logistic' takes 1000",
            "--note",
            "raised",
            "--yes",
        ]
        replayed = CliRunner().invoke(app, replay, terminal_width=250)
        assert replayed.exit_code == 0 and "replayed 1 record(s)" in replayed.output, (
            replayed.output
        )
        after = read_until(
            settings,
            [MODEL_UPDATES],
            lambda seen: any(
                isinstance(e, ModelVersion) and e.examples_seen == len(rows) + 1 for e in seen
            ),
            timeout=120,
            worker=worker,
        )
    learned = next(
        e for e in after if isinstance(e, ModelVersion) and e.examples_seen == len(rows) + 1
    )
    assert learned.model == "wide-logistic"
    expected = _reference_versions(raised[0], [*rows, (wide, True)])[len(rows) + 1]
    assert store.load_bytes("wide-logistic", learned.version) == expected
    assert learned.size_bytes == len(expected) > 100 * versions_of_logistic_at_400
