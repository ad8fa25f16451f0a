"""adaptloop: production events in, online River learners updated, new model versions served, audits
in DuckDB.

The public API is this module's names; a service needs a few lines::

    from adaptloop import EventProducer, ModelClient, OutcomeEvent

    with ModelClient.from_settings("churn") as model, EventProducer.from_settings() as events:
        decision = model.predict({"tenure_months": 7.0, "monthly_spend": 42.5})   # logged for the loop
        ...
        events.send(OutcomeEvent(decision_id=decision.decision_id, label=True, source="billing"))

Reading guide, in the order the layers build on each other (each folder of the repository is one
layer and installs as ``adaptloop.<folder>``; a layer imports only those above it in this list):

1. ``schemas/`` (:mod:`adaptloop.schemas`): the event contracts (pydantic), topics, codec, errors.
   Start with ``inference.py`` (predictions, outcomes, training examples) and ``errors.py``.
2. ``learners/`` (:mod:`adaptloop.learners`): the Kafka-free core. ``online.py`` (predict, score,
   learn), ``join.py`` (the delayed-feedback join), ``store.py`` (versions and checkpoints),
   ``watch.py`` and ``drift.py`` (monitoring and policies), ``preferences.py`` and
   ``guardrails.py``.
3. ``snapshots/`` (:mod:`adaptloop.snapshots`): the Parquet archive, DuckDB snapshots, audits,
   replay.
4. ``streams/`` (:mod:`adaptloop.streams`): Kafka. The producer SDK and ``ModelClient`` for
   services; the worker's roles (``join_agent.py``, ``learner_agent.py``, ``archive_agent.py``,
   ``agentops_agent.py``).
5. ``adaptloop/``: this package: settings, the CLI, the worker's supervisor, the local broker, the
   demos.

Names are loaded on first use, so ``import adaptloop.schemas`` stays free of Kafka and River.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.2.0"

_EXPORTS: dict[str, str] = {
    # events (adaptloop.schemas)
    "PredictionEvent": "adaptloop.schemas",
    "OutcomeEvent": "adaptloop.schemas",
    "TrainingExample": "adaptloop.schemas",
    "AgentFeedbackEvent": "adaptloop.schemas",
    "PreferenceEvent": "adaptloop.schemas",
    "ModelVersion": "adaptloop.schemas",
    "ModelCommand": "adaptloop.schemas",
    "DriftAlert": "adaptloop.schemas",
    "GuardrailAlert": "adaptloop.schemas",
    "DeadLetter": "adaptloop.schemas",
    "Event": "adaptloop.schemas",
    # errors (adaptloop.schemas.errors)
    "AdaptloopError": "adaptloop.schemas.errors",
    "BrokerUnavailable": "adaptloop.schemas.errors",
    "DecodeError": "adaptloop.schemas.errors",
    "DeliveryFailed": "adaptloop.schemas.errors",
    "UnknownModel": "adaptloop.schemas.errors",
    "SpecChanged": "adaptloop.schemas.errors",
    "ModelRefused": "adaptloop.schemas.errors",
    # specs (adaptloop.learners)
    "LearnerSpec": "adaptloop.learners.spec",
    "DriftSpec": "adaptloop.learners.spec",
    "CanarySpec": "adaptloop.learners.spec",
    "GuardrailLimits": "adaptloop.learners.guardrails",
    # clients (adaptloop.streams)
    "EventProducer": "adaptloop.streams.producer",
    "ModelClient": "adaptloop.streams.model_client",
    "Prediction": "adaptloop.streams.model_client",
    "PreferenceClient": "adaptloop.streams.preference_client",
    "ClientSettings": "adaptloop.streams.connection",
    # settings (adaptloop)
    "Settings": "adaptloop.settings",
}

__all__ = [  # the same names as _EXPORTS (a test checks)
    "AdaptloopError",
    "AgentFeedbackEvent",
    "BrokerUnavailable",
    "CanarySpec",
    "ClientSettings",
    "DeadLetter",
    "DecodeError",
    "DeliveryFailed",
    "DriftAlert",
    "DriftSpec",
    "Event",
    "EventProducer",
    "GuardrailAlert",
    "GuardrailLimits",
    "LearnerSpec",
    "ModelClient",
    "ModelCommand",
    "ModelRefused",
    "ModelVersion",
    "OutcomeEvent",
    "Prediction",
    "PredictionEvent",
    "PreferenceClient",
    "PreferenceEvent",
    "Settings",
    "SpecChanged",
    "TrainingExample",
    "UnknownModel",
    "__version__",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'adaptloop' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # loaded once
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


if TYPE_CHECKING:  # what the names are, for type checkers and editors
    from adaptloop.learners.guardrails import GuardrailLimits
    from adaptloop.learners.spec import CanarySpec, DriftSpec, LearnerSpec
    from adaptloop.schemas import (
        AgentFeedbackEvent,
        DeadLetter,
        DriftAlert,
        Event,
        GuardrailAlert,
        ModelCommand,
        ModelVersion,
        OutcomeEvent,
        PredictionEvent,
        PreferenceEvent,
        TrainingExample,
    )
    from adaptloop.schemas.errors import (
        AdaptloopError,
        BrokerUnavailable,
        DecodeError,
        DeliveryFailed,
        ModelRefused,
        SpecChanged,
        UnknownModel,
    )
    from adaptloop.settings import Settings
    from adaptloop.streams.connection import ClientSettings
    from adaptloop.streams.model_client import ModelClient, Prediction
    from adaptloop.streams.preference_client import PreferenceClient
    from adaptloop.streams.producer import EventProducer
