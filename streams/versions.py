"""Reading a topic to its current end: the versions published on ``model-updates``, or any topic's
events.

Which published version is a model's current one (:func:`is_newer`): the record with the highest
``sequence`` on the model's own partition of ``model-updates`` (where its key puts it). The order
records are read in says nothing (partitions are read in any order), and a record of the model on
another partition was not written by its learner's producer: it is ignored, with a warning. Records
from before sequence numbers count as 0: older than any numbered one, and among themselves the later
on the partition is the newer, as before.
"""

from __future__ import annotations

import contextlib
import logging

from adaptloop.schemas.base import Event
from adaptloop.schemas.codec import decode
from adaptloop.schemas.errors import DecodeError
from adaptloop.schemas.system import ModelVersion
from adaptloop.schemas.topics import MODEL_UPDATES, Topic, partition_for
from adaptloop.streams.connection import ConnectionLike, KafkaConnection

log = logging.getLogger(__name__)


def read_all(
    connection: ConnectionLike,
    topic: Topic,
    prefix: str = "",
    timeout: float = 30.0,
    *,
    strict: bool = False,
) -> list[Event]:
    """Every decodable, committed event of ``topic`` from its start up to its end as of now.

    Undecodable records and tombstones are skipped here: the consumers that act on the topic
    dead-letter the former. ``strict``: raise :class:`TimedOut` rather than return what ``timeout``
    allowed to read.
    """
    events: list[Event] = []
    for _, value in read_raw(connection, topic.full_name(prefix), timeout, strict=strict):
        if value is not None:
            with contextlib.suppress(DecodeError):
                events.append(decode(topic, value))
    return events


def read_raw(
    connection: ConnectionLike, name: str, timeout: float = 30.0, *, strict: bool = False
) -> list[tuple[bytes | None, bytes | None]]:
    """The (key, value) of every committed record of topic ``name`` up to its end as of now (none if
    the topic does not exist). ``strict``: raise :class:`TimedOut` if the end is not reached within
    ``timeout`` (an open transaction holds committed readers back until it ends): a restore must not
    go on with part of a state."""
    return [
        (key, value)
        for _, _, key, value in read_placed(connection, name, timeout, strict=strict)[0]
    ]


def read_placed(
    connection: ConnectionLike, name: str, timeout: float = 30.0, *, strict: bool = False
) -> tuple[list[tuple[int, int, bytes | None, bytes | None]], int]:
    """:func:`read_raw` with where each record was: ((partition, offset, key, value) of each, in
    partition and offset order; and how many partitions the topic has, 0 if it does not exist)."""
    with KafkaConnection.of(connection).reader(name) as reader:
        records = [
            (message.partition() or 0, message.offset() or 0, message.key(), message.value())
            for message in reader.to_end(timeout, strict=strict)
        ]
        return sorted(records, key=lambda record: record[:2]), len(reader.partitions() or [])


def published_versions(
    connection: ConnectionLike, prefix: str = "", timeout: float = 30.0
) -> dict[str, ModelVersion]:
    """Each model's current version on the compacted ``model-updates`` topic: its newest record by
    :func:`is_newer`, from the model's own partition."""
    latest: dict[str, ModelVersion] = {}
    records, partitions = read_placed(connection, MODEL_UPDATES.full_name(prefix), timeout)
    for partition, offset, _, value in records:
        if value is None:
            continue
        try:
            version = decode(MODEL_UPDATES, value)
        except DecodeError:
            continue
        assert isinstance(version, ModelVersion)
        if not on_its_partition(version.model, partition, partitions, offset):
            continue
        current = latest.get(version.model)
        if current is None or is_newer(version, current):
            latest[version.model] = version
    return latest


def home_partition(model: str, partitions: int) -> int:
    """The partition of ``model-updates`` where the learner's producer puts the records of ``model``
    (by key)."""
    return partition_for(model.encode(), partitions)


def on_its_partition(model: str, partition: int, partitions: int, offset: int) -> bool:
    """Whether a record of ``model`` read at ``partition`` is where its learner writes it; warn if
    not."""
    home = home_partition(model, partitions)
    if partition == home:
        return True
    log.warning(
        "ignored a record of model %s on partition %d of model-updates (offset %d): its "
        "learner publishes it on "
        "partition %d only",
        model,
        partition,
        offset,
        home,
    )
    return False


def is_newer(record: ModelVersion, than: ModelVersion) -> bool:
    """Whether ``record`` replaces ``than`` as the model's current version: a higher ``sequence`` (a
    record from before numbers counts as 0), or the same, read later on the model's partition (a
    record published again).

    >>> from adaptloop.schemas import ModelVersion
    >>> def v(sequence): return ModelVersion(model="m", version="ab12ab12ab12ab12", examples_seen=1,
    ...                                      sha256="ab12" * 16, uri="u", size_bytes=1, sequence=sequence)
    >>> is_newer(v(3), v(2)), is_newer(v(2), v(3)), is_newer(v(None), v(1)), is_newer(v(None), v(None))
    (True, False, False, True)
    """
    return (record.sequence or 0) >= (than.sequence or 0)
