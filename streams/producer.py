"""The producer SDK: validated, keyed, batched, idempotent sends of adaptloop events."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from types import TracebackType

from confluent_kafka import KafkaError, Message, Producer

from schemas.base import Event
from schemas.codec import encode
from schemas.errors import DeliveryFailed
from schemas.topics import Topic, topic_for

KAFKA_LOG = logging.getLogger("librdkafka")

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
}


class EventProducer:
    """Sends events to their topics, keyed by the topic's key field.

    Delivery failures are collected and raised by :meth:`flush` (and on leaving
    the ``with`` block) as :class:`~schemas.errors.DeliveryFailed`, so nothing
    fails silently.

    >>> from schemas import OutcomeEvent
    >>> with EventProducer("localhost:9092") as producer:  # doctest: +SKIP
    ...     producer.send(OutcomeEvent(decision_id="d-1", label=True, source="checkout"))
    """

    def __init__(
        self,
        bootstrap: str,
        *,
        topic_prefix: str = "",
        config: dict[str, object] | None = None,
        on_error: Callable[[str, bytes | None, str], None] | None = None,
    ) -> None:
        self.topic_prefix = topic_prefix
        self._producer = Producer(
            {**DEFAULT_PRODUCER_CONFIG, "bootstrap.servers": bootstrap, **(config or {})}, logger=KAFKA_LOG
        )
        self._on_error = on_error
        self.failures: list[tuple[str, bytes | None, str]] = []
        self.sent = 0
        self.delivered = 0

    def send(self, event: Event, *, topic: Topic | None = None, partition: int | None = None) -> None:
        """Queue ``event`` for its topic (or ``topic``); returns at once, delivery is batched.

        ``partition`` overrides key-based partitioning (clock ticks go to every partition).
        """
        if not isinstance(event, Event):
            raise TypeError(f"send() takes an adaptloop event, not {type(event).__name__}")
        topic = topic or topic_for(event)
        if not isinstance(event, topic.event):
            raise TypeError(f"{type(event).__name__} cannot go to topic {topic.name!r} ({topic.event.__name__})")
        self.send_bytes(topic.full_name(self.topic_prefix), topic.key_of(event), encode(event), partition)

    def send_bytes(self, topic_name: str, key: bytes | None, value: bytes | None, partition: int | None = None) -> None:
        """Queue already-encoded bytes; for replays and tools, not for services."""
        extra = {} if partition is None else {"partition": partition}
        while True:
            try:
                self._producer.produce(topic_name, value, key, on_delivery=self._delivered, **extra)
                break
            except BufferError:
                # The local queue is full: serve delivery reports until there is room.
                self._producer.poll(0.05)
        self.sent += 1
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

    def _delivered(self, error: KafkaError | None, message: Message) -> None:
        if error is None:
            self.delivered += 1
            return
        failure = (message.topic(), message.key(), error.str())
        self.failures.append(failure)
        if self._on_error is not None:
            self._on_error(*failure)

    def close(self) -> None:
        self.flush()

    def __enter__(self) -> EventProducer:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if exc_type is None:
            self.flush()
        else:
            # Still try to deliver what was queued, but do not mask the original error.
            self._producer.flush(10)
