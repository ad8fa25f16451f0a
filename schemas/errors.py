"""Every exception adaptloop raises on purpose, in one place; each message says what went wrong and
what to do.

They live in the lowest layer so that every layer can raise them. The tree::

    AdaptloopError
    ├── ConfigError (also a ValueError)        a setting, spec, recipe, metric, query or argument is wrong
    │   ├── SpecChanged                        a checkpointed model's spec asks for another model
    │   └── TopicConfigMismatch                a topic exists with other partitions or cleanup policy
    ├── InvalidInput (also a ValueError)       a caller's input breaks a contract (a model's features, a request)
    ├── UnknownModel (also a KeyError)         no spec, store or version knows this model or version
    │   └── ModelRetired                       operators retired the model: it is no longer served
    ├── NoModelYet                             a model has published no version for serving yet
    ├── DecodeError                            a record is not a valid event (kind + reason: a dead letter)
    ├── UnlearnableExample                     a valid example that breaks its model's contract
    ├── ModelFailure                           a model raised while predicting or learning (a learner undoes it)
    ├── PredictionFailed                       no version of a model could answer a prediction
    ├── ModelRefused                           model bytes whose signature does not verify: never unpickled
    ├── KafkaProblem                           Kafka did not do what was asked
    │   ├── BrokerUnavailable                  no broker answers at the configured address
    │   ├── AuthenticationFailed               the broker refused the login (user, mechanism or password wrong)
    │   ├── DeliveryFailed                     produced records were not acknowledged
    │   └── TimedOut (also a TimeoutError)     Kafka or a worker did not answer in time
    ├── KafkaLaunchError                       the local broker could not be installed or started
    ├── ReplayError                            a replay cannot rebuild what was asked
    ├── StorageError                           the model store, archive or object store failed
    └── LimitExceeded                          a query went past a configured limit (time, memory) and was stopped

Errors from a caller's own bad input inside pydantic models stay pydantic's ``ValidationError``
(each field named); programming mistakes (an argument of the wrong type) stay ``TypeError``.
"""

from __future__ import annotations

from typing import Literal

DecodeKind = Literal[
    "malformed", "invalid", "unsupported_schema_version", "missing_key", "too_large", "empty"
]
"""Why a record is not an event: not JSON, not the contract, a version not supported, no key, too
big, no value."""


class AdaptloopError(Exception):
    """Base class of every error adaptloop raises on purpose."""


class ConfigError(AdaptloopError, ValueError):
    """A setting, spec, recipe, metric, query or argument is wrong; the message names it and the
    fix."""


class SpecChanged(ConfigError):
    """A model's spec now asks for another model (task, recipe or params) than its checkpoint holds.

    A checkpointed model cannot change what it is: its versions, lineage and metrics describe the
    old one. The message says how to start the new one.
    """


class TopicConfigMismatch(ConfigError):
    """An existing topic does not have the partitions or cleanup policy adaptloop needs."""


class InvalidInput(AdaptloopError, ValueError):
    """A caller's input breaks a contract: features a model's contract refuses, a request that is
    not an event. The message names the field and what it should be."""


class UnknownModel(AdaptloopError, KeyError):
    """A model name or version that no learner spec or model store knows."""

    def __str__(self) -> str:  # a KeyError would quote its message
        return str(self.args[0]) if self.args else ""


class ModelRetired(UnknownModel):
    """Operators retired the model on ``model-specs`` (``adaptloop models retire``): it is no longer
    learned nor served, until it is added again. ``why`` says who retired it and why.

    An :class:`UnknownModel`: the model has no spec in effect, and code that handles an unknown
    model (``adaptloop serve``'s 404) handles a retired one alike.
    """

    def __init__(self, model: str, why: str) -> None:
        super().__init__(f"model {model!r} is retired ({why}); it is no longer served")
        self.model = model
        self.why = why


class NoModelYet(AdaptloopError):
    """A model has not published a version for serving yet (it is still learning its first
    examples), and its spec declares no ``default_prediction`` to answer with meanwhile."""


class DecodeError(AdaptloopError):
    """A record could not be turned into an event.

    ``kind`` is a short machine-readable class (``malformed``, ``invalid``,
    ``unsupported_schema_version``, ``missing_key``, ``too_large``, ``empty``);
    ``reason`` is the human-readable detail that goes into the dead letter.
    """

    def __init__(self, kind: DecodeKind, reason: str) -> None:
        super().__init__(f"{kind}: {reason}")
        self.kind = kind
        self.reason = reason


class UnlearnableExample(AdaptloopError):
    """A valid training example that its model cannot learn: a label or feature of another type than
    the model's contract (a string label for a binary model, a category for a model of numbers).

    The learner dead-letters it with this reason, before anything of the model changes. ``field``
    says what broke the contract: ``label`` or ``features``.
    """

    def __init__(self, reason: str, field: Literal["label", "features"] = "label") -> None:
        super().__init__(reason)
        self.field = field


class ModelFailure(AdaptloopError):
    """A model raised while it predicted (``stage="predict"``: an earlier example broke it) or
    learned (``stage="learn"``: it may be half-updated). The learner restores it as it was, without
    the example to blame, and dead-letters that example."""

    def __init__(
        self, model: str, stage: Literal["predict", "learn"], error: BaseException
    ) -> None:
        super().__init__(f"model {model!r} failed to {stage}: {type(error).__name__}: {error}")
        self.model = model
        self.stage = stage
        self.error = error


class PredictionFailed(AdaptloopError):
    """No version of a model could answer a prediction (the current one raised, and so did those
    before it), and its spec declares no ``default_prediction``."""


class ModelRefused(AdaptloopError):
    """Model or checkpoint bytes whose signature does not verify with the configured key: they are
    never unpickled (unpickling runs code)."""


class KafkaProblem(AdaptloopError):
    """Kafka did not do what was asked."""


class BrokerUnavailable(KafkaProblem):
    """No Kafka broker answered at the configured address."""

    def __init__(self, bootstrap: str, detail: str = "") -> None:
        hint = "run 'adaptloop kafka up' or set ADAPTLOOP_BOOTSTRAP"
        super().__init__(f"no Kafka at {bootstrap}; {hint}" + (f" ({detail})" if detail else ""))
        self.bootstrap = bootstrap


class AuthenticationFailed(KafkaProblem):
    """The broker refused this client's login: a wrong user name, password or SASL mechanism. Trying
    again does not help, so a worker role that meets it stops rather than being started again."""

    def __init__(self, bootstrap: str, login: str, reason: str) -> None:
        super().__init__(
            f"authentication failed at Kafka {bootstrap} as {login}: {reason}; check the "
            "kafka setting's "
            "sasl.username, sasl.password and sasl.mechanism (ADAPTLOOP_KAFKA__SASL_USERNAME, ...)"
        )
        self.bootstrap = bootstrap


class DeliveryFailed(KafkaProblem):
    """Some produced records were not acknowledged by the broker."""

    def __init__(self, failures: list[tuple[str, bytes | None, str]], undelivered: int = 0) -> None:
        shown = "; ".join(f"{topic} key={key!r}: {err}" for topic, key, err in failures[:5])
        more = f" (+{len(failures) - 5} more)" if len(failures) > 5 else ""
        pending = f"; {undelivered} still queued after the flush timeout" if undelivered else ""
        super().__init__(f"{len(failures)} record(s) failed delivery: {shown}{more}{pending}")
        self.failures = failures
        self.undelivered = undelivered


class TimedOut(KafkaProblem, TimeoutError):
    """Kafka, or a worker expected to answer through it, did not answer in time."""


class KafkaLaunchError(AdaptloopError):
    """The local Kafka broker could not be installed or started."""


class ReplayError(AdaptloopError):
    """A replay cannot rebuild the version asked for (its lineage or examples are not archived)."""


class StorageError(AdaptloopError):
    """The model store, the archive or the object store behind them failed."""


class LimitExceeded(AdaptloopError):
    """A query went past a configured limit (an audit's ``audit_seconds`` or ``audit_memory_mb``)
    and was stopped: narrow it, or raise the limit. Not a wrong setting: the same query with a WHERE
    or a LIMIT runs."""
