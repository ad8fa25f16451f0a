"""Every exception adaptloop raises, in one place.

They live in the lowest layer so that every layer can raise them; each message
says what went wrong and what to do about it.
"""

from __future__ import annotations


class AdaptloopError(Exception):
    """Base class of every error adaptloop raises on purpose."""


class DecodeError(AdaptloopError):
    """A record could not be turned into an event.

    ``kind`` is a short machine-readable class (``malformed``, ``invalid``,
    ``unsupported_schema_version``, ``missing_key``, ``too_large``, ``empty``);
    ``reason`` is the human-readable detail that goes into the dead letter.
    """

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(f"{kind}: {reason}")
        self.kind = kind
        self.reason = reason


class BrokerUnavailable(AdaptloopError):
    """No Kafka broker answered at the configured address."""

    def __init__(self, bootstrap: str, detail: str = "") -> None:
        hint = "run 'adaptloop kafka up' or set ADAPTLOOP_BOOTSTRAP"
        super().__init__(f"no Kafka at {bootstrap}; {hint}" + (f" ({detail})" if detail else ""))
        self.bootstrap = bootstrap


class DeliveryFailed(AdaptloopError):
    """Some produced records were not acknowledged by the broker."""

    def __init__(self, failures: list[tuple[str, bytes | None, str]], undelivered: int = 0) -> None:
        shown = "; ".join(f"{topic} key={key!r}: {err}" for topic, key, err in failures[:5])
        more = f" (+{len(failures) - 5} more)" if len(failures) > 5 else ""
        pending = f"; {undelivered} still queued after the flush timeout" if undelivered else ""
        super().__init__(f"{len(failures)} record(s) failed delivery: {shown}{more}{pending}")
        self.failures = failures
        self.undelivered = undelivered


class TopicConfigMismatch(AdaptloopError):
    """An existing topic does not have the partitions or cleanup policy adaptloop needs."""


class KafkaLaunchError(AdaptloopError):
    """The local Kafka broker could not be installed or started."""


class UnknownModel(AdaptloopError):
    """A model name that no learner spec or model store knows."""


class UnlearnableExample(AdaptloopError):
    """A valid training example that this model cannot learn (a category for a model of numbers).

    The learner dead-letters it with this reason, before anything of the model changes.
    """


class SpecChanged(AdaptloopError):
    """A model's spec now asks for another model (task, recipe or params) than its checkpoint holds.

    A checkpointed model cannot change what it is: its versions, lineage and metrics describe the
    old one. The message says how to start the new one.
    """
