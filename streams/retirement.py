"""Whether operators retired a model: the process's one follower of ``model-specs``
(:class:`ModelSpecs`) and, on it, one :class:`Retirement` per model, which every ``ModelClient`` of
the model and ``adaptloop serve`` ask (one source: they cannot disagree about a model).

A retirement is the model's latest record on ``model-specs`` (``adaptloop models retire``); a later
record that declares the model adds it back. :func:`~adaptloop.learners.catalog.retirement` words
it, for ``ModelRetired`` and serve's 404 alike.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

from adaptloop.learners.catalog import retirement, spec_of
from adaptloop.schemas.errors import ConfigError, DecodeError
from adaptloop.schemas.system import ModelSpecRecord
from adaptloop.schemas.topics import MODEL_SPECS, partition_for
from adaptloop.streams.connection import KafkaConnection
from adaptloop.streams.follower import KeyedFollower, Subscription, decode_keyed

log = logging.getLogger(__name__)


class Retirement:
    """Whether operators retired one model: its latest record on ``model-specs`` (a
    :class:`~adaptloop.streams.follower.Reader` of :class:`ModelSpecs`).

    ``why`` is who retired it and why (:func:`~adaptloop.learners.catalog.retirement`, the words
    ``adaptloop serve`` answers with), None while it is not retired: no record (a model of the
    settings only), a record that declares it, or a tombstone. A record that is not a valid spec is
    ignored, as the catalogue ignores it (:func:`~adaptloop.learners.catalog.catalogue`). ``ready``
    is set once the model's history on the topic is read. No Kafka here.

    >>> def record(status, reason=""):
    ...     return ModelSpecRecord(model="m", status=status, spec={"name": "m"}, actor="ops",
    ...                            reason=reason).model_dump_json().encode()
    >>> retired = Retirement("m")
    >>> retired.read(0, 0, record("retired", "closed")); retired.why
    'retired by ops: closed'
    >>> retired.read(0, 1, record("active")); retired.why is None
    True
    """

    def __init__(self, model: str) -> None:
        self.model = model
        self.why: str | None = None
        self.ready = threading.Event()

    def read(self, partition: int, offset: int, value: bytes | None) -> None:
        """One record of the model's key on ``model-specs``, in the partition's order."""
        if value is None:  # a tombstone: the model's records are forgotten
            self.why = None
            return
        try:
            record = decode_keyed(MODEL_SPECS, value, self.model, ModelSpecRecord)
            why = retirement(record)
            if why is None:
                spec_of(record, buildable=False)
        except (DecodeError, ConfigError) as error:
            log.error(
                "ignored the %s record of %s at partition %d, offset %d (%s)",
                MODEL_SPECS.name,
                self.model,
                partition,
                offset,
                error,
            )
            return
        if why != self.why and self.ready.is_set():
            log.warning("model %s %s", self.model, why or f"added again by {record.actor}")
        self.why = why

    def caught_up(self) -> None:
        """The model's history on the topic is read."""
        self.ready.set()


@dataclass(eq=False)
class _Watched:
    retirement: Retirement
    subscription: Subscription
    users: int = 0


class ModelSpecs(KeyedFollower):
    """The process's follower of ``model-specs`` (one partition a model, as on ``model-updates``),
    and the one :class:`Retirement` of each model watched on it.

    :meth:`watch` gives every user of a model the same :class:`Retirement` (the first one's watch
    reads the model's records; a later one's finds them read), and :meth:`unwatch` gives it back:
    the last user's stops reading it.
    """

    TOPIC = MODEL_SPECS

    def __init__(self, bootstrap: KafkaConnection, prefix: str, key: tuple[Any, ...]) -> None:
        self._watched: dict[str, _Watched] = {}
        # (not the routes' lock: subscribing takes that one)
        self._watch_lock = threading.Lock()
        super().__init__(bootstrap, prefix, key)

    def watch(self, model: str, wait: float) -> Retirement:
        """``model``'s :class:`Retirement` (``ready`` once its records are read), waiting up to
        ``wait`` for the topic to exist (:class:`~adaptloop.schemas.errors.TimedOut` then)."""
        partition = partition_for(model.encode(), self.partitions(wait))
        with self._watch_lock:
            watched = self._watched.get(model)
            if watched is None:
                reader = Retirement(model)
                watched = _Watched(reader, self.subscribe(model, partition, reader))
                self._watched[model] = watched
            watched.users += 1
            return watched.retirement

    def unwatch(self, model: str) -> None:
        """One user of ``model``'s :class:`Retirement` fewer (one call per :meth:`watch`)."""
        with self._watch_lock:
            watched = self._watched[model]
            watched.users -= 1
            if watched.users == 0:
                del self._watched[model]
                self.unsubscribe(watched.subscription)
