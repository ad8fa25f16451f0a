"""Contracts of the agent loop: feedback on agent runs and pairwise preferences."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictStr, model_validator

from adaptloop.schemas.base import Count, Event, FiniteFloat, Name, NonEmptyStr, new_id

NonNegative = Annotated[FiniteFloat, Field(ge=0.0)]
FeedbackKind = Literal["thumbs", "rating", "score", "comment", "step", "route"]


class AgentFeedbackEvent(Event):
    """One observation about an agent run: a user's thumbs/rating/score/comment,
    a ``step`` the agent took (its action, cost, tokens and latency), or the
    ``route`` a router chose (``variant``, with its probability as ``value``).

    >>> from adaptloop.schemas import AgentFeedbackEvent
    >>> AgentFeedbackEvent(trace_id="t1", run_id="r1", session_id="s1", agent="support",
    ...                    variant="prompt-b", step=3, kind="thumbs", value=1.0).value
    1.0
    """

    event_id: Name = Field(default_factory=new_id)
    trace_id: Name
    run_id: Name
    session_id: Name
    agent: Name
    variant: Name
    step: Count
    kind: FeedbackKind
    value: FiniteFloat | None = None
    comment: Annotated[StrictStr, Field(max_length=10_000)] | None = None
    action: NonEmptyStr | None = Field(
        default=None, description="The tool call or action of a step, for loop detection."
    )
    cost: NonNegative = 0.0
    tokens: Count = 0
    latency_ms: NonNegative = 0.0
    tenant: Name | None = None
    user_id: Name | None = None

    @model_validator(mode="after")
    def _value_matches_kind(self) -> AgentFeedbackEvent:
        if self.kind == "thumbs" and self.value not in (0.0, 1.0):
            raise ValueError("thumbs feedback needs value 1.0 (up) or 0.0 (down)")
        if self.kind in ("rating", "score") and self.value is None:
            raise ValueError(f"{self.kind} feedback needs a value")
        if self.kind == "comment" and not self.comment:
            raise ValueError("comment feedback needs a comment")
        if self.kind == "route" and (self.value is None or not 0.0 < self.value <= 1.0):
            raise ValueError("a route needs the probability of its choice as value, in (0, 1]")
        return self


class PreferenceEvent(Event):
    """A pairwise judgement: in this context, ``chosen`` was preferred to ``rejected``.

    >>> from adaptloop.schemas import PreferenceEvent
    >>> PreferenceEvent(context={"task": "refund"}, chosen="prompt-b", rejected="prompt-a",
    ...                 annotator="u7").chosen
    'prompt-b'
    """

    event_id: Name = Field(default_factory=new_id)
    context: dict[Name, StrictStr]
    chosen: Name
    rejected: Name
    annotator: Name
    trace_id: Name | None = None

    @model_validator(mode="after")
    def _distinct(self) -> PreferenceEvent:
        if self.chosen == self.rejected:
            raise ValueError("chosen and rejected must differ")
        return self


class VariantStats(BaseModel):
    """The sufficient statistics of one variant in one segment of a preference store shard."""

    model_config = ConfigDict(strict=True, frozen=True, extra="forbid")

    ups: NonNegative = 0.0
    downs: NonNegative = 0.0
    ratings: Count = 0
    rating_mean: FiniteFloat = 0.0
    rating_m2: NonNegative = 0.0
    wins: dict[NonEmptyStr, NonNegative] = Field(
        default_factory=dict, description="Pairwise wins against each variant."
    )


class PreferenceSnapshot(Event):
    """One shard of an agent's preference store (the feedback of one input partition), as of ``offsets``.

    Shards hold counts, so a client merges the shards of an agent exactly by adding them.
    """

    agent: Name
    shard: NonEmptyStr = Field(description="The input partition this shard summarises, e.g. agent-feedback:3.")
    offsets: dict[NonEmptyStr, Count]
    segments: dict[NonEmptyStr, dict[NonEmptyStr, VariantStats]]
    updates: Count
    quarantined: dict[NonEmptyStr, Count] = Field(default_factory=dict)
