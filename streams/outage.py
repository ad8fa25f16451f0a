"""Telling a Kafka outage from a refusal and from a bug (:func:`classify`), and waiting an outage
out.

A role that meets an outage (no broker answers, a request times out, a coordinator moves) exits with
:data:`OUTAGE_EXIT`; the worker restarts it without counting it against its restart budget, and the
new process waits for the broker with :func:`wait_patiently` for as long as it takes, then resumes
from its checkpoints. A role that is refused (the broker refuses its login or denies it a topic or
group, or a setting is wrong) exits with :data:`REFUSED_EXIT`: starting it again would be refused
again, so the worker stops with that one line. Any other error is a crash, which the budget counts.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Callable
from typing import Any, Literal

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient

from adaptloop.schemas.errors import (
    AuthenticationFailed,
    BrokerUnavailable,
    ConfigError,
    DeliveryFailed,
    TimedOut,
)
from adaptloop.streams.connection import ClientErrors, ConnectionLike, KafkaConnection

log = logging.getLogger(__name__)

OUTAGE_EXIT = 75
"""The exit status of a role that stopped because Kafka did not answer (EX_TEMPFAIL)."""

REFUSED_EXIT = 78
"""The exit status of a role that a wrong setting or login stopped (EX_CONFIG): never started
again."""

BACKOFF_CAP_SECONDS = 5.0
"""The longest pause between two attempts to reach the broker in :func:`wait_patiently`: a role
resumes at most this long after Kafka answers again (measured after outages of 70 s and 100 s:
0.1 s and 3.0 s with this cap, 21 s and 26 s with a cap of 30 s). An attempt is one metadata
request: one every 5 s per role costs nothing while it waits."""

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
        # A commit refused because the group lost this member while the broker was away: a new
        # process joins again.
        KafkaError.REBALANCE_IN_PROGRESS,
        KafkaError.ILLEGAL_GENERATION,
        KafkaError.UNKNOWN_MEMBER_ID,
    }
)

_REFUSED_CODES = frozenset(
    {
        KafkaError.SASL_AUTHENTICATION_FAILED,
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError.GROUP_AUTHORIZATION_FAILED,
        KafkaError.CLUSTER_AUTHORIZATION_FAILED,
        KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
    }
)

Verdict = Literal["outage", "refused", "crash"]


def classify(error: BaseException) -> Verdict:
    """What stopping on ``error`` means for a role: ``outage`` (Kafka did not answer: wait, start
    again), ``refused`` (a login, an ACL or a setting said no: starting again would not help) or
    ``crash`` (a bug, or anything unknown: counted against the restart budget).

    The errors an error was raised while handling count too: a consumer closing after its
    coordinator moved may raise another error on the way out.

    >>> classify(BrokerUnavailable("localhost:9092")), classify(ValueError("a bug"))
    ('outage', 'crash')
    >>> classify(KafkaException(KafkaError(KafkaError.NOT_COORDINATOR)))
    'outage'
    >>> classify(KafkaException(KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED)))
    'refused'
    """
    verdicts: set[Verdict] = set()
    seen: set[int] = set()
    todo: list[object] = [error]
    while todo:
        item = todo.pop()
        if item is None or id(item) in seen:
            continue
        seen.add(id(item))
        verdicts.add(_verdict(item))
        todo += [getattr(item, "__cause__", None), getattr(item, "__context__", None)]
    return "refused" if "refused" in verdicts else "outage" if "outage" in verdicts else "crash"


def _verdict(error: object) -> Verdict:
    if isinstance(error, KafkaError):  # raised bare, by Consumer.close(): see raised_kafka_error()
        error = KafkaException(error)
    if isinstance(error, AuthenticationFailed | ConfigError):
        return "refused"
    if isinstance(error, BrokerUnavailable | TimedOut):
        return "outage"
    if isinstance(error, DeliveryFailed):
        timed_out = all("timed out" in reason.lower() for _, _, reason in error.failures)
        return "outage" if error.undelivered > 0 or timed_out else "crash"
    if isinstance(error, KafkaException) and error.args and isinstance(error.args[0], KafkaError):
        kafka_error: KafkaError = error.args[0]
        if kafka_error.code() in _REFUSED_CODES:
            return "refused"
        if kafka_error.retriable() or kafka_error.code() in _OUTAGE_CODES:
            return "outage"
    return "crash"


def raised_kafka_error() -> KafkaException | None:
    """The KafkaError being handled (in a bare ``except:``), as a KafkaException; None for anything
    else.

    confluent-kafka's ``Consumer.close()`` raises a KafkaError itself when its last commit fails (a
    coordinator moving, after a broker restart), and a KafkaError is not an exception class: no
    ``except`` clause naming a class catches it, so a role would stop as if it had crashed.
    """
    error = sys.exc_info()[1]
    return KafkaException(error) if isinstance(error, KafkaError) else None


def is_outage(error: BaseException) -> bool:
    """Whether ``error`` says Kafka did not answer (wait, then go on) rather than that something is
    wrong.

    >>> is_outage(BrokerUnavailable("localhost:9092")), is_outage(ValueError("a bug"))
    (True, False)
    >>> is_outage(KafkaException(KafkaError(KafkaError._ALL_BROKERS_DOWN)))
    True
    """
    return classify(error) == "outage"


def wait_patiently(
    connection: ConnectionLike,
    config: dict[str, Any] | None = None,
    on_wait: Callable[[float, str], None] | None = None,
) -> AdminClient:
    """An admin client of ``connection`` once a broker answers there, however long that takes;
    raises :class:`AuthenticationFailed` as soon as the broker refuses the login (waiting would not
    change its mind).

    While none does, ``on_wait(since, why)`` is called at each attempt (``since``: when the wait
    began, epoch seconds), the attempts back off to one every :data:`BACKOFF_CAP_SECONDS`, and a
    warning is logged each minute.
    """
    connection = KafkaConnection.of(connection)
    bootstrap = connection.bootstrap
    properties = connection.config(
        **{"socket.connection.setup.timeout.ms": 5000, "log_level": 0, **(config or {})}
    )
    errors: ClientErrors = properties["error_cb"]
    # an admin client not returned is destroyed here, its threads joined (see forget_frames)
    with contextlib.ExitStack() as unless_returned:
        admin = unless_returned.enter_context(AdminClient(properties))
        since, delay, logged = time.time(), 0.5, 0.0
        while True:
            try:
                if admin.list_topics(timeout=5).brokers:
                    if time.time() - since > 1:
                        log.warning(
                            "Kafka at %s answers again, after %.0fs", bootstrap, time.time() - since
                        )
                    unless_returned.pop_all()
                    return admin
                why = "no broker in the metadata"
            except KafkaException as error:
                why = (
                    error.args[0].str()
                    if error.args and isinstance(error.args[0], KafkaError)
                    else str(error)
                )
            admin.poll(0)  # serves the error_cb: a refused login raises here
            why = errors.last or why
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
