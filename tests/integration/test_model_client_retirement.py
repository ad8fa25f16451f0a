"""A model operators retire on model-specs is no longer served by the ModelClients that serve it (a
typed error saying who retired it and why, and no decision logged), nor by one started afterwards,
and is served again once it is added back; `adaptloop serve` started after the retirement answers
it as retired (404 ``ModelRetired``, the same words), and serves it once it is added back."""

from __future__ import annotations

import pytest
from river import datasets

from adaptloop.learners.online import OnlineLearner
from adaptloop.learners.signing import ModelKeys
from adaptloop.learners.spec import LearnerSpec
from adaptloop.learners.store import ModelStore
from adaptloop.schemas import ModelVersion, PredictionEvent
from adaptloop.schemas.errors import ModelRetired, UnknownModel
from adaptloop.schemas.topics import PREDICTIONS
from adaptloop.streams import EventProducer
from adaptloop.streams.model_client import ModelClient
from adaptloop.streams.specs import declare

from .loop_helpers import learn_rows, loop_settings, read_until, running_server, wait_for

pytestmark = pytest.mark.kafka

ROWS = list(datasets.Phishing())
RETIRED = "model 'churn' is retired (retired by ops: product closed); it is no longer served"


def _publish(bootstrap: str, prefix: str, store: ModelStore, spec: LearnerSpec) -> ModelVersion:
    """A version of ``spec``'s model that learned 50 rows, published as a worker would."""
    learner = OnlineLearner(spec)
    learn_rows(learner, ROWS[:50])
    version = store.checkpoint(learner)
    with EventProducer(bootstrap, topic_prefix=prefix) as producer:
        producer.send(version)
    return version


def _retire(bootstrap: str, prefix: str) -> None:
    """Retire ``churn`` as operators do (its words: :data:`RETIRED`)."""
    declare(
        bootstrap,
        "churn",
        None,
        status="retired",
        actor="ops",
        reason="product closed",
        prefix=prefix,
    )


def test_a_retired_model_raises_model_retired_and_serves_again_once_added_back(
    kafka_bootstrap, tmp_path
):
    settings = loop_settings(kafka_bootstrap, tmp_path / "home", [], partitions=3)
    prefix = settings.topic_prefix
    store = ModelStore(settings.models_dir, ModelKeys.create(tmp_path / "keys"))
    spec = LearnerSpec(name="churn", min_examples=0)
    declare(kafka_bootstrap, "churn", spec, actor="ops", reason="launch", prefix=prefix)
    version = _publish(kafka_bootstrap, prefix, store, spec)
    features = ROWS[100][0]
    logged: list[str] = []  # the decisions answered, each to be logged once

    def answered(client: ModelClient) -> bool:
        try:
            prediction = client.predict(features)
        except ModelRetired:
            return False
        assert prediction.model_version == version.version
        logged.append(prediction.decision_id)
        return True

    def refusal(client: ModelClient) -> ModelRetired | None:
        """The error ``predict`` raises now, or None (a decision answered) while it serves."""
        try:
            prediction = client.predict(features)
        except ModelRetired as error:
            return error
        logged.append(prediction.decision_id)
        return None

    client = ModelClient("churn", bootstrap=kafka_bootstrap, store=store, prefix=prefix)
    try:
        assert client.retired is None
        assert answered(client)

        _retire(kafka_bootstrap, prefix)
        error = wait_for(lambda: refusal(client), timeout=120)
        assert isinstance(error, ModelRetired) and isinstance(error, UnknownModel)
        assert str(error) == RETIRED
        assert (error.model, error.why) == ("churn", "retired by ops: product closed")
        assert client.retired == "retired by ops: product closed"

        # a client started after the retirement refuses at once (not NoModelYet)
        with ModelClient("churn", bootstrap=kafka_bootstrap, store=store, prefix=prefix) as later:
            assert later.retired == "retired by ops: product closed"
            with pytest.raises(ModelRetired) as refused_later:
                later.predict(features)
            assert str(refused_later.value) == RETIRED

            declare(kafka_bootstrap, "churn", spec, actor="ops", reason="reopened", prefix=prefix)
            assert wait_for(lambda: answered(client), timeout=120)
            assert wait_for(lambda: answered(later), timeout=120)
            assert client.retired is None and later.retired is None
    finally:
        client.close()  # delivers the decisions logged

    # every decision answered is logged, once; none while the model was retired
    events = read_until(settings, [PREDICTIONS], lambda seen: len(seen) >= len(logged), timeout=60)
    assert all(isinstance(event, PredictionEvent) for event in events)
    assert sorted(event.decision_id for event in events) == sorted(logged)  # type: ignore[union-attr]


def test_a_model_retired_before_it_published_a_version_is_refused_at_start(
    kafka_bootstrap, tmp_path
):
    settings = loop_settings(kafka_bootstrap, tmp_path / "home", [], partitions=3)
    prefix = settings.topic_prefix
    store = ModelStore(settings.models_dir, ModelKeys.create(tmp_path / "keys"))
    declare(kafka_bootstrap, "churn", LearnerSpec(name="churn"), actor="ops", prefix=prefix)
    _retire(kafka_bootstrap, prefix)
    # (without the retirement, this would wait its 60 s and say no version was published)
    with pytest.raises(ModelRetired) as refused:
        ModelClient("churn", bootstrap=kafka_bootstrap, store=store, prefix=prefix, wait=60)
    assert str(refused.value) == RETIRED


def test_a_serve_started_after_the_retirement_answers_it_retired_and_serves_it_once_added_back(
    kafka_bootstrap, tmp_path
):
    settings = loop_settings(kafka_bootstrap, tmp_path / "home", [], partitions=3)
    prefix = settings.topic_prefix
    store = settings.worker_model_store()  # signed with the home's key, which serve checks
    specs = {name: LearnerSpec(name=name, min_examples=0) for name in ("churn", "phishing")}
    versions = {}
    for name, spec in specs.items():
        declare(kafka_bootstrap, name, spec, actor="ops", reason="launch", prefix=prefix)
        versions[name] = _publish(kafka_bootstrap, prefix, store, spec)
    _retire(kafka_bootstrap, prefix)
    features = {"features": ROWS[100][0]}
    refused = {"error": "ModelRetired", "detail": RETIRED, "problems": []}

    with running_server(settings, tmp_path / "serve.log") as server:

        def health() -> dict | None:
            answer = server.request("GET", "/health")
            return answer.json() if answer is not None and answer.status_code == 200 else None

        assert wait_for(health) == {
            "ok": True,
            "waiting": {},
            "retired": {"churn": "retired by ops: product closed"},
        }
        for method, path, body in [
            ("POST", "/v1/models/churn:predict", features),
            ("GET", "/v1/models/churn", None),
        ]:
            answer = server.request(method, path, json=body)
            assert answer is not None
            assert (answer.status_code, answer.json()) == (404, refused), path
        listed = server.request("GET", "/v1/models")
        assert listed is not None and [m["model"] for m in listed.json()] == ["phishing"]

        declare(
            kafka_bootstrap, "churn", specs["churn"], actor="ops", reason="reopened", prefix=prefix
        )

        def served() -> dict | None:
            answer = server.request("POST", "/v1/models/churn:predict", json=features)
            return answer.json() if answer is not None and answer.status_code == 200 else None

        answer = wait_for(served, timeout=60)
        assert answer is not None and answer["model_version"] == versions["churn"].version
        assert health() == {"ok": True, "waiting": {}, "retired": {}}
        listed = server.request("GET", "/v1/models")
        assert listed is not None
        assert sorted(m["model"] for m in listed.json()) == ["churn", "phishing"]
