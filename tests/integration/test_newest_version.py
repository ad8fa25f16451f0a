"""The newest version wins whatever the read order: a client serves the version with the highest
sequence number from its model's own partition of model-updates (the only one it reads, unless
another model of its process is there); an extra record on another partition, or an old record again
on its own, never steps serving back (issue 28: one such record made every client serve 1,200
examples' version though 1,601's was published)."""

from __future__ import annotations

import logging

import pytest
from river import datasets

from adaptloop.learners.online import OnlineLearner
from adaptloop.learners.signing import ModelKeys
from adaptloop.learners.spec import LearnerSpec
from adaptloop.learners.store import ModelStore
from adaptloop.schemas import ModelVersion
from adaptloop.schemas.topics import MODEL_UPDATES, partition_for
from adaptloop.streams import EventProducer
from adaptloop.streams.model_client import ModelClient
from adaptloop.streams.versions import published_versions

from .loop_helpers import learn_rows, loop_settings, read_until, wait_for

pytestmark = pytest.mark.kafka

PARTITIONS = 3


def test_clients_serve_the_highest_sequence_whatever_the_read_order(
    kafka_bootstrap, tmp_path, caplog
):
    settings = loop_settings(kafka_bootstrap, tmp_path / "home", [], partitions=PARTITIONS)
    prefix = settings.topic_prefix
    store = ModelStore(settings.models_dir, ModelKeys.create(tmp_path / "keys"))
    learner = OnlineLearner(LearnerSpec(name="phishing", recipe="logistic", min_examples=0))
    rows = list(datasets.Phishing())
    learn_rows(learner, rows[:1200], 0)
    older = store.checkpoint(learner)
    learn_rows(learner, rows[1200:1250], 1200)
    newer = store.checkpoint(learner)
    assert (older.examples_seen, newer.examples_seen) == (1200, 1250)
    # from the learner's own state, kept with its checkpoint
    assert (older.sequence, newer.sequence) == (1, 2)
    home = partition_for(b"phishing", PARTITIONS)
    elsewhere = [p for p in range(PARTITIONS) if p != home]
    with EventProducer(kafka_bootstrap, topic_prefix=prefix) as producer:
        producer.send(older)
        producer.send(newer)
    client_before = ModelClient("phishing", bootstrap=kafka_bootstrap, store=store, prefix=prefix)
    try:
        assert client_before.wait_for_version(newer.version, timeout=120)
        # The older version's record again, on each other partition, after the newer one.
        with (
            caplog.at_level(logging.WARNING),
            EventProducer(kafka_bootstrap, topic_prefix=prefix) as producer,
        ):
            for partition in elsewhere:
                producer.send(older, partition=partition)
            producer.flush()
            read_until(
                settings, [MODEL_UPDATES], lambda seen: len(seen) >= 2 + len(elsewhere), timeout=120
            )
            # A client started after them, and one that was running when they came, both serve the
            # newer one: a process's clients read only their models' partitions, where their
            # learners write.
            with ModelClient(
                "phishing", bootstrap=kafka_bootstrap, store=store, prefix=prefix
            ) as client_after:
                assert client_after.version.version == newer.version
                assert client_after.predict(rows[0][0]).model_version == newer.version
            assert client_before.version.version == newer.version
            assert _id(published_versions(kafka_bootstrap, prefix)["phishing"]) == _id(newer)

            # The older record again on the model's own partition (a stale writer): older by number,
            # ignored.
            producer.send(older)
            producer.flush()
            assert wait_for(lambda: "ignored phishing version" in caplog.text)
            assert client_before.version.version == newer.version
            assert _id(published_versions(kafka_bootstrap, prefix)["phishing"]) == _id(newer)

            # A rollback to the older bytes is a new record with a higher number: it is served.
            learner.model = store.load_model("phishing", older.version)
            rollback = store.checkpoint(learner, reason="rollback", actor="ops")
            assert (rollback.version, rollback.sequence) == (older.version, 3)
            producer.send(rollback)
            producer.flush()
            assert client_before.wait_for(lambda served: served.reason == "rollback", timeout=120)
            assert client_before.version.version == older.version
    finally:
        client_before.close()
    with ModelClient("phishing", bootstrap=kafka_bootstrap, store=store, prefix=prefix) as client:
        assert client.version.reason == "rollback" and client.version.sequence == 3


def test_records_from_before_sequence_numbers_are_older_than_numbered_ones(
    kafka_bootstrap, tmp_path
):
    settings = loop_settings(kafka_bootstrap, tmp_path / "home", [], partitions=PARTITIONS)
    prefix = settings.topic_prefix
    store = ModelStore(settings.models_dir)
    learner = OnlineLearner(LearnerSpec(name="phishing", recipe="logistic", min_examples=0))
    rows = list(datasets.Phishing())
    learn_rows(learner, rows[:100], 0)
    first = store.checkpoint(learner)
    learn_rows(learner, rows[100:200], 100)
    second = store.checkpoint(learner)
    # as an old worker wrote them
    unnumbered = [v.model_copy(update={"sequence": None}) for v in (first, second)]
    with EventProducer(kafka_bootstrap, topic_prefix=prefix) as producer:
        for version in unnumbered:
            producer.send(version)
    # Among records without numbers, the later on the partition wins (as before).
    with ModelClient("phishing", bootstrap=kafka_bootstrap, store=store, prefix=prefix) as client:
        assert client.version.version == second.version
    assert published_versions(kafka_bootstrap, prefix)["phishing"].version == second.version
    # A learner restored from an old checkpoint numbers its next version 1: newer than any
    # unnumbered one.
    learner.progress.record = unnumbered[0]
    learner.model = store.load_model("phishing", first.version)
    upgraded = store.checkpoint(learner, reason="rollback", actor="ops")
    assert upgraded.sequence == 1
    with EventProducer(kafka_bootstrap, topic_prefix=prefix) as producer:
        producer.send(upgraded)
        producer.send(unnumbered[1])  # an old record again, after it: older
    with ModelClient("phishing", bootstrap=kafka_bootstrap, store=store, prefix=prefix) as client:
        assert _id(client.version) == _id(upgraded)
    assert _id(published_versions(kafka_bootstrap, prefix)["phishing"]) == _id(upgraded)


def _id(version: ModelVersion) -> tuple[str, int | None, str]:
    return version.version, version.sequence, version.reason
