"""Backtest, store, promote: a candidate spec evaluated on the archived traffic is stored as a
version, promoted with a recorded command, served, learned on, and the whole lineage replays byte
for byte."""

from __future__ import annotations

import pytest
from river import datasets

from adaptloop.learners.spec import LearnerSpec
from adaptloop.learners.store import ModelStore
from adaptloop.schemas import ModelVersion
from adaptloop.schemas.topics import MODEL_UPDATES, TRAINING_EXAMPLES
from adaptloop.snapshots.backtest import backtest, candidate_spec
from adaptloop.snapshots.replay import replay
from adaptloop.streams import EventProducer
from adaptloop.streams.model_client import ModelClient
from adaptloop.streams.rollback import request_rollback

from .loop_helpers import loop_settings, read_until, running_worker, send_decisions
from .test_rollback_replay import _version_at, _wait_archived

pytestmark = pytest.mark.kafka


def test_a_backtested_candidate_is_promoted_served_learned_on_and_replayed(
    kafka_bootstrap, tmp_path
):
    spec = LearnerSpec(
        name="phishing",
        recipe="logistic",
        metrics=["Accuracy"],
        checkpoint_every=250,
        checkpoint_seconds=None,
    )
    settings = loop_settings(kafka_bootstrap, tmp_path / "home", [spec], partitions=2).model_copy(
        update={"archive_flush_seconds": 0.5}
    )
    data, prefix = list(datasets.Phishing()), settings.topic_prefix
    store = settings.worker_model_store()  # signs, as an operator on the worker's host would

    with running_worker(settings, tmp_path / "worker.log") as worker:
        with EventProducer(kafka_bootstrap, topic_prefix=prefix) as producer:
            send_decisions(producer, data[:1000], 0)
            producer.flush()
            current = _version_at(settings, worker, 1000)
            _wait_archived(settings.archive_location, TRAINING_EXAMPLES.full_name(prefix), 1000)

            candidate = candidate_spec(spec, {"params": {"l2": 0.001}})
            production, tried, _ = backtest(
                settings.archive_location, spec, {"l2": candidate}, prefix, store=store
            )
            assert production.examples == tried.examples == 1000 and tried.stored is not None
            # the replay is the learner's own
            assert production.value == current.metrics["shadow.Accuracy"]

            with ModelClient(
                "phishing",
                bootstrap=kafka_bootstrap,
                store=ModelStore(settings.models_dir),
                prefix=prefix,
            ) as client:
                promoted = request_rollback(
                    kafka_bootstrap,
                    store,
                    "phishing",
                    tried.stored,
                    actor="analyst",
                    reason="l2 won",
                    prefix=prefix,
                    action="promote",
                )
                assert (promoted.version, promoted.parent, promoted.reason, promoted.actor) == (
                    tried.stored,
                    current.version,
                    "promotion",
                    "analyst",
                )
                assert client.wait_for_version(tried.stored, timeout=60)  # served by itself
            send_decisions(producer, data[1000:], 1000)
            producer.flush()
            after = _version_at(settings, worker, 1250)
        assert after.parent == tried.stored  # learning continued from the promoted model
        # 250 .. 1000, promotion, 1250
        _wait_archived(settings.archive_location, MODEL_UPDATES.full_name(prefix), 6)
        _wait_archived(settings.archive_location, TRAINING_EXAMPLES.full_name(prefix), 1250)
        history = read_until(settings, [MODEL_UPDATES], lambda e: len(e) >= 6, timeout=120)
        assert [v.reason for v in history if isinstance(v, ModelVersion)][-2:] == [
            "promotion",
            "checkpoint",
        ]

    steps = replay(settings.archive_location, store, spec, after.version, prefix)
    assert [s.reason for s in steps][-2:] == ["promotion", "checkpoint"] and all(
        s.reproduced for s in steps
    )
