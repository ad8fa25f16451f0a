"""The feature budget: an example with too many features, or too many new names, is refused before
the model changes, and the model is the one that never saw it."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from river import datasets

from adaptloop.learners.online import OnlineLearner
from adaptloop.learners.spec import MAX_EVENT_FEATURES, MAX_FEATURE_NAMES, LearnerSpec
from adaptloop.learners.store import ModelStore, model_bytes
from adaptloop.schemas import TrainingExample
from adaptloop.schemas.errors import UnlearnableExample

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def _example(i: int, features: dict, label: bool = True, model: str = "m") -> TrainingExample:
    return TrainingExample(
        model=model,
        decision_id=str(i),
        model_version="v",
        features=features,
        label=label,
        predicted_at=NOW,
    )


@pytest.mark.parametrize("recipe", ["logistic", "hoeffding"])
def test_a_10000_feature_example_leaves_the_model_of_one_that_never_saw_it(recipe):
    spec = LearnerSpec(name="m", recipe=recipe, metrics=["Accuracy"])
    rows = list(datasets.Phishing())[:300]
    learner, reference = OnlineLearner(spec), OnlineLearner(spec)
    wide = _example(10_000, {f"f{k}": 1.0 for k in range(10_000)})
    for i, (x, y) in enumerate(rows):
        if i == 150:
            with pytest.raises(UnlearnableExample) as refused:
                learner.learn(wide, ("t:0", 10_000))
            assert str(refused.value) == (
                "decision '10000': over the feature budget: 10000 features; model 'm' takes "
                "1000 per example at "
                "most (max_event_features)"
            )
            assert refused.value.field == "features"
        assert learner.learn(_example(i, x, y), ("t:0", i)) and reference.learn(
            _example(i, x, y), ("t:0", i)
        )
    assert model_bytes(learner.model) == model_bytes(reference.model)
    assert (
        learner.progress.feature_names
        == reference.progress.feature_names
        == dict.fromkeys(rows[0][0])
    )
    assert learner.shadow["Accuracy"].get() == reference.shadow["Accuracy"].get()


def test_new_names_beyond_the_budget_are_refused_and_known_names_still_learn(tmp_path):
    spec = LearnerSpec(name="m", recipe="logistic", max_feature_names=4, metrics=["Accuracy"])
    learner = OnlineLearner(spec)
    assert learner.learn(_example(0, {"a": 1.0, "b": 2.0}), ("t:0", 0))
    assert learner.learn(_example(1, {"a": 1.0, "c": 2.0}), ("t:0", 1))
    before = (
        model_bytes(learner.model),
        learner.progress.examples_seen,
        dict(learner.progress.feature_names),
    )
    with pytest.raises(
        UnlearnableExample,
        match=r"2 new feature names would make 5; model 'm' "
        r"learns from 4 at most",
    ):
        learner.learn(_example(2, {"a": 1.0, "x": 1.0, "y": 1.0}), ("t:0", 2))
    assert (
        model_bytes(learner.model),
        learner.progress.examples_seen,
        learner.progress.feature_names,
    ) == before
    assert learner.learn(_example(3, {"a": 1.0, "d": 3.0}), ("t:0", 3))  # the fourth name
    assert list(learner.progress.feature_names) == ["a", "b", "c", "d"]
    # all known: learned
    assert learner.learn(_example(4, {"d": 1.0, "c": 0.0, "b": 1.0, "a": 0.0}), ("t:0", 4))
    # The names learned are the checkpoint's: a restarted learner refuses a fifth one too.
    store = ModelStore(tmp_path)
    store.checkpoint(learner)
    restored = store.restore(spec)
    assert list(restored.progress.feature_names) == ["a", "b", "c", "d"]
    with pytest.raises(UnlearnableExample, match="1 new feature names would make 5"):
        restored.learn(_example(5, {"e": 1.0}), ("t:0", 5))
    # Raised in the spec, the same example is learned (as when its dead letter is replayed).
    raised = store.restore(spec.model_copy(update={"max_feature_names": 5}))
    assert raised.learn(_example(5, {"e": 1.0}), ("t:0", 5)) and raised.progress.examples_seen == 5


def test_a_mini_batch_counts_the_names_of_its_pending_examples():
    learner = OnlineLearner(
        LearnerSpec(
            name="m", recipe="logistic", mini_batch=2, checkpoint_every=2, max_feature_names=2
        )
    )
    assert learner.learn(_example(0, {"a": 1.0, "b": 1.0}), ("t:0", 0))  # pending, not learned yet
    with pytest.raises(UnlearnableExample, match="1 new feature names would make 3"):
        learner.learn(_example(1, {"c": 1.0}), ("t:0", 1))


def test_declared_features_need_no_budget():
    spec = LearnerSpec(
        name="m",
        recipe="logistic",
        features={"a": "number", "b": "number", "c": "number"},
        max_event_features=2,
        max_feature_names=2,
    )
    assert spec.budget() is None
    assert OnlineLearner(spec).learn(_example(0, {"a": 1.0, "b": 1.0, "c": 1.0}))


def test_a_spec_without_a_budget_takes_the_settings_one():
    from adaptloop.settings import Settings

    settings = Settings(
        models=[LearnerSpec(name="a"), LearnerSpec(name="b", max_event_features=7)],
        max_event_features=20,
        max_feature_names=300,
    )
    assert settings.specs["a"].budget() == settings.specs["a"].budget().__class__(
        per_event=20, names=300
    )
    assert (settings.specs["b"].max_event_features, settings.specs["b"].max_feature_names) == (
        7,
        300,
    )
    assert (Settings().max_event_features, Settings().max_feature_names) == (
        MAX_EVENT_FEATURES,
        MAX_FEATURE_NAMES,
    )
