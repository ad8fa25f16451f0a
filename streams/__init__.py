"""Kafka wiring: the producer SDK, topic admin, the consumer helper, dead letters, and the worker's agents."""

from streams.admin import delete_topics, ensure_topics, wait_for_broker
from streams.consumer import EventConsumer, Record
from streams.deadletter import DeadLetters
from streams.producer import EventProducer

__all__ = ["DeadLetters", "EventConsumer", "EventProducer", "Record", "delete_topics", "ensure_topics", "wait_for_broker"]
