"""The producer SDK: validated, keyed, batched, idempotent sends of adaptloop events."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer, TopicPartition

from adaptloop.schemas.base import Event
from adaptloop.schemas.codec import encode
from adaptloop.schemas.errors import DeliveryFailed, TimedOut
from adaptloop.schemas.topics import Topic, topic_for
from adaptloop.streams.connection import ClientSettings, ConnectionLike, KafkaConnection

KAFKA_LOG = logging.getLogger("librdkafka")
log = logging.getLogger(__name__)

DEFAULT_PRODUCER_CONFIG: dict[str, object] = {
    # Idempotence + acks=all: a broker restart neither loses nor duplicates records.
    "enable.idempotence": True,
    "acks": "all",
    "linger.ms": 5,
    "batch.size": 1_000_000,
    "compression.type": "lz4",
    "queue.buffering.max.messages": 500_000,
    # murmur2, like the Java client and aiokafka (faust): the same key lands on the same
    # partition whichever language produced it, which the co-partitioned join relies on.
    "partitioner": "murmur2_random",
    # Only failures call back into Python; successes are counted from the queue (see ``delivered``).
    "delivery.report.only.error": True,
}

STUCK_CALL_GRACE_SECONDS = 10.0
"""How long past its own timeout a call of librdkafka that may ignore it is waited for before the
producer is taken for stuck (see :meth:`EventProducer.commit_transaction`)."""


class EventProducer:
    """Sends events to their topics, keyed by the topic's key field; made from a
    :class:`~adaptloop.streams.connection.KafkaConnection` (whose topic prefix it uses unless
    ``topic_prefix`` says otherwise) or a bare address.

    Delivery failures are collected and raised by :meth:`flush` (and on leaving
    the ``with`` block) as :class:`~adaptloop.schemas.errors.DeliveryFailed`, so nothing
    fails silently.

    >>> from adaptloop.schemas import OutcomeEvent
    >>> with EventProducer("localhost:9092") as producer:  # doctest: +SKIP
    ...     producer.send(OutcomeEvent(decision_id="d-1", label=True, source="checkout"))

    With ``transactional_id`` it is a transactional producer for read-process-write
    (the join): sends open a transaction, :meth:`commit_transaction` commits them
    together with the consumer's input offsets. Creating it fences any earlier
    producer with the same id and aborts that one's open transaction.
    """

    def __init__(
        self,
        connection: ConnectionLike,
        *,
        topic_prefix: str | None = None,
        config: dict[str, object] | None = None,
        on_error: Callable[[str, bytes | None, str], None] | None = None,
        transactional_id: str | None = None,
        timeout: float = 60.0,
    ) -> None:
        connection = KafkaConnection.of(connection)
        self.topic_prefix = connection.topic_prefix if topic_prefix is None else topic_prefix
        extra = {"transactional.id": transactional_id} if transactional_id else {}
        self._producer = Producer(
            connection.config(**DEFAULT_PRODUCER_CONFIG, **extra, **(config or {})),
            logger=KAFKA_LOG,
        )
        self._on_error = on_error
        self.failures: list[tuple[str, bytes | None, str]] = []
        self.sent = 0
        self.failed = 0
        self.transactional = transactional_id is not None
        self._in_transaction = False
        self._stuck = False  # a transactional call never returned: see commit_transaction
        if self.transactional:
            # Metadata first: librdkafka looks for the transaction coordinator as its bootstrap
            # connection hands over to the broker's own, finds no broker up, and retries 500 ms
            # later (a third of starts, measured: 0.5 s instead of 0.06 s for every partition a join
            # takes).
            self._producer.list_topics(timeout=timeout)
            self._producer.init_transactions(timeout)

    @classmethod
    def from_settings(cls, settings: ClientSettings | None = None, **options: Any) -> EventProducer:
        """A producer for the loop that ``settings`` (default: read from the environment) describe.

        ``options`` go to the constructor (``config``, ``on_error``, ...).
        """
        settings = settings if settings is not None else ClientSettings()
        return cls(settings.connection(), **options)

    def send(
        self, event: Event, *, topic: Topic | None = None, partition: int | None = None
    ) -> None:
        """Queue ``event`` for its topic (or ``topic``); returns at once, delivery is batched.

        ``partition`` overrides key-based partitioning (clock ticks go to every partition).
        """
        if not isinstance(event, Event):
            raise TypeError(f"send() takes an adaptloop event, not {type(event).__name__}")
        topic = topic or topic_for(event)
        if not isinstance(event, topic.event):
            raise TypeError(
                f"{type(event).__name__} cannot go to topic {topic.name!r} ({topic.event.__name__})"
            )
        self.send_bytes(
            topic.full_name(self.topic_prefix), topic.key_of(event), encode(event), partition
        )

    def send_bytes(
        self, topic_name: str, key: bytes | None, value: bytes | None, partition: int | None = None
    ) -> None:
        """Queue already-encoded bytes; for replays and tools, not for services."""
        if self.transactional and not self._in_transaction:
            self._producer.begin_transaction()
            self._in_transaction = True
        while True:
            try:
                if partition is None:
                    self._producer.produce(topic_name, value, key, on_delivery=self._delivered)
                else:
                    self._producer.produce(
                        topic_name, value, key, partition, on_delivery=self._delivered
                    )
                break
            except BufferError:
                # The local queue is full: serve delivery reports until there is room.
                self._producer.poll(0.05)
        self.sent += 1
        if not self.sent % 1000:  # serve delivery reports now and then, not per record
            self._producer.poll(0)

    def poll(self) -> None:
        """Serve delivery reports without waiting (for long-lived producers that rarely flush)."""
        self._producer.poll(0)
        if self.failures:
            failures, self.failures = self.failures, []
            raise DeliveryFailed(failures)

    def flush(self, timeout: float = 60.0) -> None:
        """Wait until every queued record is acknowledged; raise if any failed."""
        deadline = time.monotonic() + timeout
        remaining = self._producer.flush(timeout)
        while remaining and time.monotonic() < deadline:
            remaining = self._producer.flush(max(0.0, deadline - time.monotonic()))
        if self.failures or remaining:
            failures, self.failures = self.failures, []
            raise DeliveryFailed(failures, undelivered=remaining)

    @property
    def in_transaction(self) -> bool:
        """Whether records were sent since the last commit or abort (transactional producers)."""
        return self._in_transaction

    def commit_transaction(
        self,
        offsets: list[TopicPartition] | None = None,
        group_metadata: object | None = None,
        timeout: float = 60.0,
    ) -> None:
        """Commit what was sent since the last commit, and ``offsets`` for the consumer group (if
        given), atomically.

        Retriable errors (a broker restarting) are retried until ``timeout``; an error that
        needs an abort raises :class:`confluent_kafka.KafkaException` with ``txn_requires_abort()``:
        the caller aborts (:meth:`abort_transaction`) and reprocesses from the committed offsets.

        Sending the offsets raises :class:`~adaptloop.schemas.errors.TimedOut` if librdkafka has not
        returned :data:`STUCK_CALL_GRACE_SECONDS` after the timeout: its
        ``send_offsets_to_transaction`` waits for its group coordinator without a limit
        (confluentinc/librdkafka#5456, #5511), and after a single broker restarts it can wait for a
        coordinator it lost track of for ever. The producer is then stuck for good (any other
        transactional call would be refused); the role stops as for an outage, and the producer
        that takes over its ``transactional.id`` fences it and aborts the open transaction.
        """
        if not self._in_transaction:
            self._producer.begin_transaction()
            self._in_transaction = True
        deadline = time.monotonic() + timeout
        steps: list[Callable[[float], object]] = [self._producer.commit_transaction]
        if offsets is not None:
            steps.insert(
                0,
                lambda left: self._within(
                    left,
                    "send_offsets_to_transaction",
                    self._producer.send_offsets_to_transaction,
                    offsets,
                    group_metadata,
                    left,
                ),
            )
        for step in steps:
            while True:
                try:
                    step(max(1.0, deadline - time.monotonic()))
                    break
                except KafkaException as error:
                    if not error.args[0].retriable() or time.monotonic() > deadline:
                        raise
                    log.warning("transaction step failed, retrying: %s", error.args[0].str())
        self._in_transaction = False
        self.failures.clear()  # a committed transaction delivered every record in it

    def _within(self, timeout: float, name: str, call: Callable[..., object], *args: Any) -> None:
        """``call(*args)``, a call of librdkafka given ``timeout`` that may not keep to it, in a
        daemon thread, waited for :data:`STUCK_CALL_GRACE_SECONDS` longer; raises what it raised,
        or :class:`~adaptloop.schemas.errors.TimedOut` if it is still waiting (the thread is left
        behind: a daemon thread does not hold the process when the role exits)."""
        outcome: list[BaseException | None] = []

        def run() -> None:
            try:
                call(*args)
                outcome.append(None)
            except BaseException as error:  # handed to the caller's thread
                outcome.append(error)

        thread = threading.Thread(target=run, name=f"{name}-call", daemon=True)
        thread.start()
        thread.join(timeout + STUCK_CALL_GRACE_SECONDS)
        if not outcome:
            self._stuck = True
            raise TimedOut(
                f"librdkafka's {name} has not returned {timeout + STUCK_CALL_GRACE_SECONDS:.0f}s "
                "after it was called with a timeout of "
                f"{timeout:.0f}s (it waits for a group coordinator it lost track of, "
                "confluentinc/librdkafka#5456): this producer is stuck"
            )
        if outcome[0] is not None:
            raise outcome[0]

    def abort_transaction(self, timeout: float = 60.0) -> None:
        """Drop what was sent since the last commit (read_committed consumers never see it).

        A stuck producer (see :meth:`commit_transaction`) cannot: librdkafka refuses any other
        transactional call while one is under way. Its transaction stays open until the producer
        that takes over its ``transactional.id`` aborts it.
        """
        if self._in_transaction and not self._stuck:
            self._producer.abort_transaction(timeout)
            self._in_transaction = False
        self.failures.clear()

    @property
    def delivered(self) -> int:
        """Records the broker acknowledged: sent, minus failed, minus still queued."""
        return self.sent - self.failed - len(self._producer)

    def _delivered(self, error: KafkaError | None, message: Message) -> None:
        if error is None:
            return
        self.failed += 1
        failure = (message.topic() or "", message.key(), error.str())
        self.failures.append(failure)
        if self._on_error is not None:
            self._on_error(*failure)

    def close(self) -> None:
        self.flush()

    def __enter__(self) -> EventProducer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.flush()
        else:
            # Still try to deliver what was queued, but do not mask the original error.
            self._producer.flush(10)
