"""Model specs on Kafka: the compacted ``model-specs`` topic read, written, seeded and followed.

Operators declare models there (``adaptloop models add|update|retire``, :func:`declare`); the worker
seeds it from ``ADAPTLOOP_MODELS`` with the models it lacks (:func:`seed`); each role reads the
catalogue when it starts (:func:`read_catalogue`) and follows the topic while it runs:

- the learner reads ``model-specs`` in its consumer group, co-partitioned with ``training-examples``
  (the same key, the model, and partition count), so the learner that owns a model is the one that
  applies its spec changes, in its own order of records, checkpointing right after each one (see
  :mod:`adaptloop.streams.learner_agent`);
- the join and ``adaptloop serve`` follow every partition with a :class:`SpecFollower` and apply
  each change as they read it.
"""

from __future__ import annotations

import getpass
import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field

from confluent_kafka import OFFSET_BEGINNING, KafkaException, TopicPartition

from adaptloop.learners.catalog import catalogue, spec_of
from adaptloop.learners.spec import LearnerSpec
from adaptloop.schemas.codec import decode
from adaptloop.schemas.errors import ConfigError, DecodeError, DeliveryFailed
from adaptloop.schemas.system import ModelSpecRecord, SpecStatus
from adaptloop.schemas.topics import MODEL_SPECS
from adaptloop.streams.acls import login_principal
from adaptloop.streams.connection import ConnectionLike, KafkaConnection
from adaptloop.streams.producer import EventProducer
from adaptloop.streams.reader import partitions_of
from adaptloop.streams.versions import read_placed

log = logging.getLogger(__name__)

SEED_ACTOR = "ADAPTLOOP_MODELS"
"""The ``actor`` of the records a worker seeds from its settings."""


def _decoded(value: bytes | None, where: str) -> ModelSpecRecord | None:
    if value is None:
        return None
    try:
        record = decode(MODEL_SPECS, value)
    except DecodeError as error:
        log.warning("ignored an undecodable record of %s (%s): %s", MODEL_SPECS.name, where, error)
        return None
    assert isinstance(record, ModelSpecRecord)
    return record


@dataclass
class Catalogue:
    """The models in effect as of a read of ``model-specs`` to its end: each one's spec, the retired
    ones, the latest record of each, and where the read ended on each partition (a follower goes on
    from there)."""

    specs: dict[str, LearnerSpec]
    retired: set[str]
    records: dict[str, ModelSpecRecord]
    ends: dict[int, int] = field(default_factory=dict)


def read_catalogue(
    bootstrap: ConnectionLike,
    seeds: Mapping[str, LearnerSpec],
    prefix: str = "",
    timeout: float = 30.0,
    *,
    buildable: bool = True,
) -> Catalogue:
    """The topic's latest records over ``seeds`` (:func:`~adaptloop.learners.catalog.catalogue`).

    Each partition's end is the offset after its last record: compaction keeps a partition's last
    record (the latest of its model), so nothing written before the read is after its end."""
    latest: dict[str, ModelSpecRecord] = {}
    records, partitions = read_placed(
        bootstrap, MODEL_SPECS.full_name(prefix), timeout, strict=True
    )
    ends = dict.fromkeys(range(partitions), 0)
    for partition, offset, key, value in records:
        ends[partition] = offset + 1
        record = _decoded(value, f"partition {partition}, offset {offset}")
        if record is not None:
            latest[record.model] = record
        elif value is None and key is not None:  # a tombstone: the model's records are forgotten
            latest.pop(key.decode(errors="replace"), None)
    specs, retired = catalogue(seeds, latest.values(), buildable=buildable)
    return Catalogue(specs, retired, latest, ends)


def declare(
    bootstrap: ConnectionLike,
    model: str,
    spec: LearnerSpec | None,
    *,
    status: SpecStatus = "active",
    actor: str | None = None,
    reason: str = "",
    prefix: str = "",
    fields: Mapping[str, object] | None = None,
) -> ModelSpecRecord:
    """Send one spec record (checked first: a bad spec raises :class:`ConfigError` and nothing is
    sent) and wait until the broker has it. ``fields``: the spec's fields as given (default: every
    field of ``spec`` that is not its default, so a later default applies to it)."""
    if spec is not None:
        fields = (
            dict(fields)
            if fields is not None
            else spec.model_dump(mode="json", exclude_defaults=True)
        )
    record = ModelSpecRecord(
        model=model,
        status=status,
        spec={"name": model, **(fields or {})},  # type: ignore[dict-item]
        actor=actor or getpass.getuser(),
        principal=login_principal(bootstrap),
        reason=reason,
        spec_id=uuid.uuid4().hex,
    )
    if status == "active":
        spec_of(record)
    with EventProducer(bootstrap, topic_prefix=prefix) as producer:
        producer.send(record)
    return record


def seed(
    bootstrap: ConnectionLike,
    seeds: Mapping[str, LearnerSpec],
    prefix: str = "",
    timeout: float = 30.0,
) -> list[str]:
    """Declare each of ``seeds`` that ``model-specs`` has no record of (not one retired: that stays
    retired), or whose record was declared by the settings and differs from them now (a worker
    restarted with changed ``ADAPTLOOP_MODELS``); return their names. A worker whose login may not
    write the topic (under the ACLs only operators do) says so and goes on: every role overlays the
    topic on the same settings, so the catalogue is the same."""
    known = read_catalogue(bootstrap, {}, prefix, timeout).records
    missing = [name for name in seeds if name not in known]
    for name, record in known.items():
        if name in seeds and record.status == "active":
            try:
                same = spec_of(record) == seeds[name]
            except ConfigError:
                same = False
            if not same and record.actor == SEED_ACTOR:
                # Only ever declared by the settings: the settings manage it, and a worker restarted
                # with changed settings declares the change (an operator's record is left as it is).
                missing.append(name)
            elif not same:
                log.warning(
                    "model %s: ADAPTLOOP_MODELS differs from its spec on %s (declared by %s "
                    "at %s), which is "
                    "the one in effect; `adaptloop models update %s` changes it",
                    name,
                    MODEL_SPECS.name,
                    record.actor,
                    record.timestamp.isoformat(timespec="seconds"),
                    name,
                )
        elif name in seeds:
            log.warning(
                "model %s is in ADAPTLOOP_MODELS but was retired by %s: it stays retired",
                name,
                record.actor,
            )
    try:
        for name in missing:
            declare(
                bootstrap,
                name,
                seeds[name],
                actor=SEED_ACTOR,
                reason="seeded by a worker",
                prefix=prefix,
            )
    except (KafkaException, DeliveryFailed) as error:  # (an ACL: only operators write model-specs)
        log.warning(
            "could not seed %s with %s (%s): an operator adds them with `adaptloop models "
            "add`; meanwhile the "
            "roles take them from ADAPTLOOP_MODELS",
            MODEL_SPECS.name,
            ", ".join(missing),
            error,
        )
        return []
    if missing:
        log.info("seeded %s with %s from ADAPTLOOP_MODELS", MODEL_SPECS.name, ", ".join(missing))
    return missing


class SpecFollower:
    """Reads every partition of ``model-specs`` from ``ends`` (a :class:`Catalogue`'s; default: the
    start), without a consumer group, and hands over the new records at each :meth:`poll`."""

    def __init__(
        self, bootstrap: ConnectionLike, prefix: str = "", *, ends: Mapping[int, int] | None = None
    ) -> None:
        self.name = MODEL_SPECS.full_name(prefix)
        # (a consumer of no group's: its partitions are assigned, not shared)
        self.consumer = KafkaConnection.of(bootstrap).group_consumer(
            f"specs-{uuid.uuid4().hex}", **{"enable.auto.commit": False}
        )
        partitions = partitions_of(self.consumer, self.name, 30.0) or []
        starts = ends or {}
        self.consumer.assign(
            [TopicPartition(self.name, p, starts.get(p, OFFSET_BEGINNING)) for p in partitions]
        )

    def poll(self, timeout: float = 0.0) -> list[ModelSpecRecord]:
        """The records that came since the last call (waiting up to ``timeout`` for the first)."""
        records = []
        for message in self.consumer.consume(100, timeout):
            if message.error() is not None:
                continue
            record = _decoded(
                message.value(), f"partition {message.partition()}, offset {message.offset()}"
            )
            if record is not None:
                records.append(record)
        return records

    def close(self) -> None:
        self.consumer.close()
