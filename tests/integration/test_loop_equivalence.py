"""Through Kafka, the loop learns exactly what River learns in process."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from river import datasets, linear_model, metrics, preprocessing, tree
from river.datasets import synth

from adaptloop.learners.spec import LearnerSpec
from adaptloop.learners.store import ModelStore, model_bytes
from adaptloop.schemas import ModelVersion, OutcomeEvent, PredictionEvent
from adaptloop.schemas.topics import MODEL_UPDATES
from adaptloop.streams import EventProducer

from .loop_helpers import loop_settings, read_until, running_worker

pytestmark = pytest.mark.kafka


def _send_in_order(producer: EventProducer, model: str, stream) -> int:
    start = datetime.now(UTC)
    n = 0
    for n, (x, y) in enumerate(stream, 1):
        at = start + timedelta(milliseconds=n)
        decision = f"{model}-{n}"
        producer.send(
            PredictionEvent(
                decision_id=decision, model=model, model_version="v0", features=x, timestamp=at
            )
        )
        producer.send(OutcomeEvent(decision_id=decision, label=y, source="test", timestamp=at))
    return n


def test_single_partition_loop_equals_rivers_in_process_loop(kafka_bootstrap, tmp_path):
    specs = [
        LearnerSpec(
            name="phishing",
            recipe="logistic",
            metrics=["Accuracy"],
            checkpoint_every=100_000,
            checkpoint_seconds=1,
        ),
        # Agrawal's labels are the integers 0 and 1: a multiclass model keeps them, as River does
        LearnerSpec(
            name="agrawal",
            task="multiclass",
            recipe="hoeffding",
            metrics=["Accuracy"],
            checkpoint_every=100_000,
            checkpoint_seconds=1,
        ),
    ]
    settings = loop_settings(kafka_bootstrap, tmp_path / "home", specs, partitions=1)
    agrawal = list(synth.Agrawal(seed=7).take(2000))

    with running_worker(settings, tmp_path / "worker.log") as worker:
        with EventProducer(kafka_bootstrap, topic_prefix=settings.topic_prefix) as producer:
            sent = {
                "phishing": _send_in_order(producer, "phishing", datasets.Phishing()),
                "agrawal": _send_in_order(producer, "agrawal", agrawal),
            }

        def all_learned(events) -> bool:
            seen = {e.model: e.examples_seen for e in events if isinstance(e, ModelVersion)}
            return all(seen.get(name) == count for name, count in sent.items())

        versions = read_until(settings, [MODEL_UPDATES], all_learned, timeout=180, worker=worker)
    assert sent == {"phishing": 1250, "agrawal": 2000}
    final = {
        v.model: v
        for v in versions
        if isinstance(v, ModelVersion) and v.examples_seen == sent[v.model]
    }
    assert set(final) == {"phishing", "agrawal"}

    reference = preprocessing.StandardScaler() | linear_model.LogisticRegression()
    accuracy = metrics.Accuracy()
    for x, y in datasets.Phishing():
        accuracy.update(y, reference.predict_one(x))
        reference.learn_one(x, y)
    store = ModelStore(settings.models_dir)
    learned = store.load_model("phishing", final["phishing"].version)
    assert final["phishing"].metrics["shadow.Accuracy"] == accuracy.get()
    weights, expected = (
        learned["LogisticRegression"].weights,
        reference["LogisticRegression"].weights,
    )
    assert weights.keys() == expected.keys()
    assert all(abs(weights[k] - expected[k]) <= 1e-12 for k in expected)
    assert store.load_bytes("phishing", final["phishing"].version) == model_bytes(reference)

    tree_reference, tree_accuracy = tree.HoeffdingTreeClassifier(), metrics.Accuracy()
    for x, y in agrawal:
        tree_accuracy.update(y, tree_reference.predict_one(x))
        tree_reference.learn_one(x, y)
    learned_tree = store.load_model("agrawal", final["agrawal"].version)
    assert final["agrawal"].metrics["shadow.Accuracy"] == tree_accuracy.get()
    assert (learned_tree.n_nodes, learned_tree.height) == (
        tree_reference.n_nodes,
        tree_reference.height,
    )
    assert [learned_tree.predict_one(x) for x, _ in agrawal] == [
        tree_reference.predict_one(x) for x, _ in agrawal
    ]
