"""Serving that refreshes itself: follow ``model-updates``, hot-swap, predict, log the prediction.

A client serves the newest *servable* version of its model (the highest ``sequence`` on the model's
own partition of ``model-updates``, whatever order the records are read in: see :mod:`.versions`;
servable: learned from at least the spec's ``min_examples``); before there is one it answers with
the model's ``default_prediction``, flagged as a fallback, or raises :class:`NoModelYet`. A version
that raises on a prediction is set aside for the version served before it (counted in
``adaptloop_serving_fallbacks_total``), so one bad version never fails the service's requests.

While a canary runs (the version record's ``canary``), the record's version answers the decisions
whose id falls in the canary's share (:mod:`adaptloop.learners.canary_split`) and the record's
stable version the others: the same decision id always gets the same version, in any process, and
the version is logged with it.

Once operators retire the model on ``model-specs`` (``adaptloop models retire``), ``predict`` raises
:class:`ModelRetired` (who retired it and why) and logs nothing, as ``adaptloop serve`` answers 404;
a later record that adds it again has it served again (the process's one
:class:`~adaptloop.streams.retirement.Retirement` of the model, which ``adaptloop serve`` asks too).
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

from river import base, compose

from adaptloop.learners.canary_split import in_canary
from adaptloop.learners.recipes import Model
from adaptloop.learners.serving import read_only
from adaptloop.learners.store import ModelStore
from adaptloop.schemas.base import FeatureValue
from adaptloop.schemas.contract import ModelContract
from adaptloop.schemas.errors import (
    InvalidInput,
    ModelRetired,
    NoModelYet,
    PredictionFailed,
    TimedOut,
    UnknownModel,
)
from adaptloop.schemas.inference import PredictionEvent
from adaptloop.schemas.system import ModelVersion
from adaptloop.schemas.topics import MODEL_UPDATES
from adaptloop.streams.connection import ClientSettings, ConnectionLike
from adaptloop.streams.follower import ModelUpdates, decode_keyed
from adaptloop.streams.metrics import REFRESH_LAG, SERVING_FALLBACKS
from adaptloop.streams.producer import EventProducer
from adaptloop.streams.retirement import ModelSpecs, Retirement
from adaptloop.streams.versions import home_partition, is_newer, on_its_partition

log = logging.getLogger(__name__)

DEFAULT_VERSION = "default"
"""The ``model_version`` logged with a prediction that is the model's ``default_prediction``."""


def is_classifier(model: Model) -> bool:
    """True for a classifier or a pipeline ending in one."""
    if isinstance(model, compose.Pipeline):
        model = list(model.steps.values())[-1]
    return isinstance(model, base.Classifier)


CATCH_UP_CANDIDATES = 16
"""At start, the newest versions on the topic (by sequence) tried in turn until one loads (a broken
or missing one is skipped, as after start)."""

EARLIER_VERSIONS = 3
"""Versions kept loaded behind the current one, to answer if the current one raises."""


@dataclass(frozen=True)
class Prediction:
    """What ``predict`` answered: the decision's id (for its outcome), the version that made it, the
    prediction, its probabilities (classifiers), and whether it is the model's default rather than a
    version's."""

    decision_id: str
    model_version: str
    prediction: object
    probabilities: dict[str, float] | None
    fallback: bool = False


@dataclass(frozen=True)
class _Stable:
    """A running canary's stable version: it serves the decisions outside the canary's share."""

    version: str
    model: Model
    classifier: bool
    share: float  # the canary's


@dataclass(frozen=True)
class _Served:
    version: ModelVersion
    model: Model
    classifier: bool
    stable: _Stable | None = None  # while a canary runs (the record's ``canary``)


class NewestVersion:
    """Which record of one model's partition of ``model-updates`` is its current version (a
    :class:`~adaptloop.streams.follower.Reader` of the process's follower).

    Catching up on the history, the newest records by ``sequence`` (then by offset) wait, and once
    the partition's end is reached the newest of them that loads is served; afterwards each newer
    record (:func:`~adaptloop.streams.versions.is_newer`) is served as it comes, and an older one is
    ignored. A record that is not one of the model's versions, or sits on another partition than the
    model's, is ignored (logged). ``serve`` loads and serves a version (``ModelClient``: swaps it
    in); it raises for a version that cannot be loaded, which then is not the model's latest. No
    Kafka here: the follower calls :meth:`read` and :meth:`caught_up` from its thread.

    >>> def record(sequence):
    ...     return ModelVersion(model="m", version=f"{sequence:016x}", examples_seen=sequence, sha256="ab" * 32,
    ...                         uri="u", size_bytes=1, sequence=sequence).model_dump_json().encode()
    >>> served = []
    >>> newest = NewestVersion("m", partitions=1, serve=lambda version: served.append(version.sequence))
    >>> for offset, sequence in enumerate([2, 3, 1]):
    ...     newest.read(0, offset, record(sequence))
    >>> newest.caught_up()
    >>> newest.read(0, 3, record(4)); newest.read(0, 4, record(2))
    >>> served, newest.latest.sequence
    ([3, 4], 4)
    """

    def __init__(self, model: str, partitions: int, serve: Callable[[ModelVersion], None]) -> None:
        self.model, self.partitions = model, partitions
        self.latest: ModelVersion | None = None  # the newest record, servable or not (its contract)
        self.ready = threading.Event()  # set once caught up with a latest record
        self.history_read = threading.Event()  # set once caught up, with a record or none
        self._serve = serve
        # (sequence, offset, record) while catching up
        self._history: list[tuple[int, int, ModelVersion]] = []
        self._caught_up = False
        # serve may call back into its owner (on_swap); stop waits for it
        self._lock = threading.RLock()
        self._stopped = False

    def read(self, partition: int, offset: int, value: bytes | None) -> None:
        """One record of the model's key, in the partition's order."""
        with self._lock:
            if self._stopped or not on_its_partition(
                self.model, partition, self.partitions, offset
            ):
                return
            if (version := self._decode(offset, value or b"")) is None:
                return
            if self._caught_up:
                self._take(offset, version)
                if self.latest is not None:
                    self.ready.set()
                return
            # Catching up on the topic's history, only the newest versions matter: their records
            # wait here and one is loaded once caught up. (Loading each in turn costs 0.3 ms a
            # version of a linear model: minutes at start after a day of versions, as Kafka leaves
            # the newest segment uncompacted.)
            self._history.append((version.sequence or 0, offset, version))
            if len(self._history) > 2 * CATCH_UP_CANDIDATES:
                self._history = sorted(self._history, key=lambda item: item[:2])[
                    -CATCH_UP_CANDIDATES:
                ]

    def caught_up(self) -> None:
        """The history is read: serve the newest version that loads."""
        with self._lock:
            if self._stopped or self._caught_up:
                return
            self._caught_up = True
            # the newest by sequence (then offset) last
            history = sorted(self._history, key=lambda item: item[:2])
            self._history = []
            while history and not self._take(*history.pop()[1:]):  # the newest that loads
                pass
            if self.latest is not None:
                self.ready.set()
            self.history_read.set()

    def stop(self) -> None:
        """Take no record after this returns (it waits for one being served)."""
        with self._lock:
            self._stopped = True

    def _decode(self, offset: int, value: bytes) -> ModelVersion | None:
        """The record at ``offset`` of the model's partition; None (logged) if it is not one of its
        versions."""
        try:
            return decode_keyed(MODEL_UPDATES, value, self.model, ModelVersion)
        # any record: a broken or forged update must not take serving down
        except Exception as error:
            log.error(
                "cannot read the %s record at offset %d (%s: %s)",
                self.model,
                offset,
                type(error).__name__,
                error,
            )
            return None

    def _take(self, offset: int, version: ModelVersion) -> bool:
        """Take in one record (serve its version if it may, unless a newer one is known); False (the
        current version kept) if it cannot be loaded."""
        if self.latest is not None and not is_newer(version, self.latest):
            log.warning(
                "ignored %s version %s (offset %d, sequence %s): the newest record is "
                "sequence %s (version %s)",
                self.model,
                version.version,
                offset,
                version.sequence,
                self.latest.sequence,
                self.latest.version,
            )
            return True
        try:
            if version.servable:
                self._serve(version)
            self.latest = version
            return True
        # a missing, unsigned or broken version must not take serving down
        except Exception as error:
            log.error(
                "cannot load %s version %s from offset %d (%s: %s); serving %s",
                self.model,
                version.version,
                offset,
                type(error).__name__,
                error,
                self.latest.version if self.latest is not None else "no version",
            )
            return False


class ModelClient:
    """The current version of one model, always, without restarts.

    Loads the latest published version at start, follows ``model-updates`` in the background and
    swaps the model atomically; ``predict`` never mutates the served model and logs a
    :class:`PredictionEvent` with the version that answered. It follows ``model-specs`` too: while
    operators have the model retired, ``predict`` raises :class:`ModelRetired` (a client started
    then too, at once; one of a model retired before it published any version raises it from the
    constructor). The clients of one process share one follower of ``model-updates`` and one of
    ``model-specs`` (each reading only their models' partitions; the clients of one model, and
    ``adaptloop serve``, its one :class:`~adaptloop.streams.retirement.Retirement`) and, unless given
    a ``producer``, one producer (:class:`~adaptloop.streams.follower.ModelUpdates`): a client costs
    no Kafka client nor thread of its own.

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
        # seconds from version creation to swap
        self.refresh_lags: deque[float] = deque(maxlen=10_000)
        self.swaps = 0
        # predictions answered by an earlier version because the current one raised
        self.fallbacks = 0
        # called from the follower thread with (version, refresh lag or None)
        self._on_swap = on_swap
        self._served: _Served | None = None
        self._earlier: deque[_Served] = deque(maxlen=EARLIER_VERSIONS)  # newest last
        self._broken: set[str] = set()  # versions that raised on a prediction
        self._changed = threading.Condition()
        self._closed = False
        deadline = time.monotonic() + wait
        # The process's one follower of model-updates (and, unless one is given, its one producer)
        # and its one follower of model-specs.
        self._updates = ModelUpdates.acquire(bootstrap, prefix)
        try:
            self._specs = ModelSpecs.acquire(bootstrap, prefix)
        except BaseException:
            self._updates.release()
            raise
        try:
            self.producer = producer if producer is not None else self._updates.producer()
            self._owns_producer = producer is None
            partitions = self._updates.partitions(wait)
        except BaseException:
            self._updates.release()
            self._specs.release()
            raise
        self._newest = NewestVersion(model, partitions, serve=self._swap)
        self._watching = False  # the model's retirement (unwatched on close)
        self._subscription = self._updates.subscribe(
            model, home_partition(model, partitions), self._newest
        )
        # (the model's versions are read meanwhile)
        try:
            retirement = self._specs.watch(model, max(deadline - time.monotonic(), 0.5))
        except BaseException:
            self.close()
            raise
        self._retirement: Retirement = retirement
        self._watching = True
        # the retirement first: a model retired before any version of it has none to wait for
        if not self._retirement.ready.wait(max(deadline - time.monotonic(), 0.0)):
            self.close()
            raise TimedOut(
                f"the records of model {model!r} on {self._specs.topic!r} were not read "
                f"within {wait:.0f}s"
            )
        if self._retirement.why is not None:
            self._newest.history_read.wait(max(deadline - time.monotonic(), 0.0))
            if self._newest.latest is None:
                self.close()
                raise ModelRetired(model, self._retirement.why)
        if not self._newest.ready.wait(max(deadline - time.monotonic(), 0.0)):
            self.close()
            raise UnknownModel(
                f"no version of model {model!r} was published on {self.topic_name!r} within "
                f"{wait:.0f}s; "
                "is a worker running with a learner spec for it (ADAPTLOOP_MODELS)?"
            )

    @classmethod
    def from_settings(
        cls, model: str, settings: ClientSettings | None = None, **options: Any
    ) -> ModelClient:
        """A client of ``model`` in the loop that ``settings`` (default: read from the environment)
        describe.

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
        served, latest = self._served, self._newest.latest
        assert latest is not None
        return served.version if served is not None else latest

    @property
    def contract(self) -> ModelContract | None:
        """What the model learns from, as its latest version says (None: a version from before
        contracts)."""
        latest = self._newest.latest
        return latest.contract if latest is not None else None

    @property
    def retired(self) -> str | None:
        """Who retired the model and why, while operators have it retired; None while it serves."""
        return self._retirement.why

    def predict(
        self,
        features: dict[str, FeatureValue],
        decision_id: str | None = None,
        *,
        tenant: str | None = None,
        user_id: str | None = None,
        session_id: str | None = None,
    ) -> Prediction:
        """Predict with the current version and log the decision (with its tenant, user and session,
        if given).

        Raises :class:`ModelRetired` (and logs nothing) while operators have the model retired,
        :class:`InvalidInput` for features the model's contract refuses, and :class:`NoModelYet`
        when no version may serve yet and the model declares no ``default_prediction``.
        """
        if (why := self._retirement.why) is not None:
            raise ModelRetired(self.model, why)
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
        # one read: the whole call uses one version even if a swap happens meanwhile
        served = self._served
        stable = _stable_for(served, decision_id)
        if stable is not None and stable.version not in self._broken:
            try:
                label, probabilities = _predict(stable, features)
                return Prediction(decision_id, stable.version, label, probabilities)
            except Exception as error:  # the canary (then the versions before it) answers instead
                self._broken.add(stable.version)
                log.error(
                    "model %s stable version %s failed to predict (%r)",
                    self.model,
                    stable.version,
                    error,
                )
        candidates = [served, *reversed(self._earlier)] if served is not None else []
        for candidate in candidates:
            if candidate is None or candidate.version.version in self._broken:
                continue
            try:
                label, probabilities = _predict(candidate, features)
            except Exception as error:  # a version that cannot answer: the one before it does
                self._set_aside(candidate, error)
                continue
            if candidate is not served or stable is not None:
                self.fallbacks += 1
                SERVING_FALLBACKS.labels(self.model).inc()
            return Prediction(decision_id, candidate.version.version, label, probabilities)
        default = contract.default_prediction if contract is not None else None
        if default is not None:
            return Prediction(decision_id, DEFAULT_VERSION, default, None, fallback=True)
        if candidates:
            raise PredictionFailed(
                f"no version of model {self.model!r} could answer (the last "
                f"{len(candidates)} raised; see the log), "
                "and its spec declares no default_prediction"
            )
        latest = self._newest.latest
        learned = latest.examples_seen if latest is not None else 0
        needed = contract.min_examples if contract is not None else 0
        raise NoModelYet(
            f"model {self.model!r} has learned {learned} of the {needed} examples it needs "
            "before a version serves "
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
                working = [
                    earlier
                    for earlier in self._earlier
                    if earlier.version.version not in self._broken
                ]
                self._served = working[-1] if working else None
                self._changed.notify_all()

    def wait_for_version(self, version: str, timeout: float = 10.0) -> bool:
        """Block until ``version`` is served (for tests and the demo); False if it was not within
        ``timeout``."""
        return self.wait_for(lambda served: served.version == version, timeout)

    def wait_for(self, condition: Callable[[ModelVersion], bool], timeout: float = 10.0) -> bool:
        """Block until the version served satisfies ``condition`` (say, has learned 1,000 examples);
        False if none did within ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while self._served is None or not condition(self._served.version):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._changed.wait(remaining)
        return True

    def _swap(self, version: ModelVersion) -> None:
        current = self._served
        stable = self._stable_of(version)
        if current is not None and current.version.version == version.version:
            with self._changed:  # the same bytes, a newer record
                self._served = _Served(version, current.model, current.classifier, stable)
                self._changed.notify_all()
            return
        model = read_only(pickle.loads(self.store.load_bytes(self.model, version.version)))
        with self._changed:
            if current is not None and current.version.version not in self._broken:
                self._earlier.append(current)
            self._served = _Served(version, model, is_classifier(model), stable)
            self.swaps += 1
            self._changed.notify_all()
        lag = None
        if self._newest.ready.is_set():  # catching up on history is not a refresh
            lag = (datetime.now(UTC) - version.timestamp).total_seconds()
            self.refresh_lags.append(lag)
            REFRESH_LAG.labels(self.model).observe(lag)
        if self._on_swap is not None:
            self._on_swap(version, lag)
        log.debug("serving %s version %s", self.model, version.version)

    def _stable_of(self, version: ModelVersion) -> _Stable | None:
        """The stable version of the record's running canary, loaded (or taken from what serves
        already)."""
        canary = version.canary
        if canary is None or canary.state != "running":
            return None
        known = [self._served, *self._earlier]
        for served in known:
            if served is not None and served.version.version == canary.stable:
                return _Stable(canary.stable, served.model, served.classifier, canary.share)
            if (
                served is not None
                and served.stable is not None
                and served.stable.version == canary.stable
            ):
                return _Stable(
                    canary.stable, served.stable.model, served.stable.classifier, canary.share
                )
        model = read_only(pickle.loads(self.store.load_bytes(self.model, canary.stable)))
        return _Stable(canary.stable, model, is_classifier(model), canary.share)

    def close(self) -> None:
        """Stop following the model (no swap after this returns) and deliver the predictions logged;
        the process's follower of model-updates stops with its last client. Closing again does
        nothing."""
        with self._changed:
            if self._closed:
                return
            self._closed = True
        self._updates.unsubscribe(self._subscription)
        if self._watching:
            self._specs.unwatch(self.model)
        self._newest.stop()  # waits for a version being loaded
        try:
            if self._owns_producer:
                self.producer.flush()
        finally:
            self._updates.release()
            self._specs.release()

    def __enter__(self) -> ModelClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _stable_for(served: _Served | None, decision_id: str) -> _Stable | None:
    """The stable version, if a canary runs and the decision is outside its share
    (:func:`in_canary`)."""
    if served is None or served.stable is None or in_canary(decision_id, served.stable.share):
        return None
    return served.stable


def _predict(
    served: _Served | _Stable, features: dict[str, FeatureValue]
) -> tuple[object, dict[str, float] | None]:
    """The prediction and probabilities of one version (River's tie-break: the first most probable
    class)."""
    if served.classifier:
        proba = served.model.predict_proba_one(features)
        return (max(proba, key=proba.get) if proba else None), {
            str(k): float(v) for k, v in proba.items()
        }
    return served.model.predict_one(features), None
