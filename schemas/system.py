"""Contracts of the records adaptloop itself emits: versions, alerts, dead letters."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, StrictBytes, StrictStr

from adaptloop.schemas.base import Count, Event, FiniteFloat, Int64, NonEmptyStr, new_id
from adaptloop.schemas.errors import DecodeKind

Offset = Count

VersionReason = Literal["checkpoint", "rollback", "promotion", "initial"]
"""Why a version exists: learned (``checkpoint``; ``initial`` for a model's first), or an operator's or a
policy's ``rollback`` or ``promotion``."""


class ModelVersion(Event):
    """A published, content-addressed model version.

    ``version`` is the hash of the model bytes; ``offsets`` maps
    ``"topic:partition"`` to the next offset not yet learned, so a version says
    exactly what it knew.

    >>> from adaptloop.schemas import ModelVersion
    >>> ModelVersion(model="churn", version="ab12", examples_seen=10, sha256="ab12" * 16,
    ...              uri="models/churn/ab12.pkl", size_bytes=100).parent is None
    True
    """

    model: NonEmptyStr
    version: NonEmptyStr
    parent: NonEmptyStr | None = None
    reason: VersionReason = "checkpoint"
    examples_seen: Offset
    offsets: dict[NonEmptyStr, Offset] = Field(default_factory=dict)
    metrics: dict[NonEmptyStr, FiniteFloat] = Field(default_factory=dict)
    sha256: Annotated[StrictStr, Field(pattern=r"^[0-9a-f]{64}$")]
    uri: NonEmptyStr
    size_bytes: Offset
    dataset_hash: NonEmptyStr | None = None
    actor: NonEmptyStr | None = None
    note: StrictStr | None = None


class ModelCommand(Event):
    """An operator's instruction to the learner that owns ``model``, recorded like any event.

    ``rollback``: serve ``to_version`` again and continue learning from it.

    >>> from adaptloop.schemas import ModelCommand
    >>> ModelCommand(model="churn", action="rollback", to_version="ab12", actor="ops", reason="bad labels").action
    'rollback'
    """

    model: NonEmptyStr
    action: Literal["rollback"]
    to_version: NonEmptyStr
    actor: NonEmptyStr
    reason: StrictStr = ""
    command_id: NonEmptyStr = Field(default_factory=new_id)


class DriftAlert(Event):
    """A drift detector fired for a model (concept drift) or one of its inputs (data drift)."""

    model: NonEmptyStr
    model_version: NonEmptyStr | None = None
    detector: NonEmptyStr
    signal: NonEmptyStr = Field(description="What was watched: shadow_error, production_error, feature:<name>, ...")
    statistic: FiniteFloat | None = None
    threshold: FiniteFloat | None = None
    window: Count | None = None
    metric_before: FiniteFloat | None = None
    metric_after: FiniteFloat | None = None
    at_example: Offset | None = None


class GuardrailAlert(Event):
    """A guardrail was breached, with the evidence that shows it."""

    rule: NonEmptyStr
    subject: NonEmptyStr = Field(description="What breached it: a session, agent, tenant or feedback source.")
    agent: NonEmptyStr | None = None
    session_id: NonEmptyStr | None = None
    tenant: NonEmptyStr | None = None
    observed: FiniteFloat
    threshold: FiniteFloat
    evidence: dict[NonEmptyStr, StrictStr | Int64 | FiniteFloat | None] = Field(default_factory=dict)


DeadLetterKind = Literal[DecodeKind, "rejected"]
"""A :data:`~adaptloop.schemas.errors.DecodeKind`, or ``rejected``: a valid event that cannot be used (an
outcome without its prediction, an example its model cannot learn), with the reason."""


class DeadLetter(Event):
    """A record that could not be used, kept with its original bytes and the reason.

    >>> from adaptloop.schemas import DeadLetter
    >>> DeadLetter(source_topic="outcomes", partition=0, offset=7, key=None, value=b"{oops",
    ...            kind="malformed", reason="Invalid JSON", consumer="join").value
    b'{oops'
    """

    source_topic: NonEmptyStr
    partition: Count
    offset: Offset
    key: StrictBytes | None
    value: StrictBytes | None
    kind: DeadLetterKind
    reason: StrictStr
    consumer: NonEmptyStr


class ClockTick(Event):
    """Advances the join's event-time clock on one partition, so idle partitions still expire.

    The worker sends one to every partition each second; a replay or the demo
    sends one far in the future to settle every pending decision.
    """

    source: NonEmptyStr
