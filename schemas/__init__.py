"""Event contracts of adaptloop: pydantic v2 models, topics, codec, JSON Schema export.

This layer imports nothing but pydantic and orjson (and msgspec, in the fast reader of the topics
only the worker writes, :mod:`adaptloop.schemas.trusted`); every other layer builds on it.
"""

from adaptloop.schemas.agents import (
    AgentFeedbackEvent,
    PreferenceEvent,
    PreferenceSnapshot,
    VariantStats,
)
from adaptloop.schemas.base import Event
from adaptloop.schemas.codec import decode, encode
from adaptloop.schemas.contract import ModelContract
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
from adaptloop.schemas.topics import ALL_TOPICS, Topic, topic_for, topic_named

__all__ = [
    "ALL_TOPICS",
    "AgentFeedbackEvent",
    "ClockTick",
    "DeadLetter",
    "DeadLetterReplay",
    "DriftAlert",
    "Event",
    "GuardrailAlert",
    "ModelCommand",
    "ModelContract",
    "ModelHealth",
    "ModelSpecRecord",
    "ModelVersion",
    "OutcomeEvent",
    "PredictionEvent",
    "PreferenceEvent",
    "PreferenceSnapshot",
    "Topic",
    "TrainingExample",
    "VariantStats",
    "decode",
    "encode",
    "topic_for",
    "topic_named",
]
