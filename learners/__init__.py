"""Online learning without Kafka: specs, learners, the join, the model store, drift, preferences,
guardrails.

Imports :mod:`adaptloop.schemas` and River, never Kafka; :mod:`adaptloop.streams` wires it to
topics.
"""
