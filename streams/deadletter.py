"""Dead letters: every record that cannot be used goes to the dead-letter topic with its reason."""

from __future__ import annotations

import logging
import time
from collections import Counter

from adaptloop.schemas.base import Event
from adaptloop.schemas.codec import MAX_RECORD_BYTES, decode
from adaptloop.schemas.errors import DecodeError
from adaptloop.schemas.system import DeadLetter, DeadLetterKind
from adaptloop.schemas.topics import Topic
from adaptloop.streams.metrics import DEAD_LETTERS
from adaptloop.streams.producer import EventProducer

log = logging.getLogger(__name__)

LOG_EVERY_SECONDS = 60.0
"""Dead letters are logged as a summary at most this often (the first of each kind at once): a spammer's
thousands of records must not become thousands of log lines."""

KEPT_VALUE_BYTES = 512 * 1024
"""A dead letter keeps values up to this size whole (base64 grows them by a third, and the letter must
fit in one Kafka record); larger ones keep their first 1024 bytes."""


class DeadLetters:
    """Decodes records, and turns those that fail into :class:`DeadLetter` events.

    The original key and value bytes are kept, so a fixed record can be replayed.
    ``counts`` tells how many records were rejected, by kind.

    >>> from adaptloop.schemas.topics import OUTCOMES
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
        self._unlogged: Counter[str] = Counter()  # kind -> dead letters since the last summary
        self._last_reason: dict[str, str] = {}
        self._logged_at = time.monotonic()

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
        kind: DeadLetterKind,
        reason: str,
    ) -> DeadLetter:
        """Send one record to the dead-letter topic with ``reason``."""
        if value is not None and len(value) > min(self.max_record_bytes, KEPT_VALUE_BYTES):
            # Keep the evidence without re-publishing a huge payload.
            reason = f"{reason}; value truncated to its first 1024 bytes"
            value = value[:1024]
        letter = DeadLetter(
            source_topic=topic_name,
            partition=partition,
            offset=offset,
            key=key,
            value=value,
            kind=kind,
            reason=reason,
            consumer=self.consumer,
        )
        self.producer.send(letter)
        self.counts[kind] += 1
        DEAD_LETTERS.labels(self.consumer, kind).inc()
        if self.counts[kind] == 1:  # the first of its kind: at once
            log.warning("dead letter from %s[%d]@%d: %s: %s", topic_name, partition, offset, kind, reason)
        else:
            self._unlogged[kind] += 1
            self._last_reason[kind] = reason
        self.log_summary()
        return letter

    def log_summary(self, force: bool = False) -> None:
        """Log the dead letters not logged yet, a count per kind with the last reason, at most once per
        :data:`LOG_EVERY_SECONDS` (or now, if ``force``)."""
        if not self._unlogged or (not force and time.monotonic() - self._logged_at < LOG_EVERY_SECONDS):
            return
        log.warning(
            "%s: %s",
            self.consumer,
            "; ".join(
                f"{count:,} more dead letter(s) of kind {kind} (last: {self._last_reason[kind]})"
                for kind, count in sorted(self._unlogged.items())
            ),
        )
        self._unlogged.clear()
        self._logged_at = time.monotonic()
