"""Dead letters, read back: listed by cause, and replayed to their source topic once a fix is in.

``adaptloop deadletters list`` groups the letters on ``dead-letters`` by source topic, role, kind
and cause (:func:`~adaptloop.schemas.system.reason_pattern`); ``adaptloop deadletters replay`` sends
chosen ones again, with their original key and bytes, to the topic they came from (after the
producer's bug is fixed, or the model's contract widened). A replay and its record on the compacted
``dead-letter-replays`` topic commit in one Kafka transaction (the operator's,
:func:`~adaptloop.streams.acls.replay_transactional_id`), and a letter with a record is never
replayed again: asking twice replays once. The record names the free-text ``actor`` and the Kafka
user the replay was sent as (``principal``); only operators may write that topic.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from adaptloop.schemas.codec import decode
from adaptloop.schemas.errors import DecodeError
from adaptloop.schemas.system import DeadLetter, DeadLetterReplay, reason_pattern
from adaptloop.schemas.topics import ALL_TOPICS, DEAD_LETTER_REPLAYS, DEAD_LETTERS, Topic
from adaptloop.streams.acls import login_principal, replay_transactional_id
from adaptloop.streams.connection import ConnectionLike, KafkaConnection
from adaptloop.streams.producer import EventProducer
from adaptloop.streams.versions import read_all


@dataclass(frozen=True)
class Letter:
    """A dead letter and where it is on ``dead-letters`` (its id:
    ``dead-letters:<partition>@<offset>``)."""

    id: str
    letter: DeadLetter


@dataclass(frozen=True)
class Group:
    """The letters of one cause."""

    source_topic: str
    consumer: str
    kind: str
    pattern: str
    letters: int
    replayed: int
    example: str


def read_letters(
    connection: ConnectionLike, prefix: str = "", timeout: float = 30.0
) -> list[Letter]:
    """Every dead letter on ``dead-letters`` up to its end now, with its id."""
    name = DEAD_LETTERS.full_name(prefix)
    return [
        Letter(f"{name}:{p}@{o}", letter)
        for p, o, letter in _read(connection, DEAD_LETTERS, name, timeout)
        if isinstance(letter, DeadLetter)
    ]


def replayed_ids(connection: ConnectionLike, prefix: str = "", timeout: float = 30.0) -> set[str]:
    """The ids of the letters replayed already."""
    return {
        replay.letter
        for replay in read_all(connection, DEAD_LETTER_REPLAYS, prefix, timeout)
        if isinstance(replay, DeadLetterReplay)
    }


def groups(letters: list[Letter], replayed: set[str]) -> list[Group]:
    """Letters by source topic, role, kind and cause, the largest first.

    >>> letter = DeadLetter(source_topic="outcomes", partition=0, offset=1, key=None, value=b"{",
    ...                     kind="malformed", reason="not valid JSON: EOF at line 1 column 2", consumer="join")
    >>> [(g.kind, g.pattern, g.letters) for g in groups([Letter("d:0@0", letter), Letter("d:0@1", letter)], set())]
    [('malformed', 'not valid JSON: EOF at line … column …', 2)]
    """
    counts: Counter[tuple[str, str, str, str]] = Counter()
    done: Counter[tuple[str, str, str, str]] = Counter()
    examples: dict[tuple[str, str, str, str], str] = {}
    for item in letters:
        letter = item.letter
        key = (letter.source_topic, letter.consumer, letter.kind, reason_pattern(letter.reason))
        counts[key] += 1
        done[key] += item.id in replayed
        examples.setdefault(key, letter.reason)
    return [Group(*key, count, done[key], examples[key]) for key, count in counts.most_common()]


def replay_letters(
    connection: ConnectionLike,
    chosen: list[Letter],
    *,
    actor: str,
    note: str = "",
    prefix: str = "",
    replayed: set[str] | None = None,
    on_skip: Callable[[Letter, str], None] | None = None,
) -> list[Letter]:
    """Send ``chosen`` letters' original records to their source topics, each with its replay
    record, in one transaction; return the letters replayed. Letters replayed before, or whose value
    was truncated, are skipped (``on_skip`` is told why)."""
    replayed = replayed if replayed is not None else replayed_ids(connection, prefix)
    sent: list[Letter] = []
    principal = login_principal(connection)
    producer = EventProducer(
        connection, topic_prefix=prefix, transactional_id=replay_transactional_id(prefix)
    )
    try:
        for item in chosen:
            letter = item.letter
            why = (
                "replayed before"
                if item.id in replayed
                else "its value was truncated (over 512 KB): the original is not in the letter"
                if letter.truncated
                else None
            )
            if why is not None:
                if on_skip is not None:
                    on_skip(item, why)
                continue
            producer.send_bytes(_sent_to(letter.source_topic, prefix), letter.key, letter.value)
            producer.send(
                DeadLetterReplay(
                    letter=item.id,
                    source_topic=letter.source_topic,
                    partition=letter.partition,
                    offset=letter.offset,
                    actor=actor,
                    principal=principal,
                    note=note,
                )
            )
            sent.append(item)
        if producer.in_transaction:
            producer.commit_transaction()
    finally:
        producer.close()
    return sent


def _read(
    connection: ConnectionLike, topic: Topic, name: str, timeout: float
) -> list[tuple[int, int, object]]:
    found: list[tuple[int, int, object]] = []
    with KafkaConnection.of(connection).reader(name) as reader:
        for message in reader.to_end(timeout):
            with contextlib.suppress(DecodeError):
                found.append(
                    (
                        message.partition() or 0,
                        message.offset() or 0,
                        decode(topic, message.value()),
                    )
                )
    return found


def _sent_to(source_topic: str, prefix: str) -> str:
    """Where a replayed record goes: its source topic, or for a record the join had sent on to a
    repartition topic, the input it came from (the join routes it again)."""
    base = source_topic[len(prefix) :] if source_topic.startswith(prefix) else source_topic
    for topic in ALL_TOPICS:
        if topic.name == base and topic.repartition_of is not None:
            return f"{prefix}{topic.repartition_of}"
    return source_topic
