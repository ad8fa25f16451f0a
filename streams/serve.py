"""HTTP serving: the loop's models and event intake for services in any language (``adaptloop serve``).

- ``POST /v1/models/{model}:predict`` answers with the current version (hot-swapped from ``model-updates``
  as :class:`~adaptloop.streams.model_client.ModelClient` does) and logs the decision as a
  ``PredictionEvent``, exactly as a Python service's ``ModelClient.predict`` would;
- ``POST /v1/outcomes`` and ``POST /v1/feedback`` take an ``OutcomeEvent``, an ``AgentFeedbackEvent`` or a
  ``PreferenceEvent`` (the contracts of ``adaptloop schemas export``) and send it to its topic;
- ``GET /v1/models`` and ``GET /v1/models/{model}``: each model's served version, its parent, what it has
  learned and its metrics; ``GET /health``, ``GET /metrics``; ``GET /openapi.json`` describes it all.

A request the contracts refuse gets a 4xx with the contract's reason (422: a field; 404: an unknown model;
503: no version may serve yet), never a 500. Each configured model gets a client in the background, so the
server starts before the models have versions and serves each one as soon as it has.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import version as package_version
from typing import Annotated, Any

import orjson
from fastapi import Body, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from adaptloop.schemas.agents import AgentFeedbackEvent, PreferenceEvent
from adaptloop.schemas.base import FeatureValue, Name
from adaptloop.schemas.errors import (
    AdaptloopError,
    DeliveryFailed,
    InvalidInput,
    NoModelYet,
    PredictionFailed,
    UnknownModel,
)
from adaptloop.schemas.inference import OutcomeEvent
from adaptloop.streams.connection import ClientSettings
from adaptloop.streams.model_client import ModelClient
from adaptloop.streams.producer import EventProducer

log = logging.getLogger(__name__)

REQUESTS = Counter(
    "adaptloop_serve_requests_total", "HTTP requests answered, by route and status.", ["route", "status"]
)
PREDICT_SECONDS = Histogram(
    "adaptloop_serve_predict_seconds",
    "Time to answer a prediction (the model and the logged decision), by model.",
    ["model"],
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5),
)
CLIENT_RETRY_SECONDS = 5.0


class PredictRequest(BaseModel):
    """A decision to make: the features, and what identifies it (all optional but the features)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    features: dict[Name, FeatureValue] = Field(description="Feature name -> number, string, boolean or null.")
    decision_id: Name | None = Field(None, description="The decision's id (made if absent): outcomes name it.")
    tenant: Name | None = None
    user_id: Name | None = None
    session_id: Name | None = None


PREDICT_BODY = PredictRequest.model_json_schema()  # documents the body the predict route validates itself


class PredictResponse(BaseModel):
    decision_id: str = Field(description="Send the outcome under this id.")
    model: str
    model_version: str = Field(description="The version that answered (or `default` for the model's default).")
    prediction: Any = Field(description="A label as the model learned it (bool, int, string) or a number.")
    probabilities: dict[str, float] | None = Field(description="Per class, for classifiers; keys are JSON text.")
    fallback: bool = Field(description="Whether the model's declared default answered (no version may serve yet).")


class ModelInfo(BaseModel):
    model: str
    ready: bool = Field(description="Whether a version serves (else: waiting for the first one).")
    version: str | None = None
    parent: str | None = None
    reason: str | None = None
    examples_seen: int | None = None
    servable: bool | None = None
    metrics: dict[str, float | None] = Field(
        default_factory=dict, description="The version's metrics; null where one has scored no decision."
    )
    published_at: str | None = None


class Accepted(BaseModel):
    accepted: bool = True
    topic: str


class ServedModels:
    """One :class:`ModelClient` per model, each made in the background until it connects (a model with no
    version yet is retried every few seconds), all sending through one producer."""

    def __init__(self, settings: ClientSettings, models: list[str], producer: EventProducer) -> None:
        self.settings, self.producer = settings, producer
        self.clients: dict[str, ModelClient | None] = dict.fromkeys(models)
        self.problems: dict[str, str] = {}
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._connect, args=(m,), daemon=True) for m in models]
        for thread in self._threads:
            thread.start()

    def _connect(self, model: str) -> None:
        while not self._stop.is_set():
            try:
                self.clients[model] = ModelClient.from_settings(
                    model, self.settings, producer=self.producer, wait=CLIENT_RETRY_SECONDS
                )
                self.problems.pop(model, None)
                log.info("serving model %s", model)
                return
            except AdaptloopError as error:
                self.problems[model] = str(error)
                self._stop.wait(CLIENT_RETRY_SECONDS)

    def get(self, model: str) -> ModelClient:
        if model not in self.clients:
            raise UnknownModel(f"this server serves no model {model!r} (it serves {', '.join(self.clients)})")
        client = self.clients[model]
        if client is None:
            why = self.problems.get(model, "its client is connecting")
            raise NoModelYet(f"model {model!r} cannot serve yet: {why}")
        return client

    def close(self) -> None:
        self._stop.set()
        for client in self.clients.values():
            if client is not None:
                client.close()


def _info(name: str, client: ModelClient | None) -> ModelInfo:
    if client is None:
        return ModelInfo(model=name, ready=False)
    version = client.version
    return ModelInfo(
        model=name,
        ready=True,
        version=version.version,
        parent=version.parent,
        reason=version.reason,
        examples_seen=version.examples_seen,
        servable=version.servable,
        metrics=dict(version.metrics),
        published_at=version.timestamp.isoformat(),
    )


STATUS = {UnknownModel: 404, InvalidInput: 422, NoModelYet: 503, PredictionFailed: 503, DeliveryFailed: 503}


def create_app(settings: ClientSettings, models: list[str]) -> FastAPI:
    """The HTTP app serving ``models`` of the loop ``settings`` describe."""
    state: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        producer = EventProducer.from_settings(settings)
        served = ServedModels(settings, models, producer)
        state.update(producer=producer, served=served)
        delivery = threading.Thread(target=_report_delivery_failures, args=(producer, served), daemon=True)
        delivery.start()
        try:
            yield
        finally:
            served.close()
            producer.flush(10)

    predicted, answered_predict = PREDICT_SECONDS, REQUESTS.labels("predict", 200)
    app = FastAPI(
        title="adaptloop",
        version=package_version("adaptloop"),
        summary="The loop's models and event intake over HTTP: predict with the current version, send outcomes "
        "and feedback.",
        lifespan=lifespan,
    )

    @app.exception_handler(AdaptloopError)
    async def adaptloop_error(request: Request, error: AdaptloopError) -> JSONResponse:
        status = next((code for kind, code in STATUS.items() if isinstance(error, kind)), 400)
        REQUESTS.labels("error", status).inc()
        return JSONResponse({"detail": str(error), "error": type(error).__name__}, status_code=status)

    @app.exception_handler(ValidationError)
    async def invalid_body(request: Request, error: ValidationError) -> JSONResponse:
        REQUESTS.labels("error", 422).inc()
        return JSONResponse({"detail": error.errors(include_url=False, include_context=False)}, status_code=422)

    @app.post(
        "/v1/models/{model}:predict",
        response_model=PredictResponse,
        responses={404: {"description": "No such model"}, 422: {"description": "Features the contract refuses"}},
        openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": PREDICT_BODY}}}},
    )
    async def predict(model: str, http: Request) -> Response:
        """Predict with the model's current version and log the decision (its ``decision_id`` names the
        outcome to send later)."""
        # The hot path: the body is validated by pydantic straight from its bytes (FastAPI's own body
        # handling costs about as much again), on the event loop (a prediction and its send take tens of
        # microseconds, a thread hop more); the answer is serialised directly (the documented PredictResponse).
        started = time.perf_counter()
        request = PredictRequest.model_validate_json(await http.body())
        client = state["served"].get(model)
        answer = client.predict(
            request.features,
            request.decision_id,
            tenant=request.tenant,
            user_id=request.user_id,
            session_id=request.session_id,
        )
        predicted.labels(model).observe(time.perf_counter() - started)
        answered_predict.inc()
        body = {
            "decision_id": answer.decision_id,
            "model": model,
            "model_version": answer.model_version,
            "prediction": answer.prediction,
            "probabilities": answer.probabilities,
            "fallback": answer.fallback,
        }
        return Response(orjson.dumps(body), media_type="application/json")

    @app.post("/v1/outcomes", response_model=Accepted, status_code=202)
    async def outcome(event: OutcomeEvent) -> Response:
        """Report what happened to a decision (its label or reward)."""
        state["producer"].send(event)
        REQUESTS.labels("outcomes", 202).inc()
        return Response(b'{"accepted":true,"topic":"outcomes"}', status_code=202, media_type="application/json")

    @app.post("/v1/feedback", response_model=Accepted, status_code=202)
    async def feedback(event: Annotated[AgentFeedbackEvent | PreferenceEvent, Body()]) -> Accepted:
        """An agent's step or a user's feedback (``AgentFeedbackEvent``), or a pairwise preference
        (``PreferenceEvent``)."""
        state["producer"].send(event)
        REQUESTS.labels("feedback", 202).inc()
        topic = "preferences" if isinstance(event, PreferenceEvent) else "agent-feedback"
        return Accepted(topic=topic)

    @app.get("/v1/models", response_model=list[ModelInfo])
    def list_models() -> list[ModelInfo]:
        """Every model this server serves: its current version, lineage head and metrics."""
        return [_info(name, client) for name, client in state["served"].clients.items()]

    @app.get("/v1/models/{model}", response_model=ModelInfo)
    def one_model(model: str) -> ModelInfo:
        served: ServedModels = state["served"]
        if model not in served.clients:
            raise UnknownModel(f"this server serves no model {model!r}")
        return _info(model, served.clients[model])

    @app.get("/health")
    def health() -> JSONResponse:
        """200 once every model serves a version; 503 (naming those still waiting) before."""
        served: ServedModels = state["served"]
        waiting = {name: served.problems.get(name, "connecting") for name, c in served.clients.items() if c is None}
        return JSONResponse({"ok": not waiting, "waiting": waiting}, status_code=503 if waiting else 200)

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return app


def _report_delivery_failures(producer: EventProducer, served: ServedModels) -> None:
    """Serve the producer's delivery reports; log (never drop silently) events Kafka did not take."""
    while not served._stop.is_set():
        try:
            producer.poll()
        except DeliveryFailed as error:
            log.error("events not delivered to Kafka: %s", error)
        time.sleep(0.5)
