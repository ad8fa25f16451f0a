from __future__ import annotations

import pickle
from datetime import datetime, timezone

from river import datasets, metrics, preprocessing, linear_model, tree
from river.datasets import synth

from learners.online import OnlineLearner
from learners.spec import LearnerSpec
from learners.store import ModelStore, model_bytes
from schemas import TrainingExample

NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)


def _examples(stream, model: str):
    for i, (x, y) in enumerate(stream):
        yield i, TrainingExample(model=model, decision_id=str(i), model_version="v0", features=x, prediction=y,
                                 label=y, predicted_at=NOW)


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
    learner = OnlineLearner(LearnerSpec(name="agrawal", recipe="hoeffding", metrics=["Accuracy"]))
    for i, example in _examples(stream, "agrawal"):
        learner.learn(example, ("training-examples:0", i))
    assert learner.shadow["Accuracy"].get() == accuracy.get()
    assert learner.model.n_nodes == reference.n_nodes and learner.model.height == reference.height
    assert [learner.model.predict_one(x) for x, _ in stream[:500]] == [reference.predict_one(x) for x, _ in stream[:500]]


def test_production_metric_scores_the_served_prediction_not_the_learner():
    learner = OnlineLearner(LearnerSpec(name="m", metrics=["Accuracy"]))
    for i in range(10):
        learner.learn(TrainingExample(model="m", decision_id=str(i), model_version="v", features={"x": 1.0},
                                      prediction=False, label=i < 3, predicted_at=NOW))
    assert learner.production["Accuracy"].get() == 0.7


def test_each_example_is_learned_once_and_unlearnable_ones_are_skipped():
    learner = OnlineLearner(LearnerSpec(name="m"))
    example = TrainingExample(model="m", decision_id="d", model_version="v", features={"x": 1.0}, label=True,
                              predicted_at=NOW)
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
    assert pickle.loads(store.load_bytes("p", second.version)).predict_one(stream[0][1].features) is not None
