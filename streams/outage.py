"""Telling a Kafka outage from a bug, and waiting an outage out.

A role that meets an outage (no broker answers, a request times out, a coordinator moves) exits with
:data:`OUTAGE_EXIT`; the worker restarts it without counting it against its restart budget, and the new
process waits for the broker with :func:`wait_patiently` for as long as it takes, then resumes from its
checkpoints. Any other error is a crash, which the budget counts.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient

from adaptloop.schemas.errors import BrokerUnavailable, DeliveryFailed, TimedOut
from adaptloop.streams.connection import kafka_config

log = logging.getLogger(__name__)

OUTAGE_EXIT = 75
"""The exit status of a role that stopped because Kafka did not answer (EX_TEMPFAIL)."""

BACKOFF_CAP_SECONDS = 30.0

_OUTAGE_CODES = frozenset(
    {
        KafkaError._TRANSPORT,
        KafkaError._ALL_BROKERS_DOWN,
        KafkaError._TIMED_OUT,
        KafkaError._MSG_TIMED_OUT,
        KafkaError._RESOLVE,
        KafkaError._WAIT_COORD,
        KafkaError.NOT_COORDINATOR,
        KafkaError.COORDINATOR_NOT_AVAILABLE,
        KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
        KafkaError.NOT_ENOUGH_REPLICAS,
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError.REQUEST_TIMED_OUT,
        KafkaError.NETWORK_EXCEPTION,
        KafkaError._TIMED_OUT_QUEUE,
        KafkaError.BROKER_NOT_AVAILABLE,
    }
)


def is_outage(error: BaseException) -> bool:
    """Whether ``error`` says Kafka did not answer (wait, then go on) rather than that something is wrong.

    >>> is_outage(BrokerUnavailable("localhost:9092")), is_outage(ValueError("a bug"))
    (True, False)
    >>> is_outage(KafkaException(KafkaError(KafkaError._ALL_BROKERS_DOWN)))
    True
    """
    if isinstance(error, BrokerUnavailable | TimedOut):
        return True
    if isinstance(error, DeliveryFailed):
        return error.undelivered > 0 or all("timed out" in reason.lower() for _, _, reason in error.failures)
    if isinstance(error, KafkaException) and error.args and isinstance(error.args[0], KafkaError):
        kafka_error: KafkaError = error.args[0]
        return bool(kafka_error.retriable()) or kafka_error.code() in _OUTAGE_CODES
    return False


def wait_patiently(
    bootstrap: str,
    config: dict[str, Any] | None = None,
    on_wait: Callable[[float, str], None] | None = None,
) -> AdminClient:
    """An admin client once a broker answers at ``bootstrap``, however long that takes.

    While none does, ``on_wait(since, why)`` is called at each attempt (``since``: when the wait began, epoch
    seconds), the attempts back off to one every :data:`BACKOFF_CAP_SECONDS`, and a warning is logged each
    minute.
    """
    admin = AdminClient(
        kafka_config(bootstrap, **{"socket.connection.setup.timeout.ms": 5000, "log_level": 0, **(config or {})})
    )
    since, delay, logged = time.time(), 0.5, 0.0
    while True:
        try:
            if admin.list_topics(timeout=5).brokers:
                if time.time() - since > 1:
                    log.warning("Kafka at %s answers again, after %.0fs", bootstrap, time.time() - since)
                return admin
            why = "no broker in the metadata"
        except KafkaException as error:
            why = error.args[0].str() if error.args and isinstance(error.args[0], KafkaError) else str(error)
        if on_wait is not None:
            on_wait(since, why)
        if time.monotonic() - logged > 60:
            log.warning(
                "Kafka at %s does not answer (%s); waiting since %s",
                bootstrap,
                why,
                time.strftime("%H:%M:%S", time.localtime(since)),
            )
            logged = time.monotonic()
        time.sleep(delay)
        delay = min(BACKOFF_CAP_SECONDS, delay * 2)
