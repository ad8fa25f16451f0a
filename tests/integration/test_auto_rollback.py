"""The rollback policy: a corrupt update degrades the served model; the loop rolls back by
itself."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest
from river.datasets import synth

from adaptloop.learners.spec import DriftSpec, LearnerSpec
from adaptloop.learners.store import ModelStore
from adaptloop.schemas import ModelVersion, OutcomeEvent, TrainingExample
from adaptloop.schemas.topics import MODEL_UPDATES
from adaptloop.streams import EventProducer
from adaptloop.streams.model_client import ModelClient

from .loop_helpers import loop_settings, read_until, running_worker

pytestmark = pytest.mark.kafka


def _serve(client: ModelClient, producer: EventProducer, stream, first: int) -> None:
    """Decisions through the client, each outcome right after, at about 200 per second (the learner
    keeps up)."""
    for n, (x, y) in enumerate(stream, first):
        result = client.predict(x, decision_id=f"d{n}")
        producer.send(OutcomeEvent(decision_id=result.decision_id, label=y, source="test"))
        if n % 50 == 0:
            producer.flush()
            time.sleep(0.25)
    producer.flush()


def _version_at(settings, worker, count: int) -> ModelVersion:
    seen = read_until(
        settings,
        [MODEL_UPDATES],
        lambda seen: any(isinstance(v, ModelVersion) and v.examples_seen >= count for v in seen),
        timeout=180,
        worker=worker,
    )
    return next(v for v in seen if isinstance(v, ModelVersion) and v.examples_seen >= count)


def test_a_corrupt_update_is_rolled_back_and_serving_returns_to_the_good_version(
    kafka_bootstrap, tmp_path
):
    spec = LearnerSpec(
        name="sine",
        recipe="logistic",
        min_examples=0,  # served from its first version: this test is about rolling back
        metrics=["Accuracy"],
        checkpoint_every=200,
        checkpoint_seconds=None,
        drift=DriftSpec(
            policy="rollback", window=200, concept=False, data=False, rollback_bound=0.15
        ),
    )
    settings = loop_settings(kafka_bootstrap, tmp_path / "home", [spec], partitions=2)
    stream = [
        ({f"x{k}": v for k, v in x.items()}, bool(y))
        for x, y in synth.Sine(classification_function=0, seed=3).take(4000)
    ]
    store = ModelStore(settings.models_dir)
    served: list[ModelVersion] = []  # every version the client swapped to, in order

    with (
        running_worker(settings, tmp_path / "worker.log") as worker,
        EventProducer(kafka_bootstrap, topic_prefix=settings.topic_prefix) as producer,
        ModelClient(
            "sine",
            bootstrap=kafka_bootstrap,
            store=store,
            prefix=settings.topic_prefix,
            wait=60,
            on_swap=lambda version, lag: served.append(version),
        ) as client,
    ):
        _serve(client, producer, stream[:1000], 0)  # the model learns...
        assert client.wait_for_version(_version_at(settings, worker, 1000).version, timeout=60)
        _serve(client, producer, stream[1000:1400], 1000)  # ...and serves well
        # The corrupt update: 800 examples with inverted labels reach the learner directly.
        now = datetime.now(UTC)
        for n, (x, y) in enumerate(stream[1400:2200], 1400):
            producer.send(
                TrainingExample(
                    model="sine",
                    decision_id=f"poison-{n}",
                    model_version="none",
                    features=x,
                    label=not y,
                    predicted_at=now,
                    outcome_at=now,
                )
            )
        producer.flush()
        assert client.wait_for_version(_version_at(settings, worker, 2200).version, timeout=60)
        # the corrupt model serves, outcomes show it
        _serve(client, producer, stream[2200:3200], 2200)
        seen = read_until(
            settings,
            [MODEL_UPDATES],
            lambda seen: any(isinstance(v, ModelVersion) and v.reason == "rollback" for v in seen),
            timeout=180,
            worker=worker,
        )
        rollback = next(v for v in seen if isinstance(v, ModelVersion) and v.reason == "rollback")
        deadline = time.monotonic() + 60
        while rollback not in served and time.monotonic() < deadline:
            time.sleep(0.1)
    # Serving went back to the good version (learning then goes on from it, so it may have moved on
    # since).
    assert rollback in served
    assert served.index(rollback) > max(
        i
        for i, v in enumerate(served)
        if v.examples_seen >= 2200
        and v.reason == "checkpoint"
        and v.examples_seen <= rollback.examples_seen
    )

    versions = [v for v in seen if isinstance(v, ModelVersion)]
    good = [v for v in versions if v.reason == "checkpoint" and v.examples_seen <= 1400]
    assert rollback.actor == "policy:rollback" and "production error" in rollback.note
    # back to a version from before the corrupt update
    assert rollback.version in {v.version for v in good}
    assert rollback.parent != rollback.version and rollback.examples_seen > 2200
