"""Contracts of the records adaptloop itself emits: versions, alerts, dead letters."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, StrictBool, StrictBytes, StrictStr

from adaptloop.schemas.base import (
    Count,
    Event,
    FiniteFloat,
    Int64,
    ModelName,
    Name,
    NonEmptyStr,
    VersionId,
    new_id,
)
from adaptloop.schemas.contract import ModelContract
from adaptloop.schemas.errors import DecodeKind

Offset = Count

VersionReason = Literal["checkpoint", "rollback", "promotion", "initial"]
"""Why a version exists: learned (``checkpoint``; ``initial`` for a model's first), or an operator's
or a policy's ``rollback`` or ``promotion``."""


CanaryState = Literal["running", "promoted", "rolled_back"]
"""Where a canary stands on a version record: ``running`` (serving splits the decisions between the
record's version and ``stable``), ``promoted`` or ``rolled_back`` (the gate's decision: the record's
version serves all)."""


class Canary(BaseModel):
    """A canary on a version record (the model's spec sets ``canary``): the split serving applies,
    and the gate's figures, so far (``running``) or those it decided on (``promoted``,
    ``rolled_back``).

    While it runs, a decision whose id falls in ``share`` (:mod:`adaptloop.learners.canary_split`)
    is served by the record's version, the others by ``stable``. Each group counts the decisions it
    served that got an outcome, and their mean error (0/1 for classes, absolute for numbers); the
    test pairs each outcome with the other group's latest (``compared`` pairs, the canary's error
    the lower in ``wins``, the higher in ``losses``; the mean errors over the pairs) and weighs them
    both ways: ``evidence_better`` and ``evidence_worse`` are the likelihood ratios compared with
    ``bound``.

    >>> Canary(stable="ab12ab12ab12ab12", canary="cd34cd34cd34cd34", share=0.1).state
    'running'
    """

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    stable: VersionId = Field(description="The version the other decisions are served by.")
    canary: VersionId = Field(
        description="The canary version: the newest of the line the gate judges."
    )
    share: Annotated[FiniteFloat, Field(gt=0, lt=1)] = Field(
        description="The share of decisions the canary serves."
    )
    state: CanaryState = "running"
    canary_outcomes: Count = Field(
        0, description="Decisions the canary line served that got an outcome."
    )
    stable_outcomes: Count = Field(
        0, description="Decisions the stable version served that got an outcome."
    )
    canary_error: FiniteFloat | None = Field(
        None, description="The canary line's mean error over its outcomes."
    )
    stable_error: FiniteFloat | None = Field(
        None, description="The stable version's mean error over its outcomes."
    )
    paired_canary_error: FiniteFloat | None = Field(
        None,
        description="The canary's mean error over the compared pairs (decisions served at "
        "about the same time).",
    )
    paired_stable_error: FiniteFloat | None = Field(
        None,
        description="The stable version's mean error over the compared pairs: what the "
        "test weighs.",
    )
    compared: Count = 0
    wins: Count = 0
    losses: Count = 0
    evidence_better: FiniteFloat = 1.0
    evidence_worse: FiniteFloat = 1.0
    bound: FiniteFloat | None = Field(
        None, description="The evidence either way that decides: 2 / (1 - confidence)."
    )


class ModelVersion(Event):
    """A published, content-addressed model version.

    ``version`` is the hash of the model bytes; ``offsets`` maps
    ``"topic:partition"`` to the next offset not yet learned, so a version says
    exactly what it knew.

    >>> from adaptloop.schemas import ModelVersion
    >>> ModelVersion(model="churn", version="ab12ab12ab12ab12", examples_seen=10, sha256="ab12" * 16,
    ...              uri="models/churn/ab12ab12ab12ab12.pkl", size_bytes=100).parent is None
    True
    """

    model: ModelName
    version: VersionId
    parent: VersionId | None = None
    reason: VersionReason = "checkpoint"
    examples_seen: Offset = Field(
        description="The examples the model's learner has learned from its stream, in all: "
        "counted across challenger promotions, rollbacks, restarts and hand-overs (a promoted "
        "challenger's versions go on from the count it was promoted at, not from its own start), "
        "so a wait for a version with examples_seen >= N (the learnable examples sent) ends. What "
        "a version a rollback serves again had learned when it was made is on the record that "
        "first published it."
    )
    offsets: dict[NonEmptyStr, Offset] = Field(default_factory=dict)
    metrics: dict[NonEmptyStr, FiniteFloat | None] = Field(
        default_factory=dict,
        description="The learner's metrics when it was published (``shadow.<Metric>``, "
        "``production.<Metric>``); "
        "null where a metric has scored nothing (no production metric before a version "
        "served a decision).",
    )
    sha256: Annotated[StrictStr, Field(pattern=r"^[0-9a-f]{64}$")]
    uri: NonEmptyStr
    size_bytes: Offset
    dataset_hash: NonEmptyStr | None = None
    actor: Name | None = None
    principal: Name | None = Field(
        default=None,
        description="For a rollback or promotion: the Kafka user the command was sent as (its "
        "``principal``).",
    )
    note: StrictStr | None = None
    servable: StrictBool = Field(
        default=True,
        description="Whether serving may use it: a version learned from fewer than the model's "
        "min_examples is "
        "published for the lineage, not for serving.",
    )
    contract: ModelContract | None = Field(
        default=None,
        description="What the model learns from and serves before it may serve (its default).",
    )
    sequence: Count | None = Field(
        default=None,
        description="The model's publication number: one more than the record of the version it "
        "replaces, from "
        "the learner's own checkpoint (so it only grows, across restarts and hand-overs; a "
        "rollback gets a new "
        "one too). Serving takes the highest; unset (a record from before numbers): 0, "
        "older than any numbered one.",
    )
    canary: Canary | None = Field(
        default=None,
        description="While the model's canary runs: the split serving applies and the gate's "
        "figures; on the "
        "gate's promotion or rollback record, the figures it decided on. Unset: the version "
        "serves every decision.",
    )


class ModelCommand(Event):
    """An operator's instruction to the learner that owns ``model``, recorded like any event.

    ``rollback``: serve ``to_version`` again and continue learning from it. ``promote``: serve
    ``to_version``, a model stored by a backtest (``adaptloop backtest --store``), and continue
    learning from it.

    >>> from adaptloop.schemas import ModelCommand
    >>> ModelCommand(model="churn", action="rollback", to_version="ab12ab12ab12ab12", actor="ops", reason="bad").action
    'rollback'
    >>> ModelCommand(model="churn", action="rollback", to_version="x" * 300, actor="ops")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    pydantic_core._pydantic_core.ValidationError: 1 validation error for ModelCommand
    to_version
      String should match pattern '^[0-9a-f]{16}$' ...
    """

    model: ModelName
    action: Literal["rollback", "promote"]
    to_version: VersionId
    actor: Name
    principal: Name | None = Field(
        default=None,
        description="The Kafka user the sender logged in as (None: not known, e.g. an "
        "unauthenticated listener); "
        "``actor`` is who the sender says asked, free text.",
    )
    reason: StrictStr = ""
    command_id: Name = Field(default_factory=new_id)


SpecStatus = Literal["active", "retired"]


class ModelSpecRecord(Event):
    """An operator's declaration of one model, on the compacted ``model-specs`` topic (key: the
    model).

    ``spec`` holds the fields of the model's learner spec
    (:class:`adaptloop.learners.spec.LearnerSpec`, which checks them: this layer knows no recipes);
    ``status`` ``retired`` stops the model from being learned and served while its versions,
    checkpoint and lineage stay for audits. A retirement is a record of its own, not a tombstone, so
    compaction keeps it as the model's latest state: analysts and ``adaptloop models list`` see who
    retired the model and why, and a worker's ``ADAPTLOOP_MODELS`` never adds it back.

    >>> from adaptloop.schemas import ModelSpecRecord
    >>> ModelSpecRecord(model="churn", spec={"name": "churn", "recipe": "hoeffding"}, actor="ops").status
    'active'
    """

    model: ModelName
    status: SpecStatus = "active"
    spec: dict[NonEmptyStr, JsonValue] = Field(
        default_factory=dict,
        description="The learner spec's fields (a retirement keeps the last ones).",
    )
    actor: Name
    principal: Name | None = Field(
        default=None,
        description="The Kafka user the sender logged in as (None: not known, e.g. an "
        "unauthenticated listener).",
    )
    reason: StrictStr = ""
    spec_id: Name = Field(default_factory=new_id)


class DriftAlert(Event):
    """A model is drifting (a detector fired on its errors or inputs) or is sick (its health check
    failed).

    ``kind`` says which; ``signal`` what was watched (``shadow_error``, ``production_error``,
    ``feature:<name>``, ``prediction``, ``label_rate``, or for health ``rejecting``,
    ``model_errors``, ``no_outcomes``); ``direction`` whether the watched error or statistic rose or
    fell.
    """

    model: ModelName
    model_version: Name | None = None
    kind: Literal["drift", "health"] = "drift"
    detector: NonEmptyStr
    signal: NonEmptyStr = Field(
        description="What was watched: shadow_error, production_error, feature:<name>, ..."
    )
    direction: Literal["rose", "fell"] | None = None
    statistic: FiniteFloat | None = None
    threshold: FiniteFloat | None = None
    window: Count | None = None
    metric_before: FiniteFloat | None = None
    metric_after: FiniteFloat | None = None
    at_example: Offset | None = Field(
        default=None, description="The learner's example count when it fired."
    )
    reason: StrictStr | None = Field(
        default=None, description="For a health alert: what is wrong, in words."
    )


class ModelHealth(Event):
    """How one model is doing, as the learner that owns it sees it over its latest decisions.

    Published on the compacted ``model-health`` topic when its status changes, and every minute
    while it learns. ``sick`` names its ``reasons``: it rejects more than its share of examples
    (``rejecting``), its model failed and was restored (``model_errors``), or decisions end without
    outcomes (``no_outcomes``).
    """

    model: ModelName
    status: Literal["ok", "sick"]
    reasons: list[StrictStr] = Field(default_factory=list)
    window: Count = Field(description="The latest decisions looked at.")
    learned: Count
    rejected: Count
    errors: Count
    rejected_total: Count = 0
    last_rejections: list[StrictStr] = Field(
        default_factory=list, description="The latest reasons, newest last."
    )


class GuardrailAlert(Event):
    """A guardrail was breached, with the evidence that shows it."""

    rule: NonEmptyStr
    subject: NonEmptyStr = Field(
        description="What breached it: a session, agent, tenant or feedback source."
    )
    agent: Name | None = None
    session_id: Name | None = None
    tenant: Name | None = None
    observed: FiniteFloat
    threshold: FiniteFloat
    evidence: dict[NonEmptyStr, StrictStr | Int64 | FiniteFloat | None] = Field(
        default_factory=dict
    )


DeadLetterKind = Literal[DecodeKind, "rejected", "error"]
"""A :data:`~adaptloop.schemas.errors.DecodeKind`; ``rejected``: a valid event that cannot be used
(an outcome without its prediction, an example that breaks its model's contract), with the reason;
``error``: handling the record raised (the exception's type and message), and the role went on."""


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
    truncated: StrictBool = Field(
        default=False, description="The value kept is the first 1024 bytes of a larger one."
    )


class DeadLetterReplay(Event):
    """A dead letter sent again to its source topic, by whom and why: each letter is replayed once,
    whoever asks again (its record on the compacted ``dead-letter-replays`` topic says it was).

    >>> DeadLetterReplay(letter="dead-letters:0@41", source_topic="outcomes", partition=2, offset=7,
    ...                  actor="ops", note="labels_01 set").letter
    'dead-letters:0@41'
    """

    letter: NonEmptyStr = Field(
        description="Where the dead letter is: dead-letters:<partition>@<offset>."
    )
    source_topic: NonEmptyStr
    partition: Count
    offset: Offset
    actor: Name
    principal: Name | None = Field(
        default=None,
        description="The Kafka user the replay was sent as (None: not known); "
        "``actor``: free text.",
    )
    note: StrictStr = ""


def reason_pattern(reason: str) -> str:
    """A dead letter's reason with its particulars (quoted values, numbers) taken out, so letters
    group by cause.

    >>> reason_pattern("decision 'd-17': label 'true' is a string; model 'churn' (binary) takes true or false")
    "decision '…': label '…' is a string; model '…' (binary) takes true or false"
    >>> reason_pattern("timestamp 9999-01-01T00:00:00+00:00 is 250,000,000s ahead")
    'timestamp … is …s ahead'
    """
    reason = _QUOTED.sub(lambda match: match.group(0)[0] + "…" + match.group(0)[0], reason)
    return _NUMBERS.sub("…", reason)


_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")
_NUMBERS = re.compile(r"[0-9][0-9.,:T+\-]*")


class ClockTick(Event):
    """Advances the join's event-time clock on one partition, so idle partitions still expire.

    The worker sends one to every partition each second; a replay or the demo
    sends one far in the future to settle every pending decision.
    """

    source: NonEmptyStr
