"""Kafka wiring: the producer SDK, serving clients, topic admin, the consumer helper, dead letters, the roles."""

from adaptloop.streams.admin import delete_topics, ensure_topics, wait_for_broker
from adaptloop.streams.connection import ClientSettings
from adaptloop.streams.consumer import EventConsumer, Record
from adaptloop.streams.deadletter import DeadLetters
from adaptloop.streams.model_client import ModelClient, Prediction
from adaptloop.streams.preference_client import PreferenceClient
from adaptloop.streams.producer import EventProducer

__all__ = [
    "ClientSettings",
    "DeadLetters",
    "EventConsumer",
    "EventProducer",
    "ModelClient",
    "Prediction",
    "PreferenceClient",
    "Record",
    "delete_topics",
    "ensure_topics",
    "wait_for_broker",
]
