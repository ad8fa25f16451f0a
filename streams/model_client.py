"""Serving that refreshes itself: follow ``model-updates``, hot-swap, predict, log the prediction."""

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
from adaptloop.schemas.errors import DecodeError, UnknownModel
from adaptloop.schemas.inference import PredictionEvent
from adaptloop.schemas.system import ModelVersion
from adaptloop.schemas.topics import MODEL_UPDATES
from adaptloop.streams.admin import wait_for_broker
from adaptloop.streams.connection import ClientSettings
from adaptloop.streams.consumer import position_of
from adaptloop.streams.metrics import REFRESH_LAG
from adaptloop.streams.producer import KAFKA_LOG, EventProducer

log = logging.getLogger(__name__)


def is_classifier(model: Model) -> bool:
    """True for a classifier or a pipeline ending in one."""
    if isinstance(model, compose.Pipeline):
        model = list(model.steps.values())[-1]
    return isinstance(model, base.Classifier)


CATCH_UP_CANDIDATES = 16
"""At start, the newest versions on the topic tried in turn until one loads (a broken or missing one
is skipped, as after start)."""


@dataclass(frozen=True)
class Prediction:
    decision_id: str
    model_version: str
    prediction: object
    probabilities: dict[str, float] | None


@dataclass(frozen=True)
class _Served:
    version: ModelVersion
    model: Model
    classifier: bool


class ModelClient:
    """The current version of one model, always, without restarts.

    Loads the latest published version at start, follows ``model-updates`` in a
    background thread and swaps the model atomically; ``predict`` never mutates
    the served model and logs a :class:`PredictionEvent` with the version used.

    Typical use (needs a broker and a worker)::

        with ModelClient("churn", bootstrap="localhost:9092", store=ModelStore(path)) as client:
            result = client.predict({"age": 42, "plan": "pro"})
            ...  # later: producer.send(OutcomeEvent(decision_id=result.decision_id, label=True, source="billing"))
    """

    def __init__(
        self,
        model: str,
        *,
        bootstrap: str,
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
        self._on_swap = on_swap  # called from the follower thread with (version, refresh lag or None)
        self._served: _Served | None = None
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._changed = threading.Condition()
        admin = wait_for_broker(bootstrap, timeout=wait)
        partitions = admin.list_topics(self.topic_name, timeout=wait).topics[self.topic_name].partitions
        self._consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
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

    @classmethod
    def from_settings(cls, model: str, settings: ClientSettings | None = None, **options: Any) -> ModelClient:
        """A client of ``model`` in the loop that ``settings`` (default: read from the environment) describe.

        ``options`` go to the constructor (``producer``, ``wait``, ``on_swap``).
        """
        settings = settings if settings is not None else ClientSettings()
        return cls(
            model,
            bootstrap=settings.bootstrap_address,
            store=ModelStore(settings.models_dir),
            prefix=settings.topic_prefix,
            **options,
        )

    @property
    def version(self) -> ModelVersion:
        assert self._served is not None
        return self._served.version

    def predict(
        self,
        features: dict[str, FeatureValue],
        decision_id: str | None = None,
        *,
        tenant: str | None = None,
        user_id: str | None = None,
        session_id: str | None = None,
    ) -> Prediction:
        """Predict with the current version and log the decision (with its tenant, user and session, if given)."""
        served = self._served  # one read: the whole call uses one version even if a swap happens meanwhile
        assert served is not None
        model = served.model
        probabilities = None
        if served.classifier:
            proba = model.predict_proba_one(features)
            label = max(proba, key=proba.get) if proba else None
            probabilities = {str(k): float(v) for k, v in proba.items()}
        else:
            label = model.predict_one(features)
        decision_id = decision_id or uuid.uuid4().hex
        self.producer.send(
            PredictionEvent(
                decision_id=decision_id,
                model=self.model,
                model_version=served.version.version,
                features=features,
                prediction=label,
                probabilities=probabilities,
                tenant=tenant,
                user_id=user_id,
                session_id=session_id,
            )
        )
        return Prediction(decision_id, served.version.version, label, probabilities)

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
        history: deque[tuple[int, bytes]] = deque(maxlen=CATCH_UP_CANDIDATES)
        while not self._stop.is_set():
            caught_up = True
            for message in self._consumer.consume(100, 0.1):
                if (error := message.error()) is not None:
                    if error.code() != KafkaError._PARTITION_EOF:
                        log.warning("model-updates: %s", error.str())
                    continue
                caught_up = False
                if message.key() != key:
                    continue
                offset, value = position_of(message)[2], message.value() or b""
                if self._ready.is_set():
                    self._load(offset, value)
                else:
                    history.append((offset, value))
            if caught_up and not self._ready.is_set():
                while history and not self._load(*history.pop()):  # the newest that loads
                    pass
                history.clear()
                if self._served is not None:
                    self._ready.set()

    def _load(self, offset: int, value: bytes) -> bool:
        """Serve the version of one record; False (and the current version kept) if it cannot be loaded."""
        try:
            version: ModelVersion = decode(MODEL_UPDATES, value)  # type: ignore[assignment]
            self._swap(version)
            return True
        except (DecodeError, UnknownModel, pickle.UnpicklingError) as error:
            # Keep serving the current version; a broken update must not take serving down.
            log.error("cannot load %s version from offset %d: %s", self.model, offset, error)
            return False

    def _swap(self, version: ModelVersion) -> None:
        if self._served is not None and self._served.version.version == version.version:
            with self._changed:  # the same bytes, a newer record
                self._served = _Served(version, self._served.model, self._served.classifier)
                self._changed.notify_all()
            return
        model = read_only(pickle.loads(self.store.load_bytes(self.model, version.version)))
        with self._changed:
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
