"""Kafka wiring: the producer SDK, serving clients, topic admin, the consumer helper, dead letters,
the roles.

Names are loaded on first use: a role's process imports what it runs (the join never loads River,
pandas or SciPy, which the serving client needs: 1.3 s of each join process's start-up).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "ClientSettings": "adaptloop.streams.connection",
    "DeadLetters": "adaptloop.streams.deadletter",
    "EventConsumer": "adaptloop.streams.consumer",
    "EventProducer": "adaptloop.streams.producer",
    "KafkaConnection": "adaptloop.streams.connection",
    "ModelClient": "adaptloop.streams.model_client",
    "Prediction": "adaptloop.streams.model_client",
    "PreferenceClient": "adaptloop.streams.preference_client",
    "Record": "adaptloop.streams.consumer",
    "TopicReader": "adaptloop.streams.reader",
    "delete_topics": "adaptloop.streams.admin",
    "ensure_topics": "adaptloop.streams.admin",
    "wait_for_broker": "adaptloop.streams.admin",
}

__all__ = [
    "ClientSettings",
    "DeadLetters",
    "EventConsumer",
    "EventProducer",
    "KafkaConnection",
    "ModelClient",
    "Prediction",
    "PreferenceClient",
    "Record",
    "TopicReader",
    "delete_topics",
    "ensure_topics",
    "wait_for_broker",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'adaptloop.streams' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # loaded once
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


if TYPE_CHECKING:
    from adaptloop.streams.admin import delete_topics, ensure_topics, wait_for_broker
    from adaptloop.streams.connection import ClientSettings, KafkaConnection
    from adaptloop.streams.consumer import EventConsumer, Record
    from adaptloop.streams.deadletter import DeadLetters
    from adaptloop.streams.model_client import ModelClient, Prediction
    from adaptloop.streams.preference_client import PreferenceClient
    from adaptloop.streams.producer import EventProducer
    from adaptloop.streams.reader import TopicReader
