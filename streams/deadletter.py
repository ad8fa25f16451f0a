"""Dead letters: every record that cannot be used goes to the dead-letter topic with its reason."""

from __future__ import annotations

import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from adaptloop.schemas import topics
from adaptloop.schemas.base import Event
from adaptloop.schemas.codec import MAX_RECORD_BYTES, decode
from adaptloop.schemas.errors import DecodeError
from adaptloop.schemas.system import DeadLetter, DeadLetterKind
from adaptloop.schemas.topics import Topic
from adaptloop.streams.connection import ConnectionLike, KafkaConnection
from adaptloop.streams.metrics import DEAD_LETTERS
from adaptloop.streams.producer import EventProducer
from adaptloop.streams.reader import Since

log = logging.getLogger(__name__)

RECALL_MARGIN_SECONDS = 60.0
"""A role that restarts reads back its dead letters from this long before its last checkpoint
(clocks of the worker and the broker may differ a little), so that a record read again is not
dead-lettered twice."""

LOG_EVERY_SECONDS = 60.0
"""Dead letters are logged as a summary at most this often (the first of each kind at once): a
spammer's thousands of records must not become thousands of log lines."""

KEPT_VALUE_BYTES = 512 * 1024
"""A dead letter keeps values up to this size whole (base64 grows them by a third, and the letter
must fit in one Kafka record); larger ones keep their first 1024 bytes."""


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

    def __init__(
        self, producer: EventProducer, consumer: str, max_record_bytes: int = MAX_RECORD_BYTES
    ) -> None:
        self.producer = producer
        self.consumer = consumer
        self.max_record_bytes = max_record_bytes
        self.counts: Counter[str] = Counter()
        self._unlogged: Counter[str] = Counter()  # kind -> dead letters since the last summary
        self._last_reason: dict[str, str] = {}
        self._logged_at = time.monotonic()
        # (topic, partition, offset) of records dead-lettered before a restart, read back: not again
        self.already: set[tuple[str, int, int]] = set()

    def decode(
        self,
        topic: Topic,
        topic_name: str,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        reader: Callable[..., Any] | None = None,
    ) -> Event | None:
        """The decoded event, or ``None`` after dead-lettering the record. ``reader``: a fast reader
        of a topic only the worker writes (:data:`~adaptloop.schemas.trusted.TRUSTED_READERS`)
        instead of the contract's full validation."""
        try:
            if reader is not None:
                return reader(value, max_bytes=self.max_record_bytes)
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
    ) -> DeadLetter | None:
        """Send one record to the dead-letter topic with ``reason`` (None: it was, before a
        restart)."""
        if (topic_name, partition, offset) in self.already:
            return None
        truncated = value is not None and len(value) > min(self.max_record_bytes, KEPT_VALUE_BYTES)
        if truncated:  # keep the evidence without re-publishing a huge payload
            reason = f"{reason}; value truncated to its first 1024 bytes"
            value = value[:1024]  # type: ignore[index]
        letter = DeadLetter(
            source_topic=topic_name,
            partition=partition,
            offset=offset,
            key=key,
            value=value,
            kind=kind,
            reason=reason,
            consumer=self.consumer,
            truncated=truncated,
        )
        self.producer.send(letter)
        self.counts[kind] += 1
        DEAD_LETTERS.labels(self.consumer, kind).inc()
        if self.counts[kind] == 1:  # the first of its kind: at once
            log.warning(
                "dead letter from %s[%d]@%d: %s: %s", topic_name, partition, offset, kind, reason
            )
        else:
            self._unlogged[kind] += 1
            self._last_reason[kind] = reason
        self.log_summary()
        return letter

    def log_summary(self, force: bool = False) -> None:
        """Log the dead letters not logged yet, a count per kind with the last reason, at most once
        per :data:`LOG_EVERY_SECONDS` (or now, if ``force``)."""
        if not self._unlogged or (
            not force and time.monotonic() - self._logged_at < LOG_EVERY_SECONDS
        ):
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


def dead_lettered_since(
    connection: ConnectionLike, prefix: str, consumer: str, since: float, timeout: float = 30.0
) -> set[tuple[str, int, int]]:
    """Where each record ``consumer`` dead-lettered since ``since`` (epoch seconds) came from:
    (topic, partition, offset). A role that restarts reads again what it read after its last
    checkpoint; with these it dead-letters each of those records once."""
    name = topics.DEAD_LETTERS.full_name(prefix)
    found: set[tuple[str, int, int]] = set()
    with KafkaConnection.of(connection).reader(name, start=Since(since)) as reader:
        for message in reader.to_end(timeout):
            if message.value() is None:
                continue
            with contextlib.suppress(DecodeError):
                letter = decode(topics.DEAD_LETTERS, message.value())
                if isinstance(letter, DeadLetter) and letter.consumer == consumer:
                    found.add((letter.source_topic, letter.partition, letter.offset))
    return found
