"""The ModelClients of one process share one follower of model-updates: each client gets its own
model's versions, closing one leaves the others following, a model added later is followed from its
history, and the follower (its consumer thread) goes away with its last client."""

from __future__ import annotations

import logging
import threading

import pytest
from river import datasets

from adaptloop.learners.online import OnlineLearner
from adaptloop.learners.signing import ModelKeys
from adaptloop.learners.spec import LearnerSpec
from adaptloop.learners.store import ModelStore
from adaptloop.schemas import ModelVersion, PredictionEvent
from adaptloop.schemas.topics import PREDICTIONS
from adaptloop.streams import EventProducer
from adaptloop.streams.follower import ModelUpdates
from adaptloop.streams.model_client import ModelClient
from adaptloop.streams.versions import home_partition

from .loop_helpers import learn_rows, loop_settings, read_until, wait_for

pytestmark = pytest.mark.kafka

PARTITIONS = 3
ROWS = list(datasets.Phishing())


def _names() -> tuple[str, str, str]:
    """Two models on one partition of model-updates, and a third on another one."""
    names = [f"model-{i}" for i in range(40)]
    first = names[0]
    same = next(
        n for n in names[1:] if home_partition(n, PARTITIONS) == home_partition(first, PARTITIONS)
    )
    other = next(
        n for n in names if home_partition(n, PARTITIONS) != home_partition(first, PARTITIONS)
    )
    return first, same, other


class Publisher:
    """Learns a little more of each model and publishes its next version, as a worker would."""

    def __init__(self, bootstrap: str, prefix: str, store: ModelStore) -> None:
        self.bootstrap, self.prefix, self.store = bootstrap, prefix, store
        self.learners: dict[str, OnlineLearner] = {}
        self.learned: dict[str, int] = {}

    def publish(self, model: str, partition: int | None = None) -> ModelVersion:
        learner = self.learners.setdefault(
            model, OnlineLearner(LearnerSpec(name=model, min_examples=0))
        )
        first = self.learned.get(model, 0)
        self.learned[model] = first + 50
        learn_rows(learner, ROWS[first : first + 50], first)
        version = self.store.checkpoint(learner)
        with EventProducer(self.bootstrap, topic_prefix=self.prefix) as producer:
            producer.send(version, partition=partition)
        return version


def _followers() -> int:
    return sum(thread.name == "model-updates" for thread in threading.enumerate())


def test_clients_of_one_process_share_one_follower(kafka_bootstrap, tmp_path):
    settings = loop_settings(kafka_bootstrap, tmp_path / "home", [], partitions=PARTITIONS)
    prefix = settings.topic_prefix
    store = ModelStore(settings.models_dir, ModelKeys.create(tmp_path / "keys"))
    a, b, c = _names()
    publisher = Publisher(kafka_bootstrap, prefix, store)
    first = {model: publisher.publish(model) for model in (a, b, c)}
    assert wait_for(lambda: _followers() == 0, timeout=30)  # no follower left by another test

    client_a = ModelClient(a, bootstrap=kafka_bootstrap, store=store, prefix=prefix)
    # on a's partition
    client_b = ModelClient(b, bootstrap=kafka_bootstrap, store=store, prefix=prefix)
    # on a partition of its own
    client_c = ModelClient(c, bootstrap=kafka_bootstrap, store=store, prefix=prefix)
    clients = [client_a, client_b, client_c]
    try:
        assert client_a._updates is client_b._updates is client_c._updates
        assert client_a.producer is client_b.producer is client_c.producer  # one producer too
        assert _followers() == 1
        assert [client.version.version for client in clients] == [
            first[m].version for m in (a, b, c)
        ]
        # b's start read a's partition again: no swap
        assert [client.swaps for client in clients] == [1, 1, 1]

        # Each client takes its own model's next version, and only that.
        second_a = publisher.publish(a)
        assert client_a.wait_for_version(second_a.version, timeout=60)
        second_c = publisher.publish(c)
        assert client_c.wait_for_version(second_c.version, timeout=60)
        assert client_b.version.version == first[b].version and client_b.swaps == 1
        decision = client_b.predict(ROWS[0][0])
        assert decision.model_version == first[b].version

        # Closing one leaves the others following, on its partition and on another.
        client_a.close()
        second_b, third_c = publisher.publish(b), publisher.publish(c)
        third_a = publisher.publish(a)
        assert client_b.wait_for_version(second_b.version, timeout=60)
        assert client_c.wait_for_version(third_c.version, timeout=60)
        # closed: no swap since
        assert client_a.version.version == second_a.version and client_a.swaps == 2
        assert _followers() == 1

        # A client of a model already followed, started later, catches up on its history by itself.
        with ModelClient(a, bootstrap=kafka_bootstrap, store=store, prefix=prefix) as again:
            assert again._updates is client_b._updates
            assert again.version.version == third_a.version and again.swaps == 1
        assert client_b.version.version == second_b.version and client_b.swaps == 2
    finally:
        for client in clients:
            client.close()
    # The last client's close stops the follower, and delivered what they logged.
    assert wait_for(lambda: _followers() == 0, timeout=30)
    assert not ModelUpdates._shared
    logged = read_until(settings, [PREDICTIONS], lambda seen: len(seen) >= 1, timeout=60)
    assert [(e.decision_id, e.model) for e in logged if isinstance(e, PredictionEvent)] == [
        (decision.decision_id, b)
    ]

    # A client after that starts a follower of its own again.
    with ModelClient(c, bootstrap=kafka_bootstrap, store=store, prefix=prefix) as later:
        assert later.version.version == third_c.version and _followers() == 1
    assert wait_for(lambda: _followers() == 0, timeout=30)


def test_clients_started_together_each_serve_their_model(kafka_bootstrap, tmp_path):
    """As ``adaptloop serve`` starts its clients: all at once, each in a thread; each serves its own
    model."""
    settings = loop_settings(kafka_bootstrap, tmp_path / "home", [], partitions=PARTITIONS)
    prefix = settings.topic_prefix
    store = ModelStore(settings.models_dir, ModelKeys.create(tmp_path / "keys"))
    publisher = Publisher(kafka_bootstrap, prefix, store)
    models = [f"m{i}" for i in range(12)]
    published = {model: publisher.publish(model) for model in models}
    clients: dict[str, ModelClient] = {}

    def start(model: str) -> None:
        clients[model] = ModelClient(
            model, bootstrap=kafka_bootstrap, store=store, prefix=prefix, wait=60
        )

    threads = [threading.Thread(target=start, args=(model,)) for model in models]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        assert {m: c.version.version for m, c in clients.items()} == {
            m: v.version for m, v in published.items()
        }
        assert _followers() == 1
    finally:
        for client in clients.values():
            client.close()
    assert wait_for(lambda: _followers() == 0, timeout=30)


def test_a_record_of_a_model_on_a_partition_read_for_another_model_is_ignored(
    kafka_bootstrap, tmp_path, caplog
):
    """The follower reads the partitions of its process's models: a record of one model on another's
    partition (not written by its learner) reaches its client, which ignores it, as a record read
    later would not step serving forward or back."""
    settings = loop_settings(kafka_bootstrap, tmp_path / "home", [], partitions=PARTITIONS)
    prefix = settings.topic_prefix
    store = ModelStore(settings.models_dir, ModelKeys.create(tmp_path / "keys"))
    a, _, c = _names()
    publisher = Publisher(kafka_bootstrap, prefix, store)
    first_a, first_c = publisher.publish(a), publisher.publish(c)
    elsewhere = home_partition(c, PARTITIONS)
    with (
        ModelClient(a, bootstrap=kafka_bootstrap, store=store, prefix=prefix) as client_a,
        ModelClient(c, bootstrap=kafka_bootstrap, store=store, prefix=prefix) as client_c,
        caplog.at_level(logging.WARNING),
    ):
        stray = publisher.publish(a, partition=elsewhere)  # newer by sequence, on c's partition
        assert (
            stray.sequence is not None
            and first_a.sequence is not None
            and stray.sequence > first_a.sequence
        )
        assert wait_for(
            lambda: f"ignored a record of model {a} on partition {elsewhere}" in caplog.text,
            timeout=60,
        )
        assert client_a.version.version == first_a.version and client_a.swaps == 1
        assert client_c.version.version == first_c.version and client_c.swaps == 1
