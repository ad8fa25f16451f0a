"""Serving that refreshes itself: follow ``model-updates``, hot-swap, predict, log the prediction.

A client serves the newest *servable* version of its model (the highest ``sequence`` on the model's own
partition of ``model-updates``, whatever order the records are read in: see :mod:`.versions`; servable: learned
from at least the spec's ``min_examples``); before there is one it answers with the model's
``default_prediction``, flagged as a fallback, or raises :class:`NoModelYet`. A version that raises on a
prediction is set aside for the version served before it (counted in ``adaptloop_serving_fallbacks_total``), so
one bad version never fails the service's requests.
"""

from __future__ import annotations

import logging
import pickle
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition
from river import base, compose

from adaptloop.learners.recipes import Model
from adaptloop.learners.serving import read_only
from adaptloop.learners.store import ModelStore
from adaptloop.schemas.base import FeatureValue
from adaptloop.schemas.codec import decode
from adaptloop.schemas.contract import ModelContract
from adaptloop.schemas.errors import (
    DecodeError,
    InvalidInput,
    NoModelYet,
    PredictionFailed,
    TimedOut,
    UnknownModel,
)
from adaptloop.schemas.inference import PredictionEvent
from adaptloop.schemas.system import ModelVersion
from adaptloop.schemas.topics import MODEL_UPDATES
from adaptloop.streams.admin import wait_for_broker
from adaptloop.streams.connection import ClientSettings, ConnectionLike, KafkaConnection
from adaptloop.streams.consumer import position_of
from adaptloop.streams.metrics import REFRESH_LAG, SERVING_FALLBACKS
from adaptloop.streams.producer import KAFKA_LOG, EventProducer
from adaptloop.streams.versions import is_newer, on_its_partition

log = logging.getLogger(__name__)

DEFAULT_VERSION = "default"
"""The ``model_version`` logged with a prediction that is the model's ``default_prediction``."""


def is_classifier(model: Model) -> bool:
    """True for a classifier or a pipeline ending in one."""
    if isinstance(model, compose.Pipeline):
        model = list(model.steps.values())[-1]
    return isinstance(model, base.Classifier)


CATCH_UP_CANDIDATES = 16
"""At start, the newest versions on the topic (by sequence) tried in turn until one loads (a broken or missing
one is skipped, as after start)."""

EARLIER_VERSIONS = 3
"""Versions kept loaded behind the current one, to answer if the current one raises."""


@dataclass(frozen=True)
class Prediction:
    """What ``predict`` answered: the decision's id (for its outcome), the version that made it, the prediction,
    its probabilities (classifiers), and whether it is the model's default rather than a version's."""

    decision_id: str
    model_version: str
    prediction: object
    probabilities: dict[str, float] | None
    fallback: bool = False


@dataclass(frozen=True)
class _Served:
    version: ModelVersion
    model: Model
    classifier: bool


class ModelClient:
    """The current version of one model, always, without restarts.

    Loads the latest published version at start, follows ``model-updates`` in a background thread and
    swaps the model atomically; ``predict`` never mutates the served model and logs a
    :class:`PredictionEvent` with the version that answered.

    Typical use (needs a broker and a worker)::

        with ModelClient.from_settings("churn") as model:
            decision = model.predict({"tenure_months": 7.0, "monthly_spend": 42.5})
            ...  # later: events.send(OutcomeEvent(decision_id=decision.decision_id, label=True, source="billing"))
    """

    def __init__(
        self,
        model: str,
        *,
        bootstrap: ConnectionLike,
        store: ModelStore,
        prefix: str = "",
        producer: EventProducer | None = None,
        wait: float = 30.0,
        on_swap: Callable[[ModelVersion, float | None], None] | None = None,
    ) -> None:
        self.model = model
        self.store = store
        self.topic_name = MODEL_UPDATES.full_name(prefix)
        self.producer = producer if producer is not None else EventProducer(bootstrap, topic_prefix=prefix)
        self._owns_producer = producer is None
        self.refresh_lags: deque[float] = deque(maxlen=10_000)  # seconds from version creation to swap
        self.swaps = 0
        self.fallbacks = 0  # predictions answered by an earlier version because the current one raised
        self._on_swap = on_swap  # called from the follower thread with (version, refresh lag or None)
        self._served: _Served | None = None
        self._earlier: deque[_Served] = deque(maxlen=EARLIER_VERSIONS)  # newest last
        self._broken: set[str] = set()  # versions that raised on a prediction
        self._latest: ModelVersion | None = None  # the newest record, servable or not (its contract)
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._changed = threading.Condition()
        partitions = self._partitions(bootstrap, wait)
        self._partitions_count = len(partitions)
        self._consumer = Consumer(
            {
                **KafkaConnection.of(bootstrap).config(),
                "group.id": f"model-client-{uuid.uuid4().hex}",
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 50,
            },
            logger=KAFKA_LOG,
        )
        # Read the compacted topic from the start: the last record for our model is the current version.
        self._consumer.assign([TopicPartition(self.topic_name, p, OFFSET_BEGINNING) for p in partitions])
        self._thread = threading.Thread(target=self._follow, name=f"model-client-{model}", daemon=True)
        self._thread.start()
        if not self._ready.wait(wait):
            self.close()
            raise UnknownModel(
                f"no version of model {model!r} was published on {self.topic_name!r} within {wait:.0f}s; "
                "is a worker running with a learner spec for it (ADAPTLOOP_MODELS)?"
            )

    def _partitions(self, bootstrap: ConnectionLike, wait: float) -> list[int]:
        """The partitions of ``model-updates``, once the topic exists (a worker creates it when it starts)."""
        admin = wait_for_broker(bootstrap, timeout=wait)
        deadline = time.monotonic() + wait
        while True:
            topic = admin.list_topics(self.topic_name, timeout=wait).topics.get(self.topic_name)
            if topic is not None and topic.error is None and topic.partitions:
                return list(topic.partitions)
            if time.monotonic() > deadline:
                raise TimedOut(
                    f"topic {self.topic_name!r} does not exist after {wait:.0f}s: start a worker ('adaptloop worker') "
                    "or create the topics ('adaptloop topics create'), with the same topic_prefix"
                )
            time.sleep(0.5)

    @classmethod
    def from_settings(cls, model: str, settings: ClientSettings | None = None, **options: Any) -> ModelClient:
        """A client of ``model`` in the loop that ``settings`` (default: read from the environment) describe.

        ``options`` go to the constructor (``producer``, ``wait``, ``on_swap``).
        """
        settings = settings if settings is not None else ClientSettings()
        return cls(
            model,
            bootstrap=settings.connection(),
            store=settings.model_store(),
            prefix=settings.topic_prefix,
            **options,
        )

    @property
    def version(self) -> ModelVersion:
        """The version served now (or, before any may serve, the model's latest record)."""
        served, latest = self._served, self._latest
        assert latest is not None
        return served.version if served is not None else latest

    @property
    def contract(self) -> ModelContract | None:
        """What the model learns from, as its latest version says (None: a version from before contracts)."""
        return self._latest.contract if self._latest is not None else None

    def predict(
        self,
        features: dict[str, FeatureValue],
        decision_id: str | None = None,
        *,
        tenant: str | None = None,
        user_id: str | None = None,
        session_id: str | None = None,
    ) -> Prediction:
        """Predict with the current version and log the decision (with its tenant, user and session, if given).

        Raises :class:`InvalidInput` for features the model's contract refuses, and :class:`NoModelYet` when no
        version may serve yet and the model declares no ``default_prediction``.
        """
        contract = self.contract
        if contract is not None and (problem := contract.feature_problem(features)) is not None:
            raise InvalidInput(problem)
        decision_id = decision_id or uuid.uuid4().hex
        answer = self._answer(features, decision_id, contract)
        self.producer.send(
            PredictionEvent(
                decision_id=decision_id,
                model=self.model,
                model_version=answer.model_version,
                features=features,
                prediction=answer.prediction,  # type: ignore[arg-type]  # a label, as the model learned it
                probabilities=answer.probabilities,
                tenant=tenant,
                user_id=user_id,
                session_id=session_id,
                fallback=answer.fallback,
            )
        )
        return answer

    def _answer(
        self, features: dict[str, FeatureValue], decision_id: str, contract: ModelContract | None
    ) -> Prediction:
        served = self._served  # one read: the whole call uses one version even if a swap happens meanwhile
        candidates = [served, *reversed(self._earlier)] if served is not None else []
        for candidate in candidates:
            if candidate is None or candidate.version.version in self._broken:
                continue
            try:
                label, probabilities = _predict(candidate, features)
            except Exception as error:  # a version that cannot answer: the one before it does
                self._set_aside(candidate, error)
                continue
            if candidate is not served:
                self.fallbacks += 1
                SERVING_FALLBACKS.labels(self.model).inc()
            return Prediction(decision_id, candidate.version.version, label, probabilities)
        default = contract.default_prediction if contract is not None else None
        if default is not None:
            return Prediction(decision_id, DEFAULT_VERSION, default, None, fallback=True)
        if candidates:
            raise PredictionFailed(
                f"no version of model {self.model!r} could answer (the last {len(candidates)} raised; see the log), "
                "and its spec declares no default_prediction"
            )
        learned = self._latest.examples_seen if self._latest is not None else 0
        needed = contract.min_examples if contract is not None else 0
        raise NoModelYet(
            f"model {self.model!r} has learned {learned} of the {needed} examples it needs before a version serves "
            "(min_examples); declare default_prediction in its spec to answer meanwhile"
        )

    def _set_aside(self, served: _Served, error: Exception) -> None:
        """Stop serving a version that raised: the newest earlier version that works takes over."""
        if served.version.version in self._broken:
            return
        self._broken.add(served.version.version)
        log.error(
            "model %s version %s failed to predict (%s: %s); serving the version before it",
            self.model,
            served.version.version,
            type(error).__name__,
            error,
        )
        with self._changed:
            if self._served is served:
                working = [earlier for earlier in self._earlier if earlier.version.version not in self._broken]
                self._served = working[-1] if working else None
                self._changed.notify_all()

    def wait_for_version(self, version: str, timeout: float = 10.0) -> bool:
        """Block until ``version`` is served (for tests and the demo); False if it was not within ``timeout``."""
        return self.wait_for(lambda served: served.version == version, timeout)

    def wait_for(self, condition: Callable[[ModelVersion], bool], timeout: float = 10.0) -> bool:
        """Block until the version served satisfies ``condition`` (say, has learned 1,000 examples); False if
        none did within ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while self._served is None or not condition(self._served.version):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._changed.wait(remaining)
        return True

    def _follow(self) -> None:
        key = self.model.encode()
        # Catching up on the topic's history, only the newest versions matter: their records wait here
        # and one is loaded once caught up. (Loading each in turn costs 0.3 ms a version of a linear
        # model: minutes at start after a day of versions, as Kafka leaves the newest segment uncompacted.)
        history: list[tuple[int, int, ModelVersion]] = []  # (sequence, offset, record)
        while not self._stop.is_set():
            caught_up = True
            for message in self._consumer.consume(100, 0.1):
                if (error := message.error()) is not None:
                    if error.code() != KafkaError._PARTITION_EOF:
                        log.warning("model-updates: %s", error.str())
                    continue
                caught_up = False
                offset = position_of(message)[2]
                if message.key() != key or not on_its_partition(
                    self.model, message.partition() or 0, self._partitions_count, offset
                ):
                    continue
                if (version := self._decode(offset, message.value() or b"")) is None:
                    continue
                if self._ready.is_set():
                    self._take(offset, version)
                else:
                    history.append((version.sequence or 0, offset, version))
                    if len(history) > 2 * CATCH_UP_CANDIDATES:
                        history = sorted(history, key=lambda item: item[:2])[-CATCH_UP_CANDIDATES:]
            if caught_up and not self._ready.is_set():
                history.sort(key=lambda item: item[:2])  # the newest by sequence (then by offset) last
                while history and not self._take(*history.pop()[1:]):  # the newest that loads
                    pass
                history.clear()
                if self._latest is not None:
                    self._ready.set()

    def _decode(self, offset: int, value: bytes) -> ModelVersion | None:
        """The record at ``offset`` of the model's partition; None (logged) if it is not one of its versions."""
        try:
            version = decode(MODEL_UPDATES, value)
            assert isinstance(version, ModelVersion)
            if version.model != self.model:
                raise DecodeError("invalid", f"a record of model {version.model!r} under the key {self.model!r}")
            return version
        except Exception as error:  # any record: a broken or forged update must not take serving down
            log.error(
                "cannot read the %s record at offset %d (%s: %s)", self.model, offset, type(error).__name__, error
            )
            return None

    def _take(self, offset: int, version: ModelVersion) -> bool:
        """Take in one record (serve its version if it may, unless a newer one is known); False (the current
        version kept) if it cannot be loaded."""
        if self._latest is not None and not is_newer(version, self._latest):
            log.warning(
                "ignored %s version %s (offset %d, sequence %s): the newest record is sequence %s (version %s)",
                self.model,
                version.version,
                offset,
                version.sequence,
                self._latest.sequence,
                self._latest.version,
            )
            return True
        try:
            if version.servable:
                self._swap(version)
            self._latest = version
            return True
        except Exception as error:  # a missing, unsigned or broken version must not take serving down
            log.error(
                "cannot load %s version %s from offset %d (%s: %s); serving %s",
                self.model,
                version.version,
                offset,
                type(error).__name__,
                error,
                self._served.version.version if self._served else "no version",
            )
            return False

    def _swap(self, version: ModelVersion) -> None:
        current = self._served
        if current is not None and current.version.version == version.version:
            with self._changed:  # the same bytes, a newer record
                self._served = _Served(version, current.model, current.classifier)
                self._changed.notify_all()
            return
        model = read_only(pickle.loads(self.store.load_bytes(self.model, version.version)))
        with self._changed:
            if current is not None and current.version.version not in self._broken:
                self._earlier.append(current)
            self._served = _Served(version, model, is_classifier(model))
            self.swaps += 1
            self._changed.notify_all()
        lag = None
        if self._ready.is_set():  # catching up on history is not a refresh
            lag = (datetime.now(UTC) - version.timestamp).total_seconds()
            self.refresh_lags.append(lag)
            REFRESH_LAG.labels(self.model).observe(lag)
        if self._on_swap is not None:
            self._on_swap(version, lag)
        log.debug("serving %s version %s", self.model, version.version)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._consumer.close()
        if self._owns_producer:
            self.producer.flush()

    def __enter__(self) -> ModelClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _predict(served: _Served, features: dict[str, FeatureValue]) -> tuple[object, dict[str, float] | None]:
    """The prediction and probabilities of one version (River's tie-break: the first most probable class)."""
    if served.classifier:
        proba = served.model.predict_proba_one(features)
        return (max(proba, key=proba.get) if proba else None), {str(k): float(v) for k, v in proba.items()}
    return served.model.predict_one(features), None
