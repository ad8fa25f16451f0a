"""HTTP serving: the loop's models and event intake for services in any language (``adaptloop
serve``).

- ``POST /v1/models/{model}:predict`` answers with the current version (hot-swapped from
  ``model-updates`` as :class:`~adaptloop.streams.model_client.ModelClient` does) and logs the
  decision as a ``PredictionEvent``, exactly as a Python service's ``ModelClient.predict`` would;
- ``POST /v1/outcomes`` and ``POST /v1/feedback`` take an ``OutcomeEvent``, an
  ``AgentFeedbackEvent`` or a ``PreferenceEvent`` (the contracts of ``adaptloop schemas export``)
  and send it to its topic;
- ``GET /v1/models`` and ``GET /v1/models/{model}``: each model's served version, its parent, what
  it has learned and its metrics; ``GET /health``, ``GET /metrics``; ``GET /openapi.json`` describes
  it all.

No client input gets a 5xx. :class:`RequestGate` refuses a body before a route reads it: too large
(413, from its ``Content-Length`` or counted as it streams), not JSON (415), not RFC 8259 JSON or
nested too deep (422); a request the contracts refuse gets a 4xx with the contract's reason (422: a
field; 404: an unknown model; 503: no version may serve yet). Every error is one :class:`ErrorBody`,
quoting inputs as short excerpts. Each configured model gets a client in the background, so the
server starts before the models have versions and serves each one as soon as it has. Started to
follow ``model-specs`` (``adaptloop serve`` without ``--model``), it serves a model added there from
its first servable version on. A model operators retired is answered 404 ``ModelRetired`` (who
retired it and why), whether the server started before the retirement or after: it asks the model's
one :class:`~adaptloop.streams.retirement.Retirement` in the process, as its ``ModelClient`` does, and
serves the model again once it is added back.
"""

from __future__ import annotations

import asyncio
import logging
import reprlib
import threading
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib.metadata import version as package_version
from typing import Annotated, Any

import orjson
from fastapi import Body, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from adaptloop.learners.catalog import retirement
from adaptloop.learners.spec import MAX_EVENT_FEATURES
from adaptloop.schemas.agents import AgentFeedbackEvent, PreferenceEvent
from adaptloop.schemas.base import FeatureValue, Name
from adaptloop.schemas.codec import MAX_RECORD_BYTES
from adaptloop.schemas.errors import (
    AdaptloopError,
    DeliveryFailed,
    InvalidInput,
    ModelRetired,
    NoModelYet,
    PredictionFailed,
    UnknownModel,
)
from adaptloop.schemas.inference import OutcomeEvent
from adaptloop.streams.connection import ClientSettings
from adaptloop.streams.model_client import ModelClient
from adaptloop.streams.producer import EventProducer
from adaptloop.streams.retirement import ModelSpecs, Retirement
from adaptloop.streams.specs import SpecFollower

log = logging.getLogger(__name__)

REQUESTS = Counter(
    "adaptloop_serve_requests_total",
    "HTTP requests answered, by route and status.",
    ["route", "status"],
)
PREDICT_SECONDS = Histogram(
    "adaptloop_serve_predict_seconds",
    "Time to answer a prediction (the model and the logged decision), by model.",
    ["model"],
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5),
)
CLIENT_RETRY_SECONDS = 5.0
RETIRED_SECONDS = 0.5
"""How often the thread of a retired model (or of one whose records on ``model-specs`` are being
read) looks again whether it may serve: the most this adds to a model's first answer once it is added
back (then a client is made and its version loaded)."""
MAX_DEPTH = 32
"""JSON nested deeper than this is refused: no contract nests more than three levels, and a parser's
or a validator's recursion over 100,000 levels is an easy way to exhaust a server."""
MAX_FEATURES = MAX_EVENT_FEATURES
"""Features a prediction request may carry at most: the models' feature budget
(``max_event_features``), as the worker would dead-letter an example with more."""
EXCERPT_CHARS = 80
MAX_HEADER_BYTES = 32 * 1024
"""A request's headers together, names and values: more is refused (431). A 50 MB header would
otherwise pass beside the body's limit (the HTTP parser takes headers of any size; a proxy in front
can refuse them earlier)."""
READ_SECONDS = 30.0
"""How long the rest of a body may take to arrive once the request has begun: a client that declares
100 bytes and sends one would otherwise hold its connection, and a task, open for good (408
then)."""


@dataclass(frozen=True)
class RequestLimits:
    """What one request may be: its body's bytes (default: the contracts' record limit, what Kafka
    would take), its JSON's depth and a prediction's number of features."""

    max_body_bytes: int = MAX_RECORD_BYTES
    max_depth: int = MAX_DEPTH
    max_features: int = MAX_FEATURES
    max_header_bytes: int = MAX_HEADER_BYTES
    read_seconds: float = READ_SECONDS


class Problem(BaseModel):
    loc: list[str | int] = Field(description="Where: `body` and the path of the field in it.")
    msg: str = Field(description="What is wrong with it.")
    input: str | None = Field(
        None, description=f"An excerpt of the value sent (at most {EXCERPT_CHARS} characters)."
    )


class ErrorBody(BaseModel):
    """Every error's answer (4xx and 503): what kind of error, a sentence for a person, and for a
    request the contracts refuse, each problem with an excerpt of the input (never the whole
    input)."""

    error: str = Field(
        description="The kind: BodyTooLarge (413), UnsupportedMediaType (415), InvalidJSON, "
        "InvalidRequest or "
        "InvalidInput (422), UnknownModel, ModelRetired or NotFound (404), MethodNotAllowed "
        "(405), NoModelYet, "
        "PredictionFailed or DeliveryFailed (503)."
    )
    detail: str = Field(description="What went wrong and what to do.")
    problems: list[Problem] = Field(
        default_factory=list, description="Each field the contracts refuse."
    )


_excerpts = reprlib.Repr()  # (keywords only from Python 3.12)
_excerpts.maxlevel, _excerpts.maxdict, _excerpts.maxlist = 2, 4, 4
_excerpts.maxstring, _excerpts.maxother, _excerpts.maxlong = (
    EXCERPT_CHARS - 2,
    EXCERPT_CHARS,
    EXCERPT_CHARS,
)


def excerpt(value: Any) -> str:
    """A short, printable excerpt of ``value`` (bounded work and length, whatever its size).

    >>> excerpt("x" * 10_000)[:12], len(excerpt("x" * 10_000)) <= EXCERPT_CHARS
    ("'xxxxxxxxxxx", True)
    >>> excerpt({f"f{i}": i for i in range(10_000)})
    "{'f0': 0, 'f1': 1, 'f10': 10, 'f100': 100, ...}"
    """
    if isinstance(value, bytes | bytearray):
        value = bytes(value[: EXCERPT_CHARS * 4]).decode("utf-8", "replace")
    shown = _excerpts.repr(value)
    return shown if len(shown) <= EXCERPT_CHARS else shown[: EXCERPT_CHARS - 1] + "…"


def error_response(
    status: int, error: str, detail: str, problems: list[Problem] | None = None
) -> Response:
    """An :class:`ErrorBody` answer (counted in the requests metric)."""
    REQUESTS.labels("error", status).inc()
    body = {"error": error, "detail": detail, "problems": [p.model_dump() for p in problems or []]}
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


def _problems(errors: list[Any]) -> list[Problem]:
    return [
        Problem(
            loc=list(e["loc"]),
            msg=str(e["msg"]),
            input=excerpt(e["input"]) if "input" in e else None,
        )
        for e in errors[:20]
    ]


def invalid_request(errors: list[Any], prefix: tuple[str, ...] = ()) -> Response:
    """422 for a body the contracts refuse: each problem (at most 20) with an excerpt of its
    input."""
    problems = _problems([{**e, "loc": (*prefix, *e["loc"])} for e in errors])
    first = problems[0] if problems else None
    where = ".".join(map(str, first.loc)) if first else "body"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return error_response(
        422, "InvalidRequest", f"{where}: {first.msg if first else 'invalid'}{more}", problems
    )


class RequestGate:
    """The body of every POST, checked before the app reads it (an ASGI middleware).

    - 431 for any request whose headers take more than ``max_header_bytes``;
    - 415 unless its ``Content-Type`` is JSON;
    - 413 as soon as it is larger than ``max_body_bytes``: from its ``Content-Length`` before a byte
      is read, else counted as it streams in (chunked), so a 10 GB body costs at most the limit;
    - 422 unless it is JSON as RFC 8259 defines it (no ``NaN``, no ``Infinity``; UTF-8) nested at
      most ``max_depth`` deep;
    - 408 when the body has not come whole within ``read_seconds``.

    The routes then get the body as it came, and validate it against their contract.
    """

    def __init__(self, app: ASGIApp, limits: RequestLimits) -> None:
        self.app, self.limits = app, limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        header_bytes = sum(len(name) + len(value) for name, value in scope["headers"])
        if header_bytes > self.limits.max_header_bytes:
            detail = (
                f"the headers may take at most {self.limits.max_header_bytes:,} bytes "
                f"(these: {header_bytes:,})"
            )
            response = error_response(431, "HeadersTooLarge", detail)
            response.headers["connection"] = "close"
            await response(scope, receive, send)
            return
        if scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        headers, limit = Headers(scope=scope), self.limits.max_body_bytes
        media_type = headers.get("content-type", "").split(";")[0].strip().lower()
        if media_type != "application/json":
            shown = excerpt(media_type) if media_type else "none"
            detail = (
                f"the body must be JSON, sent with Content-Type: application/json (not {shown})"
            )
            await error_response(415, "UnsupportedMediaType", detail)(scope, receive, send)
            return
        declared = headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await self._too_large(int(declared), scope, receive, send)
            return
        body = bytearray()
        deadline = asyncio.get_running_loop().time() + self.limits.read_seconds
        while True:
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                detail = (
                    f"the body did not come whole within {self.limits.read_seconds:g} s "
                    f"({len(body):,} bytes came)"
                )
                response = error_response(408, "RequestTimeout", detail)
                response.headers["connection"] = "close"
                await response(scope, receive, send)
                return
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if len(body) > limit:
                await self._too_large(None, scope, receive, send)
                return
            if not message.get("more_body", False):
                break
        problem = json_problem(bytes(body), self.limits.max_depth)
        if problem is not None:
            await error_response(422, "InvalidJSON", problem)(scope, receive, send)
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": bytes(body), "more_body": False}

        await self.app(scope, replay, send)

    async def _too_large(
        self, size: int | None, scope: Scope, receive: Receive, send: Send
    ) -> None:
        sent = f"{size:,} bytes" if size is not None else "more"
        detail = (
            f"the body may take at most {self.limits.max_body_bytes:,} bytes (this one: {sent})"
        )
        response = error_response(413, "BodyTooLarge", detail)
        response.headers["connection"] = "close"  # the rest of the body is never read
        await response(scope, receive, send)


def json_problem(body: bytes, max_depth: int) -> str | None:
    """Why ``body`` is not a JSON document a contract could take, or None.

    >>> print(json_problem(b'[NaN]', 32))
    not valid JSON at byte 1: NaN and Infinity are not JSON numbers (send null for a missing value), near '[NaN]'
    >>> json_problem(b'[' * 40 + b']' * 40, 32)
    'JSON nested deeper than 32 levels'
    >>> json_problem(b'{"features": {"x": 1}}', 32) is None
    True
    """
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        at = error.pos
        if error.msg == "depth limit exceeded":
            return f"JSON nested deeper than {max_depth} levels"
        if any(word in body[max(0, at - 1) : at + 9] for word in (b"NaN", b"Infinity")):
            why = "NaN and Infinity are not JSON numbers (send null for a missing value)"
        else:
            why = error.msg
        return (
            f"not valid JSON at byte {at}: {why}, near {excerpt(body[max(0, at - 20) : at + 20])}"
        )
    return f"JSON nested deeper than {max_depth} levels" if _deeper(value, max_depth) else None


def _deeper(value: Any, limit: int) -> bool:
    """Whether ``value``'s containers nest deeper than ``limit`` (a walk without recursion)."""
    stack = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if level > limit:
            return True
        children = (
            item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
        )
        stack.extend((child, level + 1) for child in children if isinstance(child, dict | list))
    return False


class PredictRequest(BaseModel):
    """A decision to make: the features, and what identifies it (all optional but the features)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    features: dict[Name, FeatureValue] = Field(
        description="Feature name -> number, string, boolean or null."
    )
    decision_id: Name | None = Field(
        None, description="The decision's id (made if absent): outcomes name it."
    )
    tenant: Name | None = None
    user_id: Name | None = None
    session_id: Name | None = None


class PredictResponse(BaseModel):
    decision_id: str = Field(description="Send the outcome under this id.")
    model: str
    model_version: str = Field(
        description="The version that answered (or `default` for the model's default)."
    )
    prediction: Any = Field(
        description="A label as the model learned it (bool, int, string) or a number."
    )
    probabilities: dict[str, float] | None = Field(
        description="Per class, for classifiers; keys are JSON text."
    )
    fallback: bool = Field(
        description="Whether the model's declared default answered (no version may serve yet)."
    )


class ModelInfo(BaseModel):
    model: str
    ready: bool = Field(description="Whether a version serves (else: waiting for the first one).")
    version: str | None = None
    parent: str | None = None
    reason: str | None = None
    examples_seen: int | None = None
    servable: bool | None = None
    metrics: dict[str, float | None] = Field(
        default_factory=dict,
        description="The version's metrics; null where one has scored no decision.",
    )
    published_at: str | None = None
    canary: dict[str, Any] | None = Field(
        None,
        description="While a canary runs: the stable version serving the decisions outside the "
        "canary's share, the "
        "share, and the gate's figures (as on the version record).",
    )


class Accepted(BaseModel):
    accepted: bool = True
    topic: str


class ServedModels:
    """One :class:`ModelClient` per model, each made in the background until it connects (a model
    with no version yet is retried every few seconds), all sending through one producer and all
    following ``model-updates`` through the process's one follower
    (:class:`~adaptloop.streams.follower.ModelUpdates`): a hundred models start together in about
    the time of one, on one consumer's threads.

    Whether operators retired a model is its :class:`~adaptloop.streams.retirement.Retirement` on
    the process's follower of ``model-specs``, the one its clients ask too: so a server started
    after the retirement answers as one that saw it happen. While a model is retired its requests
    get :class:`ModelRetired`, and no client is made for it (nothing of it is loaded); one made
    before stays, refusing as well, and serves again once the model is added back."""

    def __init__(
        self, settings: ClientSettings, models: list[str], producer: EventProducer
    ) -> None:
        self.settings, self.producer = settings, producer
        self.clients: dict[str, ModelClient | None] = {}
        self.problems: dict[str, str] = {}
        self.retirements: dict[str, Retirement] = {}  # each model's, once watched
        self._specs = ModelSpecs.acquire(settings.connection(), settings.topic_prefix)
        self._lock = threading.Lock()  # guards the retirements watched against close
        self._stop = threading.Event()
        for model in models:
            self.add(model)

    def add(self, model: str) -> None:
        """Serve ``model`` too (from its first servable version on, unless operators retired it)."""
        if model in self.clients:
            return
        self.clients[model] = None
        threading.Thread(target=self._connect, args=(model,), daemon=True).start()

    def retired(self, model: str) -> str | None:
        """Who retired ``model`` and why, while operators have it retired (None: they do not, or its
        records on ``model-specs`` are not read yet)."""
        retirement = self.retirements.get(model)
        return retirement.why if retirement is not None else None

    def follow(self, follower: SpecFollower) -> None:
        """Serve the models operators add on ``model-specs`` (a thread's body, until
        :meth:`close`); a retirement, or a model added back, each model's
        :class:`~adaptloop.streams.retirement.Retirement` reads."""
        try:
            while not self._stop.is_set():
                for record in follower.poll(1.0):
                    if retirement(record) is None and record.model not in self.clients:
                        self.add(record.model)
                        log.info(
                            "model %s added by %s: served from its first servable version",
                            record.model,
                            record.actor,
                        )
        finally:
            follower.close()

    def _connect(self, model: str) -> None:
        retirement = self._watch(model)
        while retirement is not None and not self._stop.is_set():
            if not retirement.ready.is_set() or retirement.why is not None:
                self._stop.wait(RETIRED_SECONDS)
                continue
            try:
                client = ModelClient.from_settings(
                    model, self.settings, producer=self.producer, wait=CLIENT_RETRY_SECONDS
                )
            except AdaptloopError as error:  # (ModelRetired: retired meanwhile)
                self.problems[model] = str(error)
                self._stop.wait(CLIENT_RETRY_SECONDS)
                continue
            with self._lock:
                if self._stop.is_set():  # closed meanwhile
                    client.close()
                    return
                self.clients[model] = client
            self.problems.pop(model, None)
            log.info("serving model %s", model)
            return

    def _watch(self, model: str) -> Retirement | None:
        """``model``'s retirement, watched (until :meth:`close`); None if closed first."""
        while not self._stop.is_set():
            try:
                watched = self._specs.watch(model, CLIENT_RETRY_SECONDS)
            except AdaptloopError as error:  # no model-specs yet (no worker made the topics)
                self.problems[model] = str(error)
                self._stop.wait(CLIENT_RETRY_SECONDS)
                continue
            with self._lock:
                if self._stop.is_set():
                    self._specs.unwatch(model)
                    return None
                self.retirements[model] = watched
                return watched
        return None

    def get(self, model: str) -> ModelClient:
        if model not in self.clients:
            served = [name for name in self.clients if self.retired(name) is None]
            raise UnknownModel(
                f"this server serves no model {model!r} (it serves {', '.join(served)})"
            )
        if (why := self.retired(model)) is not None:
            raise ModelRetired(model, why)
        client = self.clients.get(model)
        if client is None:
            why = self.problems.get(model, "its client is connecting")
            raise NoModelYet(f"model {model!r} cannot serve yet: {why}")
        return client

    def close(self) -> None:
        with self._lock:
            self._stop.set()
            watched, self.retirements = list(self.retirements), {}
            clients = [client for client in self.clients.values() if client is not None]
        for client in clients:
            client.close()
        for model in watched:
            self._specs.unwatch(model)
        self._specs.release()


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
        canary=version.canary.model_dump(mode="json") if version.canary is not None else None,
    )


STATUS = {
    UnknownModel: 404,
    InvalidInput: 422,
    NoModelYet: 503,
    PredictionFailed: 503,
    DeliveryFailed: 503,
}


def _documented(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI ``responses`` of these error statuses: each an :class:`ErrorBody`."""
    what = {
        404: "No such model, or one operators retired",
        408: "The body did not come whole in time",
        413: "The body is larger than the server takes",
        415: "The body is not JSON",
        422: "Not valid JSON, or a request the contracts refuse (each problem with an excerpt)",
        431: "The request's headers are larger than the server takes",
        503: "The model cannot serve yet, or Kafka did not take the event",
    }
    return {status: {"model": ErrorBody, "description": what[status]} for status in statuses}


class Health(BaseModel):
    ok: bool
    waiting: dict[str, str] = Field(description="Each model not serving yet, and why.")
    retired: dict[str, str] = Field(
        default_factory=dict,
        description="Each model operators retired (answered 404 `ModelRetired`), who and why.",
    )


def create_app(
    settings: ClientSettings,
    models: list[str],
    limits: RequestLimits | None = None,
    follow_specs: Mapping[int, int] | None = None,
) -> FastAPI:
    """The HTTP app serving ``models`` of the loop ``settings`` describe, taking requests within
    ``limits``; with ``follow_specs`` (the ends of the catalogue ``models`` came from), also the
    models added on ``model-specs`` from there on. A model of ``models`` that operators retire,
    before the app starts or after, is answered 404 :class:`ModelRetired` until added back."""
    limits = limits or RequestLimits()
    state: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        producer = EventProducer.from_settings(settings)
        served = ServedModels(settings, models, producer)
        state.update(producer=producer, served=served)
        if follow_specs is not None:
            follower = SpecFollower(settings.connection(), settings.topic_prefix, ends=follow_specs)
            threading.Thread(target=served.follow, args=(follower,), daemon=True).start()
        delivery = threading.Thread(
            target=_report_delivery_failures, args=(producer, served), daemon=True
        )
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
        summary="The loop's models and event intake over HTTP: predict with the current "
        "version, send outcomes "
        "and feedback.",
        description="Every error is an `ErrorBody`. A body must be JSON (`Content-Type: "
        "application/json`, else "
        f"415), of at most {limits.max_body_bytes:,} bytes (else 413), without NaN or "
        "Infinity and nested at most "
        f"{limits.max_depth} levels (else 422); a prediction takes at most "
        f"{limits.max_features:,} features.",
        lifespan=lifespan,
    )
    app.add_middleware(RequestGate, limits=limits)

    @app.exception_handler(AdaptloopError)
    async def adaptloop_error(request: Request, error: AdaptloopError) -> Response:
        status = next((code for kind, code in STATUS.items() if isinstance(error, kind)), 400)
        return error_response(status, type(error).__name__, str(error))

    @app.exception_handler(ValidationError)
    async def invalid_body(request: Request, error: ValidationError) -> Response:
        return invalid_request(error.errors(include_url=False, include_context=False), ("body",))

    @app.exception_handler(RequestValidationError)
    async def invalid_parameters(request: Request, error: RequestValidationError) -> Response:
        return invalid_request(list(error.errors()))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> Response:
        kinds = {404: "NotFound", 405: "MethodNotAllowed"}
        response = error_response(
            error.status_code, kinds.get(error.status_code, "HTTPError"), str(error.detail)
        )
        response.headers.update(error.headers or {})
        return response

    # documents the body the predict route validates itself
    predict_body = PredictRequest.model_json_schema()
    predict_body["properties"]["features"]["maxProperties"] = limits.max_features

    @app.post(
        "/v1/models/{model}:predict",
        response_model=PredictResponse,
        responses=_documented(404, 408, 413, 415, 422, 431, 503),
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": predict_body}},
            }
        },
    )
    async def predict(model: str, http: Request) -> Response:
        """Predict with the model's current version and log the decision (its ``decision_id`` names
        the outcome to send later)."""
        # The hot path: the body is validated by pydantic straight from its bytes (FastAPI's own
        # body handling costs about as much again), on the event loop (a prediction and its send
        # take tens of microseconds, a thread hop more); the answer is serialised directly (the
        # documented PredictResponse).
        started = time.perf_counter()
        request = PredictRequest.model_validate_json(await http.body())
        if len(request.features) > limits.max_features:
            problem = Problem(
                loc=["body", "features"],
                msg=f"{len(request.features):,} features: a prediction takes at most "
                f"{limits.max_features:,} "
                "(the models' feature budget, max_event_features)",
                input=excerpt(request.features),
            )
            return error_response(422, "InvalidRequest", f"body.features: {problem.msg}", [problem])
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

    @app.post(
        "/v1/outcomes",
        response_model=Accepted,
        status_code=202,
        responses=_documented(408, 413, 415, 422, 431, 503),
    )
    async def outcome(event: OutcomeEvent) -> Response:
        """Report what happened to a decision (its label or reward)."""
        state["producer"].send(event)
        REQUESTS.labels("outcomes", 202).inc()
        return Response(
            b'{"accepted":true,"topic":"outcomes"}', status_code=202, media_type="application/json"
        )

    @app.post(
        "/v1/feedback",
        response_model=Accepted,
        status_code=202,
        responses=_documented(408, 413, 415, 422, 431, 503),
    )
    async def feedback(event: Annotated[AgentFeedbackEvent | PreferenceEvent, Body()]) -> Accepted:
        """An agent's step or a user's feedback (``AgentFeedbackEvent``), or a pairwise preference
        (``PreferenceEvent``)."""
        state["producer"].send(event)
        REQUESTS.labels("feedback", 202).inc()
        topic = "preferences" if isinstance(event, PreferenceEvent) else "agent-feedback"
        return Accepted(topic=topic)

    @app.get("/v1/models", response_model=list[ModelInfo])
    def list_models() -> list[ModelInfo]:
        """Every model this server serves (not one operators retired): its current version, lineage
        head and metrics."""
        served: ServedModels = state["served"]
        return [
            _info(name, client)
            for name, client in list(served.clients.items())
            if served.retired(name) is None
        ]

    @app.get("/v1/models/{model}", response_model=ModelInfo, responses=_documented(404, 422))
    def one_model(model: str) -> ModelInfo:
        """The model's current version, lineage head and metrics (404 ``ModelRetired`` for one
        operators retired, as its predictions get)."""
        served: ServedModels = state["served"]
        if model not in served.clients:
            raise UnknownModel(f"this server serves no model {model!r}")
        if (why := served.retired(model)) is not None:
            raise ModelRetired(model, why)
        return _info(model, served.clients.get(model))

    @app.get(
        "/health",
        response_model=Health,
        responses={503: {"model": Health, "description": "Models waiting"}},
    )
    def health() -> JSONResponse:
        """200 once every model serves a version, or is retired; 503 (naming those still waiting)
        before."""
        served: ServedModels = state["served"]
        clients = list(served.clients.items())
        retired = {name: why for name, _ in clients if (why := served.retired(name)) is not None}
        waiting = {
            name: served.problems.get(name, "connecting")
            for name, client in clients
            if client is None and name not in retired
        }
        return JSONResponse(
            {"ok": not waiting, "waiting": waiting, "retired": retired},
            status_code=503 if waiting else 200,
        )

    @app.get("/metrics", response_class=PlainTextResponse)
    def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return app


def _report_delivery_failures(producer: EventProducer, served: ServedModels) -> None:
    """Serve the producer's delivery reports; log (never drop silently) events Kafka did not
    take."""
    while not served._stop.is_set():
        try:
            producer.poll()
        except DeliveryFailed as error:
            log.error("events not delivered to Kafka: %s", error)
        time.sleep(0.5)
