from __future__ import annotations

import pickle
from collections import OrderedDict
from datetime import UTC, datetime

from river import datasets, linear_model, metrics, preprocessing, tree
from river.datasets import synth

from adaptloop.learners.online import OnlineLearner
from adaptloop.learners.recent import RecentIds
from adaptloop.learners.spec import LearnerSpec
from adaptloop.learners.store import ModelStore, model_bytes
from adaptloop.schemas import TrainingExample

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def _examples(stream, model: str):
    for i, (x, y) in enumerate(stream):
        yield (
            i,
            TrainingExample(
                model=model,
                decision_id=str(i),
                model_version="v0",
                features=x,
                prediction=y,
                label=y,
                predicted_at=NOW,
            ),
        )


def test_logistic_learner_equals_rivers_own_predict_then_learn_loop():
    reference = preprocessing.StandardScaler() | linear_model.LogisticRegression()
    accuracy, logloss = metrics.Accuracy(), metrics.LogLoss()
    for x, y in datasets.Phishing():
        accuracy.update(y, reference.predict_one(x))
        logloss.update(y, reference.predict_proba_one(x))
        reference.learn_one(x, y)

    learner = OnlineLearner(LearnerSpec(name="phishing", recipe="logistic"))
    for i, example in _examples(datasets.Phishing(), "phishing"):
        assert learner.learn(example, ("training-examples:0", i))
    assert learner.shadow["Accuracy"].get() == accuracy.get()
    assert learner.shadow["LogLoss"].get() == logloss.get()
    assert learner.model["LogisticRegression"].weights == reference["LogisticRegression"].weights
    assert model_bytes(learner.model) == model_bytes(reference)


def test_hoeffding_learner_equals_rivers_own_loop():
    reference, accuracy = tree.HoeffdingTreeClassifier(), metrics.Accuracy()
    stream = list(synth.Agrawal(seed=3).take(3000))
    for x, y in stream:
        accuracy.update(y, reference.predict_one(x))
        reference.learn_one(x, y)
    # Agrawal's labels are the integers 0 and 1: a multiclass model keeps them as River does.
    learner = OnlineLearner(
        LearnerSpec(name="agrawal", task="multiclass", recipe="hoeffding", metrics=["Accuracy"])
    )
    for i, example in _examples(stream, "agrawal"):
        learner.learn(example, ("training-examples:0", i))
    assert learner.shadow["Accuracy"].get() == accuracy.get()
    assert learner.model.n_nodes == reference.n_nodes and learner.model.height == reference.height
    assert [learner.model.predict_one(x) for x, _ in stream[:500]] == [
        reference.predict_one(x) for x, _ in stream[:500]
    ]


def test_production_metric_scores_the_served_prediction_not_the_learner():
    learner = OnlineLearner(LearnerSpec(name="m", metrics=["Accuracy"]))
    learner.progress.published.add("v")  # "v" is a version this learner published
    for i in range(10):
        learner.learn(
            TrainingExample(
                model="m",
                decision_id=str(i),
                model_version="v",
                features={"x": 1.0},
                prediction=False,
                label=i < 3,
                predicted_at=NOW,
            )
        )
    assert learner.production["Accuracy"].get() == 0.7


def test_each_example_is_learned_once_and_unlearnable_ones_are_skipped():
    learner = OnlineLearner(LearnerSpec(name="m"))
    example = TrainingExample(
        model="m",
        decision_id="d",
        model_version="v",
        features={"x": 1.0},
        label=True,
        predicted_at=NOW,
    )
    assert learner.learn(example, ("t:0", 5)) is True
    assert learner.learn(example, ("t:0", 5)) is False  # same offset
    assert learner.learn(example, ("t:0", 6)) is False  # same decision re-emitted at a new offset
    expired = example.model_copy(update={"decision_id": "e", "status": "expired", "label": None})
    assert learner.learn(expired, ("t:0", 7)) is False
    assert learner.progress.examples_seen == 1 and learner.progress.offsets == {"t:0": 8}


def test_checkpoint_restore_continues_exactly_like_an_uninterrupted_learner(tmp_path):
    stream = list(_examples(datasets.Phishing(), "p"))
    spec = LearnerSpec(name="p")
    straight = OnlineLearner(spec)
    for i, example in stream:
        straight.learn(example, ("t:0", i))

    store = ModelStore(tmp_path)
    interrupted = OnlineLearner(spec)
    for i, example in stream[:600]:
        interrupted.learn(example, ("t:0", i))
    first = store.checkpoint(interrupted)
    for i, example in stream[600:700]:  # learned after the checkpoint, then the process dies
        interrupted.learn(example, ("t:0", i))
    resumed = store.restore(spec)
    assert resumed.progress.offsets == {"t:0": 600}
    for i, example in stream:  # the consumer re-reads from the start: covered offsets are skipped
        resumed.learn(example, ("t:0", i))
    assert model_bytes(resumed.model) == model_bytes(straight.model)
    assert resumed.metric_values() == straight.metric_values()
    second = store.checkpoint(resumed)
    assert second.parent == first.version and second.examples_seen == len(stream)
    assert (
        pickle.loads(store.load_bytes("p", second.version)).predict_one(stream[0][1].features)
        is not None
    )


def test_a_checkpoint_from_before_mini_batches_contracts_and_budgets_restores_and_learns_on(
    tmp_path,
):
    stream = list(_examples(datasets.Phishing(), "p"))
    spec = LearnerSpec(name="p")
    straight = OnlineLearner(spec)
    for i, example in stream:
        straight.learn(example, ("t:0", i))

    store = ModelStore(tmp_path)
    old = OnlineLearner(spec)
    for i, example in stream[:600]:
        old.learn(example, ("t:0", i))
    first = store.checkpoint(old)
    # Its progress as the first checkpoints wrote it: none of the later fields, the ids in an
    # OrderedDict.
    checkpoint = pickle.loads(store.last_checkpoint["p"])
    for name in ("pending", "published", "label_type", "feature_names"):
        delattr(checkpoint.progress, name)
    checkpoint.progress.recent_ids = OrderedDict.fromkeys(checkpoint.progress.recent_ids)
    old_bytes = pickle.dumps(checkpoint)

    resumed = store.learner_from(old_bytes, spec)
    progress = resumed.progress
    assert (progress.pending, progress.label_type, progress.feature_names) == ([], None, {})
    # its one version: scored as production from now on
    assert list(progress.published) == [first.version]
    assert isinstance(progress.recent_ids, RecentIds) and list(progress.recent_ids) == [
        str(i) for i in range(600)
    ]
    for i, example in stream:
        resumed.learn(example, ("t:0", i))
    assert model_bytes(resumed.model) == model_bytes(straight.model)
    assert resumed.metric_values() == straight.metric_values()


def test_a_restarted_tree_writes_the_versions_of_one_never_restarted(tmp_path):
    """A learner goes on from each version's bytes, as a restart does: a Hoeffding tree (whose
    leaves keep feature names in dicts of their own) has the same version ids with and without a
    restart between them."""
    stream = list(_examples(datasets.Phishing(), "p"))
    spec = LearnerSpec(name="p", recipe="hoeffding", params={"grace_period": 50})

    def versions(store: ModelStore, learner: OnlineLearner, examples: list) -> list[str]:
        ids = []
        for i, example in examples:
            learner.learn(example, ("t:0", i))
            if (i + 1) % 250 == 0:
                ids.append(store.checkpoint(learner).version)
        return ids

    straight = versions(ModelStore(tmp_path / "a"), OnlineLearner(spec), stream)
    store = ModelStore(tmp_path / "b")
    before = versions(store, OnlineLearner(spec), stream[:500])
    after = versions(store, store.restore(spec), stream[500:])
    assert len(straight) == 5 and before + after == straight


def test_mini_batches_equal_rivers_own_learn_many_loop():
    """mini_batch=B: each batch is predicted by the model before it, then learned with one
    learn_many."""
    import pandas as pd

    rows = list(datasets.Phishing())
    batch = 50
    reference, accuracy = (
        preprocessing.StandardScaler() | linear_model.LogisticRegression(),
        metrics.Accuracy(),
    )
    whole = len(rows) - len(rows) % batch
    for start in range(0, whole, batch):
        X = pd.DataFrame([x for x, _ in rows[start : start + batch]])
        y = pd.Series([y for _, y in rows[start : start + batch]])
        for y_true, y_pred in zip(y, reference.predict_proba_many(X).idxmax(axis=1)):
            accuracy.update(y_true, y_pred)
        reference.learn_many(X, y)

    spec = LearnerSpec(
        name="phishing",
        recipe="logistic",
        metrics=["Accuracy"],
        mini_batch=batch,
        checkpoint_every=100,
    )
    learner = OnlineLearner(spec)
    for i, example in _examples(rows, "phishing"):
        assert learner.learn(example, ("training-examples:0", i))
    assert (
        learner.progress.examples_seen == whole
        and len(learner.progress.pending) == len(rows) - whole
    )
    assert learner.shadow["Accuracy"].get() == accuracy.get()
    assert model_bytes(learner.model) == model_bytes(reference)


def test_a_pending_mini_batch_survives_a_checkpoint(tmp_path):
    rows = list(datasets.Phishing())[:230]
    spec = LearnerSpec(
        name="p", recipe="logistic", metrics=["Accuracy"], mini_batch=40, checkpoint_every=40
    )
    whole = OnlineLearner(spec)
    for i, example in _examples(rows, "p"):
        whole.learn(example, ("t:0", i))
    store = ModelStore(tmp_path)
    first = OnlineLearner(spec)
    for i, example in _examples(rows[:150], "p"):  # 3 batches learned, 30 examples pending
        first.learn(example, ("t:0", i))
    store.checkpoint(first)
    resumed = store.restore(spec)
    assert len(resumed.progress.pending) == 30
    for i, example in _examples(rows, "p"):
        resumed.learn(example, ("t:0", i))  # the first 150 are skipped by offset
    assert resumed.progress.examples_seen == whole.progress.examples_seen == 200
    assert model_bytes(resumed.model) == model_bytes(whole.model)
    assert resumed.progress.dataset_hash == whole.progress.dataset_hash


def test_mini_batch_needs_learn_many_and_whole_batches_per_version():
    import pytest

    with pytest.raises(ValueError, match="has no learn_many"):
        OnlineLearner(
            LearnerSpec(name="t", recipe="hoeffding", mini_batch=10, checkpoint_every=100)
        )
    with pytest.raises(ValueError, match="multiple of mini_batch"):
        LearnerSpec(name="t", mini_batch=300, checkpoint_every=1000)


def test_a_category_for_a_model_of_numbers_is_rejected_before_anything_changes():
    import pytest

    from adaptloop.schemas.errors import UnlearnableExample

    learner = OnlineLearner(LearnerSpec(name="m", recipe="logistic", metrics=["Accuracy"]))
    good = TrainingExample(
        model="m",
        decision_id="1",
        model_version="v",
        features={"x": 1.0},
        label=True,
        predicted_at=NOW,
    )
    learner.learn(good, ("t:0", 0))
    before = (
        model_bytes(learner.model),
        dict(learner.progress.offsets),
        learner.progress.examples_seen,
    )
    bad = TrainingExample(
        model="m",
        decision_id="2",
        model_version="v",
        features={"x": "pro"},
        label=True,
        predicted_at=NOW,
    )
    with pytest.raises(
        UnlearnableExample,
        match="decision '2': feature 'x' is 'pro', a string; model 'm' learns from numbers only",
    ):
        learner.learn(bad, ("t:0", 1))
    assert (
        model_bytes(learner.model),
        learner.progress.offsets,
        learner.progress.examples_seen,
    ) == before
    # A tree takes categories and missing values.
    tree_learner = OnlineLearner(LearnerSpec(name="m", recipe="hoeffding", metrics=["Accuracy"]))
    assert tree_learner.learn(bad) and tree_learner.learn(
        TrainingExample(
            model="m",
            decision_id="3",
            model_version="v",
            features={"x": None},
            label=False,
            predicted_at=NOW,
        )
    )


def test_a_restarted_learner_goes_on_under_its_changed_spec(tmp_path):
    """Metrics, drift settings and the policy are a spec's to change between runs: they take effect
    at restart, while the model, its restored metrics and unchanged monitors go on."""
    from river import drift

    from adaptloop.learners.spec import DriftSpec

    rows = list(_examples(datasets.Phishing(), "p"))[:500]
    spec = LearnerSpec(
        name="p", metrics=["Accuracy"], drift=DriftSpec(policy="challenger", window=100)
    )
    learner = OnlineLearner(spec)
    for i, example in rows:
        learner.learn(example, ("t:0", i))
    store = ModelStore(tmp_path)
    store.checkpoint(learner)
    accuracy, detectors = learner.shadow["Accuracy"].get(), learner.watch.concept.detectors

    same_detector = spec.model_copy(
        update={
            "metrics": ["Accuracy", "LogLoss"],
            "checkpoint_every": 50,
            "drift": DriftSpec(policy="rollback", window=100, psi_threshold=0.5),
        }
    )
    resumed = store.restore(same_detector)
    assert list(resumed.shadow) == ["Accuracy", "LogLoss"]
    assert resumed.shadow["Accuracy"].get() == accuracy  # restored, not restarted
    assert resumed.shadow["LogLoss"].get() == metrics.LogLoss().get()  # new: starts now
    assert resumed.watch.spec.drift.policy == "rollback" and resumed.watch.challenger is None
    assert resumed.watch.data.spec.psi_threshold == 0.5
    # same detector settings: it goes on
    assert resumed.watch.concept.detectors.keys() == detectors.keys()
    assert resumed.watch.concept.seen["shadow_error"] == learner.watch.concept.seen["shadow_error"]

    other_detector = spec.model_copy(
        update={"drift": DriftSpec(detector="PageHinkley", window=100)}
    )
    resumed = store.restore(other_detector)
    assert resumed.watch.concept.detectors == {}  # a new detector starts over
    i, example = list(_examples(datasets.Phishing(), "p"))[600]
    assert resumed.learn(example, ("t:0", i))
    assert isinstance(resumed.watch.concept.detectors["shadow_error"], drift.PageHinkley)


def test_a_changed_recipe_is_refused_with_what_to_do(tmp_path):
    import pytest

    from adaptloop.schemas.errors import SpecChanged

    store = ModelStore(tmp_path)
    store.checkpoint(OnlineLearner(LearnerSpec(name="p", recipe="logistic")))
    changed = LearnerSpec(name="p", recipe="hoeffding")
    with pytest.raises(
        SpecChanged,
        match=r"recipe='logistic'.*now says recipe='hoeffding'.*new "
        r"name",
    ):
        store.restore(changed)
    with pytest.raises(SpecChanged):
        store.check(changed)
    store.check(LearnerSpec(name="p", recipe="logistic", checkpoint_every=5))  # cadence only: fine
    with pytest.raises(SpecChanged, match="params"):
        store.restore(LearnerSpec(name="p", recipe="logistic", params={"l2": 0.1}))


def test_pending_examples_are_learned_when_mini_batch_is_unset(tmp_path):
    rows = list(datasets.Phishing())[:150]
    batched = LearnerSpec(
        name="p", recipe="logistic", metrics=["Accuracy"], mini_batch=40, checkpoint_every=40
    )
    learner = OnlineLearner(batched)
    for i, example in _examples(rows, "p"):  # 3 batches learned, 30 examples pending
        learner.learn(example, ("t:0", i))
    store = ModelStore(tmp_path)
    store.checkpoint(learner)
    pending = [example for example, _, _ in learner.progress.pending]
    learner._learn_batch()  # what the restored learner must do with them: one batch of 30
    resumed = store.restore(batched.model_copy(update={"mini_batch": None}))
    assert (
        resumed.progress.pending == []
        and resumed.progress.examples_seen == 150 == learner.progress.examples_seen
    )
    assert model_bytes(resumed.model) == model_bytes(learner.model)
    assert resumed.progress.dataset_hash == learner.progress.dataset_hash
    assert [e.decision_id for e in pending] == [str(i) for i in range(120, 150)]


def test_a_metric_over_no_decisions_is_none_in_the_version_record_never_0(tmp_path):
    """A version that served no decision has no production accuracy (None, null in JSON), not
    River's 0.0; once a version's served decisions are scored, the figure is exactly River's."""
    from adaptloop.schemas import encode

    store = ModelStore(tmp_path)
    learner = OnlineLearner(LearnerSpec(name="phishing", recipe="logistic", metrics=["Accuracy"]))
    initial = store.checkpoint(learner)
    assert initial.metrics == {"shadow.Accuracy": None, "production.Accuracy": None}
    assert b'"metrics":{"shadow.Accuracy":null,"production.Accuracy":null}' in encode(initial)

    stream = list(datasets.Phishing())
    shadow, production = metrics.Accuracy(), metrics.Accuracy()
    reference = preprocessing.StandardScaler() | linear_model.LogisticRegression()
    for i, (x, y) in enumerate(stream):
        # first a service's own model, then the version
        served_by = initial.version if i >= 600 else "v0"
        fallback = 300 <= i < 600  # meanwhile answered by the default prediction
        example = TrainingExample(
            model="phishing",
            decision_id=str(i),
            model_version=served_by,
            features=x,
            prediction=not y if i % 3 == 0 else y,
            label=y,
            predicted_at=NOW,
            fallback=fallback,
        )
        shadow.update(y, reference.predict_one(x))
        reference.learn_one(x, y)
        learner.learn(example, ("training-examples:0", i))
        if i >= 600:
            production.update(y, example.prediction)
        if i == 599:
            before = store.checkpoint(learner)
            assert before.metrics == {"shadow.Accuracy": shadow.get(), "production.Accuracy": None}
            assert 0 < shadow.get() < 1
    after = store.checkpoint(learner)
    assert after.metrics == {
        "shadow.Accuracy": shadow.get(),
        "production.Accuracy": production.get(),
    }
    assert after.metrics["production.Accuracy"] == (
        len(stream) - 600 - len(range(600, len(stream), 3))
    ) / (len(stream) - 600)
