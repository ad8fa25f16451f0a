"""Contracts of the agent loop: feedback on agent runs and pairwise preferences."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, StrictInt, StrictStr, model_validator

from schemas.base import Event, FiniteFloat, NonEmptyStr, new_id

NonNegative = Annotated[FiniteFloat, Field(ge=0.0)]
FeedbackKind = Literal["thumbs", "rating", "score", "comment", "step"]


class AgentFeedbackEvent(Event):
    """One observation about an agent run: a user's thumbs/rating/score/comment,
    or a ``step`` the agent took (its action, cost, tokens and latency).

    >>> from schemas import AgentFeedbackEvent
    >>> AgentFeedbackEvent(trace_id="t1", run_id="r1", session_id="s1", agent="support",
    ...                    variant="prompt-b", step=3, kind="thumbs", value=1.0).value
    1.0
    """

    event_id: NonEmptyStr = Field(default_factory=new_id)
    trace_id: NonEmptyStr
    run_id: NonEmptyStr
    session_id: NonEmptyStr
    agent: NonEmptyStr
    variant: NonEmptyStr
    step: Annotated[StrictInt, Field(ge=0)]
    kind: FeedbackKind
    value: FiniteFloat | None = None
    comment: Annotated[StrictStr, Field(max_length=10_000)] | None = None
    action: NonEmptyStr | None = Field(default=None, description="The tool call or action of a step, for loop detection.")
    cost: NonNegative = 0.0
    tokens: Annotated[StrictInt, Field(ge=0)] = 0
    latency_ms: NonNegative = 0.0
    tenant: NonEmptyStr | None = None
    user_id: NonEmptyStr | None = None

    @model_validator(mode="after")
    def _value_matches_kind(self) -> AgentFeedbackEvent:
        if self.kind == "thumbs" and self.value not in (0.0, 1.0):
            raise ValueError("thumbs feedback needs value 1.0 (up) or 0.0 (down)")
        if self.kind in ("rating", "score") and self.value is None:
            raise ValueError(f"{self.kind} feedback needs a value")
        if self.kind == "comment" and not self.comment:
            raise ValueError("comment feedback needs a comment")
        return self


class PreferenceEvent(Event):
    """A pairwise judgement: in this context, ``chosen`` was preferred to ``rejected``.

    >>> from schemas import PreferenceEvent
    >>> PreferenceEvent(context={"task": "refund"}, chosen="prompt-b", rejected="prompt-a",
    ...                 annotator="u7").chosen
    'prompt-b'
    """

    event_id: NonEmptyStr = Field(default_factory=new_id)
    context: dict[NonEmptyStr, StrictStr]
    chosen: NonEmptyStr
    rejected: NonEmptyStr
    annotator: NonEmptyStr
    trace_id: NonEmptyStr | None = None

    @model_validator(mode="after")
    def _distinct(self) -> PreferenceEvent:
        if self.chosen == self.rejected:
            raise ValueError("chosen and rejected must differ")
        return self
