"""Dead letters: every record that cannot be used goes to the dead-letter topic with its reason."""

from __future__ import annotations

import logging
from collections import Counter

from schemas.base import Event
from schemas.codec import MAX_RECORD_BYTES, decode
from schemas.errors import DecodeError
from schemas.system import DeadLetter
from schemas.topics import Topic
from streams.metrics import DEAD_LETTERS
from streams.producer import EventProducer

log = logging.getLogger(__name__)

KEPT_VALUE_BYTES = 512 * 1024
"""A dead letter keeps values up to this size whole (base64 grows them by a third, and the letter must
fit in one Kafka record); larger ones keep their first 1024 bytes."""


class DeadLetters:
    """Decodes records, and turns those that fail into :class:`DeadLetter` events.

    The original key and value bytes are kept, so a fixed record can be replayed.
    ``counts`` tells how many records were rejected, by kind.

    >>> from schemas.topics import OUTCOMES
    >>> sent = []
    >>> class Recorder:  # stands in for an EventProducer
    ...     def send(self, event): sent.append(event)
    >>> dead = DeadLetters(Recorder(), consumer="doc")
    >>> dead.decode(OUTCOMES, "outcomes", 0, 41, b"d-1", b"{not json") is None
    True
    >>> sent[0].kind, sent[0].offset, dict(dead.counts)
    ('malformed', 41, {'malformed': 1})
    """

    def __init__(self, producer: EventProducer, consumer: str, max_record_bytes: int = MAX_RECORD_BYTES) -> None:
        self.producer = producer
        self.consumer = consumer
        self.max_record_bytes = max_record_bytes
        self.counts: Counter[str] = Counter()

    def decode(
        self, topic: Topic, topic_name: str, partition: int, offset: int, key: bytes | None, value: bytes | None
    ) -> Event | None:
        """The decoded event, or ``None`` after dead-lettering the record."""
        try:
            return decode(topic, value, max_bytes=self.max_record_bytes)
        except DecodeError as error:
            self.reject(topic_name, partition, offset, key, value, error.kind, error.reason)
            return None

    def reject(
        self,
        topic_name: str,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        kind: str,
        reason: str,
    ) -> DeadLetter:
        """Send one record to the dead-letter topic with ``reason``."""
        if value is not None and len(value) > min(self.max_record_bytes, KEPT_VALUE_BYTES):
            # Keep the evidence without re-publishing a huge payload.
            reason = f"{reason}; value truncated to its first 1024 bytes"
            value = value[:1024]
        letter = DeadLetter(
            source_topic=topic_name, partition=partition, offset=offset, key=key, value=value,
            kind=kind, reason=reason, consumer=self.consumer,
        )
        self.producer.send(letter)
        self.counts[kind] += 1
        DEAD_LETTERS.labels(self.consumer, kind).inc()
        log.warning("dead letter from %s[%d]@%d: %s: %s", topic_name, partition, offset, kind, reason)
        return letter
