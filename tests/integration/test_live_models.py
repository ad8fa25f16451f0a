"""Models changed live: a model added on model-specs is learned by a running worker and served by a
running `adaptloop serve`; an update applies at once; another recipe starts as a challenger and is
promoted on evidence; a retired model stops being learned and served, its versions kept."""

from __future__ import annotations

import os
import subprocess
import sys

import httpx
import pytest
from river import datasets

from adaptloop.learners.spec import LearnerSpec
from adaptloop.schemas import DeadLetter, ModelSpecRecord, ModelVersion
from adaptloop.schemas.topics import DEAD_LETTERS, MODEL_SPECS, MODEL_UPDATES
from adaptloop.settings import Settings
from adaptloop.streams import EventProducer
from adaptloop.worker import settings_env

from .loop_helpers import (
    TopicReader,
    loop_settings,
    no_role_stopped,
    running_server,
    running_worker,
    send_decisions,
    wait_for,
    wait_until_read,
)

pytestmark = pytest.mark.kafka


def adaptloop(settings: Settings, *args: str) -> str:
    """Run an ``adaptloop`` command as an operator would, with the loop's settings; its output."""
    done = subprocess.run(
        [sys.executable, "-m", "adaptloop", *args],
        env={**os.environ, **settings_env(settings), "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_a_model_added_on_the_topic_is_learned_and_served_updated_challenged_and_retired(
    kafka_bootstrap, tmp_path
):
    seed = LearnerSpec(
        name="phishing", checkpoint_every=100, checkpoint_seconds=None, min_examples=0
    )
    settings = loop_settings(kafka_bootstrap, tmp_path / "home", [seed], partitions=2)
    data = list(datasets.Phishing())
    with (
        running_worker(settings, tmp_path / "worker.log") as worker,
        TopicReader(settings, MODEL_UPDATES) as updates,
        TopicReader(settings, MODEL_SPECS) as specs,
        TopicReader(settings, DEAD_LETTERS) as letters,
        EventProducer(settings.bootstrap_address, topic_prefix=settings.topic_prefix) as producer,
    ):

        def versions(model: str = "churn") -> list[ModelVersion]:
            return [v for v in updates.read() if isinstance(v, ModelVersion) and v.model == model]

        def learned(count: int) -> bool:
            return any(v.examples_seen == count for v in versions())

        def applied() -> None:  # the learner has read (and applied) every spec record so far
            wait_until_read(settings, "learner", [MODEL_SPECS], worker)

        # The worker seeded the topic with ADAPTLOOP_MODELS's model.
        seeded = wait_for(
            lambda: [r for r in specs.read() if isinstance(r, ModelSpecRecord)], worker=worker
        )
        assert [(r.model, r.status, r.actor) for r in seeded] == [
            ("phishing", "active", "ADAPTLOOP_MODELS")
        ]

        with running_server(settings, tmp_path / "serve.log") as server:

            def predict(model: str) -> httpx.Response | None:
                return server.request(
                    "POST", f"/v1/models/{model}:predict", json={"features": data[0][0]}
                )

            assert wait_for(
                lambda: (answer := predict("phishing")) is not None and answer.status_code == 200
            )
            assert predict("churn").status_code == 404  # type: ignore[union-attr]

            # Added: a Hoeffding tree that never splits and predicts the majority class at its
            # leaf.
            said = adaptloop(
                settings,
                *(
                    "models",
                    "add",
                    "churn",
                    "--recipe",
                    "hoeffding",
                    "--param",
                    "grace_period=1000000",
                ),
                *("--param", "leaf_prediction=mc"),
                *(
                    "--set",
                    "checkpoint_every=100",
                    "--set",
                    "checkpoint_seconds=null",
                    "--set",
                    "min_examples=50",
                ),
                *(
                    "--set",
                    "drift.challenger_window=50",
                    "--set",
                    "drift.data=false",
                    "--reason",
                    "new product",
                ),
            )
            assert "churn: spec" in said and "added by" in said
            applied()
            send_decisions(producer, data[:300], 0, model="churn")
            producer.flush()
            assert wait_for(lambda: learned(300), worker=worker)
            assert [(v.examples_seen, v.reason) for v in versions()] == [
                (0, "initial"),
                (100, "checkpoint"),
                (200, "checkpoint"),
                (300, "checkpoint"),
            ]

            def served() -> bool:
                answer = predict("churn")
                return (
                    answer is not None
                    and answer.status_code == 200
                    and not answer.json()["fallback"]
                )

            assert wait_for(served)  # a running `adaptloop serve` took the new model up

            # Updated: a version every 50 examples from now on.
            adaptloop(settings, "models", "update", "churn", "--set", "checkpoint_every=50")
            applied()
            send_decisions(producer, data[300:400], 300, model="churn")
            producer.flush()
            assert wait_for(lambda: learned(400), worker=worker)
            assert [v.examples_seen for v in versions()][-2:] == [350, 400]

            # An operator's typo: the command refuses it, nothing is sent.
            typo = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "adaptloop",
                    "models",
                    "update",
                    "churn",
                    "--set",
                    "checkpoint_evry=10",
                ],
                env={**os.environ, **settings_env(settings)},
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert typo.returncode == 78
            assert (
                "error: model 'churn': checkpoint_evry = 10: Extra inputs are not permitted"
            ) in typo.stdout
            # A bad record sent some other way: dead-lettered with the reason; the model goes on
            # as it was.
            producer.send(
                ModelSpecRecord(model="churn", spec={"recipe": "logisitc"}, actor="script")
            )
            producer.flush()
            applied()
            refused = wait_for(
                lambda: [
                    letter
                    for letter in letters.read()
                    if isinstance(letter, DeadLetter)
                    and letter.source_topic.endswith("model-specs")
                ],
                worker=worker,
            )
            assert [letter.reason for letter in refused] == [
                (
                    "the spec is refused, model 'churn' goes on as it was: model "
                    "'churn': recipe 'logisitc' is "
                    "unknown; choices: logistic, hoeffding, linear, "
                    "hoeffding_regressor, or 'module:function' "
                    "returning a River estimator"
                )
            ]

            # Another recipe: it learns beside the tree and replaces it when the paired test
            # says so.
            said = adaptloop(
                settings,
                *("models", "update", "churn", "--recipe", "logistic", "--set", "params={}"),
                # (and what it learned is published within a second)
                *("--set", "checkpoint_seconds=1"),
            )
            assert "another model" in said
            applied()
            send_decisions(producer, data[400:900], 400, model="churn")
            producer.flush()
            assert wait_for(lambda: learned(900), worker=worker)
            promotions = [v for v in versions() if v.reason == "promotion"]
            # The tree predicts the majority class: the logistic model is far better, and
            # promoted once the test has compared them on the window's 50 examples at least.
            # (Where exactly depends on the order the join's two partitions interleave their
            # examples in.)
            assert len(promotions) == 1 and promotions[0].actor == "spec"
            assert 450 <= promotions[0].examples_seen < 900
            assert (promotions[0].note or "").startswith(
                "the spec's new model promoted: paired sign test"
            )
            after = [v for v in versions() if v.examples_seen > promotions[0].examples_seen]
            # learning went on from it
            assert after and after[0].parent == promotions[0].version
            assert settings.worker_model_store().learned_spec("churn").recipe == "logistic"  # type: ignore[union-attr]

            # Retired: no longer served, its examples dead-lettered, its versions kept.
            kept = versions()
            adaptloop(settings, "models", "retire", "churn", "--reason", "product closed")
            applied()
            assert wait_for(
                lambda: (answer := predict("churn")) is not None and answer.status_code == 404
            )
            refused = predict("churn").json()  # type: ignore[union-attr]
            assert refused["error"] == "ModelRetired" and "product closed" in refused["detail"]
            send_decisions(producer, data[900:1000], 900, model="churn")
            producer.flush()

            def retired_letters() -> list[DeadLetter]:
                return [
                    letter
                    for letter in letters.read()
                    if isinstance(letter, DeadLetter)
                    and letter.reason == ("model 'churn' is retired")
                ]

            assert (
                len(
                    wait_for(lambda: len(retired_letters()) >= 100, worker=worker)
                    and retired_letters()
                )
                == 100
            )
            assert versions() == kept
            assert predict("phishing").status_code == 200  # type: ignore[union-attr]
            assert settings.worker_model_store().versions("churn")  # kept for audits

            listed = adaptloop(settings, "models", "list")
            assert "churn" in listed and "retired" in listed and "product closed" in listed
            assert "ADAPTLOOP_MODELS" in listed
    assert no_role_stopped(tmp_path / "worker.log")
