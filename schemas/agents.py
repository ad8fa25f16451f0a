"""Contracts of the agent loop: feedback on agent runs and pairwise preferences."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr, model_validator

from adaptloop.schemas.base import Count, Event, FiniteFloat, Name, NonEmptyStr, new_id

NonNegative = Annotated[FiniteFloat, Field(ge=0.0)]
FeedbackKind = Literal["thumbs", "rating", "score", "comment", "step", "route"]


class AgentFeedbackEvent(Event):
    """One observation about an agent run: a user's thumbs/rating/score/comment,
    a ``step`` the agent took (its action, cost, tokens and latency), or the
    ``route`` a router chose (``variant``, with its probability as ``value``).

    ``value`` by kind: ``thumbs``: up is ``1`` or ``true``, down is ``-1`` or ``false`` (nothing
    else); ``rating``, ``score``: the number; ``route``: the probability the router gave its choice,
    in (0, 1].

    >>> from adaptloop.schemas import AgentFeedbackEvent
    >>> up = AgentFeedbackEvent(trace_id="t1", run_id="r1", session_id="s1", agent="support",
    ...                         variant="prompt-b", step=3, kind="thumbs", value=True)
    >>> up.thumb, up.model_copy(update={"value": -1.0}).thumb
    ('up', 'down')
    """

    model_config = ConfigDict(
        json_schema_extra={
            "allOf": [
                {
                    "if": {"properties": {"kind": {"const": "thumbs"}}, "required": ["kind"]},
                    "then": {
                        "properties": {"value": {"enum": [1, -1, True, False]}},
                        "required": ["value"],
                    },
                },
            ]
        }
    )

    event_id: Name = Field(default_factory=new_id)
    trace_id: Name
    run_id: Name
    session_id: Name
    agent: Name
    variant: Name
    step: Count
    kind: FeedbackKind
    value: FiniteFloat | StrictBool | None = Field(
        default=None,
        description="thumbs: 1 or true (up), -1 or false (down); rating, score: the number; "
        "route: the router's "
        "probability of its choice.",
    )
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
        if self.kind == "thumbs" and self.thumb is None:
            raise ValueError("thumbs feedback needs value 1 or true (up), -1 or false (down)")
        if self.kind in ("rating", "score", "route") and not isinstance(self.value, float):
            raise ValueError(f"{self.kind} feedback needs a number as value")
        if self.kind == "comment" and not self.comment:
            raise ValueError("comment feedback needs a comment")
        if self.kind == "route" and not 0.0 < self.value <= 1.0:  # type: ignore[operator]  # a number, checked above
            raise ValueError("a route needs the probability of its choice as value, in (0, 1]")
        return self

    @property
    def thumb(self) -> Literal["up", "down"] | None:
        """Which way a thumb went (None: not a thumb's value)."""
        value = self.value
        if value is True or (type(value) is float and value == 1.0):
            return "up"
        if value is False or (type(value) is float and value == -1.0):
            return "down"
        return None


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
    """One part of one shard of an agent's preference store (the feedback of one input partition),
    as of ``offsets``.

    Shards hold counts, so a client merges the shards of an agent exactly by adding them. A shard
    too large for one Kafka record is published in ``parts`` records (its segments split between
    them), each keyed ``<agent>@<input partition>/<part>``, all with the same ``offsets``: a client
    merges the parts of the newest publication of each shard.
    """

    agent: Name
    shard: NonEmptyStr = Field(description="The record's key: <agent>@<input partition>/<part>.")
    offsets: dict[NonEmptyStr, Count]
    segments: dict[NonEmptyStr, dict[NonEmptyStr, VariantStats]]
    updates: Count
    quarantined: dict[NonEmptyStr, Count] = Field(default_factory=dict)
    part: Count = 0
    parts: Count = Field(default=1, ge=1)
    segment_keys: list[Name] | None = Field(
        default=None,
        description="The context keys that split the store (a client must route with the same).",
    )

    @property
    def input_shard(self) -> str:
        """The input partition the record summarises (``agent-feedback:3``)."""
        rest = self.shard.removeprefix(f"{self.agent}@")
        return rest.rsplit("/", 1)[0]  # topic names have no "/": a suffix is the part's

    @property
    def position(self) -> int:
        """The offset of the input partition this publication covers up to (it identifies the
        publication)."""
        return self.offsets.get(self.input_shard, 0)
