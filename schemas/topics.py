"""Every topic adaptloop uses, with its event type, its key and how it is kept.

Partitioning is the scale-out story: ``predictions`` and ``outcomes`` are
co-partitioned by ``decision_id`` so that one join task sees both sides of a
decision; ``training-examples`` and ``model-updates`` are keyed by model so that
each model is owned by exactly one learner.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from adaptloop.schemas.agents import AgentFeedbackEvent, PreferenceEvent, PreferenceSnapshot
from adaptloop.schemas.base import Event
from adaptloop.schemas.errors import ConfigError
from adaptloop.schemas.inference import OutcomeEvent, PredictionEvent, TrainingExample
from adaptloop.schemas.system import (
    ClockTick,
    DeadLetter,
    DeadLetterReplay,
    DriftAlert,
    GuardrailAlert,
    ModelCommand,
    ModelHealth,
    ModelSpecRecord,
    ModelVersion,
)


@dataclass(frozen=True)
class Topic:
    """A topic: its base name, the event it carries and the field used as key.

    >>> from adaptloop.schemas.topics import PREDICTIONS
    >>> PREDICTIONS.full_name("staging."), PREDICTIONS.key_of(PREDICTIONS.event.model_construct(decision_id="d1"))
    ('staging.predictions', b'd1')
    """

    name: str
    event: type[Event]
    key: str
    compacted: bool = False
    # Kafka stamps each record with the time the broker appended it (LogAppendTime), a time no
    # sender can forge: quotas count by it.
    arrival_time: bool = False
    copartitioned: str | None = None  # topics of one group must have the same partition count
    repartition_of: str | None = None  # the input whose misplaced records the join sends on here
    doc: str = ""

    def full_name(self, prefix: str = "") -> str:
        return f"{prefix}{self.name}"

    def key_of(self, event: Event) -> bytes:
        return str(getattr(event, self.key)).encode()


PREDICTIONS = Topic(
    "predictions",
    PredictionEvent,
    "decision_id",
    copartitioned="decisions",
    doc="Decisions made by served models, with features as served.",
)
OUTCOMES = Topic(
    "outcomes",
    OutcomeEvent,
    "decision_id",
    copartitioned="decisions",
    doc="Labels and rewards for decisions, arriving later.",
)
AGENT_FEEDBACK = Topic(
    "agent-feedback",
    AgentFeedbackEvent,
    "session_id",
    arrival_time=True,
    doc="Agent steps and user feedback, keyed by session so a session stays in order.",
)
PREFERENCES = Topic(
    "preferences", PreferenceEvent, "annotator", arrival_time=True, doc="Pairwise preferences."
)
TRAINING_EXAMPLES = Topic(
    "training-examples",
    TrainingExample,
    "model",
    copartitioned="models",
    doc="Joined prediction+outcome, keyed by model so one learner owns a model.",
)
MODEL_UPDATES = Topic(
    "model-updates",
    ModelVersion,
    "model",
    compacted=True,
    doc="The current version of each model (compacted: the latest per model is kept).",
)
MODEL_COMMANDS = Topic(
    "model-commands",
    ModelCommand,
    "model",
    copartitioned="models",
    doc="Operators' commands (rollback) to the learner that owns the model; same partition as "
    "its examples.",
)
MODEL_SPECS = Topic(
    "model-specs",
    ModelSpecRecord,
    "model",
    compacted=True,
    copartitioned="models",
    doc="Each model's spec, as operators declared it (compacted: the latest per model, a "
    "retirement included); "
    "same partition as its examples, so the learner that owns the model applies its changes.",
)
PREFERENCE_STORE = Topic(
    "preference-store",
    PreferenceSnapshot,
    "shard",
    compacted=True,
    doc="Preference store shards (counts per agent, segment and variant); compacted.",
)
DRIFT_ALERTS = Topic("drift-alerts", DriftAlert, "model", doc="Drift and model health alerts.")
MODEL_HEALTH = Topic(
    "model-health",
    ModelHealth,
    "model",
    compacted=True,
    doc="Each model's health, as its learner sees it.",
)
GUARDRAIL_ALERTS = Topic(
    "guardrail-alerts", GuardrailAlert, "subject", doc="Guardrail breaches with evidence."
)
DEAD_LETTER_REPLAYS = Topic(
    "dead-letter-replays",
    DeadLetterReplay,
    "letter",
    compacted=True,
    doc="Dead letters sent again, once each.",
)
DEAD_LETTERS = Topic(
    "dead-letters", DeadLetter, "source_topic", doc="Unusable records with the reason."
)
PREDICTIONS_REPARTITION = Topic(
    "predictions-repartition",
    PredictionEvent,
    "decision_id",
    copartitioned="decisions",
    repartition_of="predictions",
    doc="Predictions the join read on another partition than their key's, sent on to it "
    "(written by the join).",
)
OUTCOMES_REPARTITION = Topic(
    "outcomes-repartition",
    OutcomeEvent,
    "decision_id",
    copartitioned="decisions",
    repartition_of="outcomes",
    doc="Outcomes the join read on another partition than their key's, sent on to it (written "
    "by the join).",
)
JOIN_CLOCK = Topic(
    "join-clock",
    ClockTick,
    "source",
    copartitioned="decisions",
    doc="Clock ticks for the join, one per partition, co-partitioned with predictions.",
)

ALL_TOPICS: tuple[Topic, ...] = (
    PREDICTIONS,
    OUTCOMES,
    AGENT_FEEDBACK,
    PREFERENCES,
    TRAINING_EXAMPLES,
    MODEL_UPDATES,
    MODEL_COMMANDS,
    MODEL_SPECS,
    PREFERENCE_STORE,
    DRIFT_ALERTS,
    MODEL_HEALTH,
    GUARDRAIL_ALERTS,
    DEAD_LETTERS,
    DEAD_LETTER_REPLAYS,
    JOIN_CLOCK,
    PREDICTIONS_REPARTITION,
    OUTCOMES_REPARTITION,
)

_BY_EVENT: dict[type[Event], Topic] = {
    topic.event: topic for topic in ALL_TOPICS if topic.repartition_of is None
}
_BY_NAME: dict[str, Topic] = {topic.name: topic for topic in ALL_TOPICS}


def topic_for(event: Event | type[Event]) -> Topic:
    """The topic an event type is published to."""
    event_type = event if isinstance(event, type) else type(event)
    try:
        return _BY_EVENT[event_type]
    except KeyError:
        raise TypeError(f"{event_type.__name__} is not an adaptloop event with a topic") from None


def topic_named(name: str, prefix: str = "") -> Topic:
    """The topic whose full name (with ``prefix``) is ``name``."""
    base = name[len(prefix) :] if prefix and name.startswith(prefix) else name
    try:
        return _BY_NAME[base]
    except KeyError:
        known = ", ".join(sorted(_BY_NAME))
        raise ConfigError(f"unknown topic {name!r} (prefix {prefix!r}); known: {known}") from None


_M = 0x5BD1E995
_MASK = 0xFFFFFFFF


def murmur2(key: bytes) -> int:
    """Kafka's murmur2 hash of a key (unsigned 32 bits), as Java's ``Utils.murmur2`` computes it.

    >>> murmur2(b"21")
    3321034988
    """
    length = len(key)
    h = (0x9747B28C ^ length) & _MASK
    whole = length - length % 4
    for (k,) in struct.iter_unpack("<I", key[:whole]):
        k = (k * _M) & _MASK
        k ^= k >> 24
        h = ((h * _M) & _MASK) ^ ((k * _M) & _MASK)
    rest = length % 4
    if rest == 3:
        h ^= key[whole + 2] << 16
    if rest >= 2:
        h ^= key[whole + 1] << 8
    if rest >= 1:
        h = ((h ^ key[whole]) * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    return h ^ (h >> 15)


def partition_for(key: bytes, partitions: int) -> int:
    """The partition Java's default partitioner (and librdkafka's ``murmur2_random``, the SDK's)
    gives a key: the join expects each decision's prediction and outcome where this puts its
    ``decision_id``.

    >>> partition_for(b"d-1", 6) == partition_for(b"d-1", 6)
    True
    """
    return (murmur2(key) & 0x7FFFFFFF) % partitions
