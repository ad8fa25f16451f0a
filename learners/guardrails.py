"""Guardrails: on agents (runaway loops, cost caps, latency budgets) and on the loop's own feedback.

:class:`AgentGuard` sees each agent event and returns the :class:`GuardrailAlert` s it breaches, on
the very event that breaches (each rule fires once per subject and window). :class:`FeedbackGuard`
decides whether a piece of feedback may reach the preference store: values in range; no single
source (user, annotator) above its quota per hour, counted both by the event's own time and by the
time Kafka received it (an event time can be forged, an arrival time cannot); and no source giving
one variant more than a few votes per hour, so one source cannot move a variant's estimate by more
than that. What it refuses goes to quarantine with the reason. :func:`scrub_pii` removes obvious PII
from free text, in time linear in its length.

Their memory is bounded whatever the traffic: sessions idle for ``session_ttl_seconds`` are
forgotten, and at most ``max_sessions`` sessions and ``max_sources`` sources are remembered (the
least recently seen go first). What changed in their counters can be written to a changelog
(:meth:`AgentGuard.take_changes`) and loaded back (:meth:`AgentGuard.load`), so a restarted role
goes on counting.

>>> guard = AgentGuard(GuardrailLimits(max_repeated_action=3))
>>> from adaptloop.schemas import AgentFeedbackEvent
>>> steps = [AgentFeedbackEvent(trace_id="t", run_id="r", session_id="s1", agent="a", variant="v", step=i,
...                             kind="step", action="search(q)") for i in range(4)]
>>> [[alert.rule for alert in guard.observe(step)] for step in steps]
[[], [], ['tool_loop'], []]
"""

from __future__ import annotations

import re
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictStr

from adaptloop.schemas.agents import AgentFeedbackEvent, PreferenceEvent
from adaptloop.schemas.system import GuardrailAlert

HOUR = 3600.0

QuarantineKind = Literal["invalid", "rate_limited", "capped", "cardinality"]


class GuardrailLimits(BaseModel):
    """Thresholds of the guardrails (settings: ``guardrails``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_repeated_action: int = Field(
        5, ge=2, description="The same action this many times in a row in a session."
    )
    max_steps: int = Field(50, ge=1, description="Steps in one session.")
    session_cost: float = Field(1.0, gt=0, description="Money per session.")
    session_tokens: int = Field(100_000, ge=1, description="Tokens per session.")
    agent_hourly_cost: float = Field(50.0, gt=0, description="Money per agent per hour.")
    tenant_hourly_cost: float = Field(20.0, gt=0, description="Money per tenant per hour.")
    step_latency_ms: float = Field(30_000.0, gt=0, description="Latency budget of one step.")
    feedback_per_source_per_hour: int = Field(
        100,
        ge=1,
        description="Feedback one user or annotator may give per hour (by event time "
        "and by arrival).",
    )
    votes_per_source_per_variant: int = Field(
        5,
        ge=1,
        description="Thumbs, ratings, scores or preferences one source may give one variant per "
        "hour: no source can "
        "move a variant's estimate by more than this many votes.",
    )
    rating_range: tuple[float, float] = Field(
        (1.0, 5.0), description="Ratings outside it are quarantined."
    )
    score_range: tuple[float, float] = Field(
        (0.0, 1.0), description="Scores outside it are quarantined."
    )
    session_ttl_seconds: float = Field(
        3600.0,
        gt=0,
        description="A session idle this long is forgotten (its counters start again).",
    )
    max_sessions: int = Field(
        100_000, ge=1, description="Sessions remembered at once (the least recent go first)."
    )
    max_sources: int = Field(
        100_000,
        ge=1,
        description="Feedback sources remembered at once (the least recent go first).",
    )
    agents: dict[StrictStr, list[StrictStr]] = Field(
        {},
        description='Declared agents and their variants (`{support = ["prompt-a", '
        '"prompt-b"]}`): they never count '
        "toward `max_agents` or `max_variants_per_agent`, and their slots are never reclaimed.",
    )
    max_agents: int = Field(
        1_000,
        ge=1,
        description="Undeclared agents a preference shard (input partition) holds; a new one "
        "takes the slot of the "
        "one with the least feedback (the idlest of those), which is dropped and reported "
        "(rule slot_reclaimed).",
    )
    max_variants_per_agent: int = Field(
        100,
        ge=2,
        description="Undeclared variants an agent holds in a shard; a new one takes the slot of "
        "the one with the "
        "least feedback (the idlest of those), which is dropped and reported (rule "
        "slot_reclaimed).",
    )
    max_segments_per_agent: int = Field(
        1_000,
        ge=1,
        description="Segments an agent holds in a shard; feedback for more: quarantined.",
    )


class _Bounded(OrderedDict[str, Any]):
    """A dict that forgets its least recently touched keys beyond ``limit``, and remembers which
    keys it touched or forgot since :meth:`take_changes` (for a changelog)."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit
        self.changed: dict[str, None] = {}  # an ordered set

    def touch(self, key: str, default: Any) -> Any:
        """The value of ``key`` (made by ``default()`` if new), now the most recent; marked as
        changed."""
        value = self.get(key)
        if value is None:
            value = self[key] = default()
            while len(self) > self.limit:
                self.forget_oldest()
        else:
            self.move_to_end(key)
        self.changed[key] = None
        return value

    def forget_oldest(self) -> None:
        key, _ = self.popitem(last=False)
        self.changed[key] = None

    def take_changes(self) -> list[tuple[str, Any]]:
        """(key, value or None if forgotten) of each key changed since the last call."""
        changes = [(key, self.get(key)) for key in self.changed]
        self.changed = {}
        return changes


@dataclass(slots=True)
class _Session:
    """One session's counters."""

    seen: float  # the event time it was last seen
    last_action: str | None = None
    repeats: int = 0
    steps: int = 0
    cost: float = 0.0
    tokens: int = 0
    fired: list[str] = field(default_factory=list)  # the rules that fired for it


@dataclass(slots=True)
class _Hourly:
    """An agent's or a tenant's spending in the current hour."""

    hour: int
    cost: float = 0.0
    fired: bool = False


class AgentGuard:
    """Per session, agent and tenant counters over agent events; alerts on the breaching event."""

    def __init__(self, limits: GuardrailLimits) -> None:
        self.limits = limits
        self.sessions = _Bounded(limits.max_sessions)  # session id -> _Session
        self.hourly = _Bounded(limits.max_sources)  # "agent:<name>" or "tenant:<name>" -> _Hourly

    def observe(self, event: AgentFeedbackEvent) -> list[GuardrailAlert]:
        limits, alerts = self.limits, []
        now = event.timestamp.timestamp()
        self._forget_idle(now)
        session: _Session = self.sessions.touch(event.session_id, lambda: _Session(now))
        session.seen = now
        fired = session.fired

        def fire(
            rule: str,
            observed: float,
            threshold: float,
            subject: str | None = None,
            **evidence: str | int | float | None,
        ) -> None:
            alerts.append(
                GuardrailAlert(
                    rule=rule,
                    subject=subject or event.session_id,
                    agent=event.agent,
                    session_id=event.session_id,
                    tenant=event.tenant,
                    observed=float(observed),
                    threshold=float(threshold),
                    evidence={
                        "variant": event.variant,
                        "trace_id": event.trace_id,
                        "step": event.step,
                        "event_id": event.event_id,
                        **evidence,
                    },
                )
            )

        if event.kind == "step":
            session.steps += 1
            if event.action is not None and event.action == session.last_action:
                session.repeats += 1
            else:
                session.last_action, session.repeats = event.action, 1
            if session.repeats >= limits.max_repeated_action and "tool_loop" not in fired:
                fired.append("tool_loop")
                fire("tool_loop", session.repeats, limits.max_repeated_action, action=event.action)
            if session.steps > limits.max_steps and "max_steps" not in fired:
                fired.append("max_steps")
                fire("max_steps", session.steps, limits.max_steps)
            if event.latency_ms > limits.step_latency_ms:
                fire(
                    "latency_budget", event.latency_ms, limits.step_latency_ms, action=event.action
                )
        session.cost += event.cost
        session.tokens += event.tokens
        if session.cost > limits.session_cost and "session_cost" not in fired:
            fired.append("session_cost")
            fire("session_cost", session.cost, limits.session_cost)
        if session.tokens > limits.session_tokens and "session_tokens" not in fired:
            fired.append("session_tokens")
            fire("session_tokens", session.tokens, limits.session_tokens)
        hour = int(now // HOUR)
        for kind, subject, limit in (
            ("agent", event.agent, limits.agent_hourly_cost),
            ("tenant", event.tenant, limits.tenant_hourly_cost),
        ):
            if subject is None or not event.cost:
                continue
            spent: _Hourly = self.hourly.touch(f"{kind}:{subject}", lambda: _Hourly(hour))
            # a new hour, a new budget (an event of an earlier hour counts in the current)
            if hour > spent.hour:
                spent.hour, spent.cost, spent.fired = hour, 0.0, False
            spent.cost += event.cost
            if spent.cost > limit and not spent.fired:
                spent.fired = True
                fire(
                    f"{kind}_hourly_cost",
                    spent.cost,
                    limit,
                    subject=f"{kind}:{subject}",
                    hour=spent.hour,
                )
        return alerts

    def _forget_idle(self, now: float) -> None:
        ttl = self.limits.session_ttl_seconds
        while self.sessions:
            oldest: _Session = next(iter(self.sessions.values()))
            if now - oldest.seen <= ttl:
                break
            self.sessions.forget_oldest()

    def take_changes(self) -> dict[str, list[Any] | None]:
        """The counters changed since the last call, as changelog entries: key -> plain values (for
        MessagePack), or None for a forgotten one. :meth:`load` takes them back."""
        changes: dict[str, list[Any] | None] = {}
        for prefix, entries in (("session:", self.sessions), ("hourly:", self.hourly)):
            for key, value in entries.take_changes():
                changes[prefix + key] = _fields(value) if value is not None else None
        return changes

    def load(self, key: str, values: list[Any]) -> bool:
        """Take back one changelog entry of :meth:`take_changes` (False: not one of this
        guard's)."""
        kind, _, name = key.partition(":")
        if kind == "session":
            self.sessions.touch(name, lambda: _Session(*values))
        elif kind == "hourly":
            self.hourly.touch(name, lambda: _Hourly(*values))
        else:
            return False
        return True

    def clear_changes(self) -> None:
        self.sessions.changed, self.hourly.changed = {}, {}


def _fields(value: Any) -> list[Any]:
    return [getattr(value, name) for name in value.__slots__]


class FeedbackGuard:
    """Admits feedback into the store, or says why not (for quarantine)."""

    def __init__(self, limits: GuardrailLimits) -> None:
        self.limits = limits
        # source -> (times by event, times by arrival) of its admitted feedback in the last hour
        self.windows = _Bounded(limits.max_sources)
        # "source|agent|variant" -> times (by arrival, else by event) of its admitted votes in the
        # last hour
        self.votes = _Bounded(limits.max_sources)
        self.quarantined: dict[str, int] = {}  # kind -> count

    def check(
        self,
        event: AgentFeedbackEvent | PreferenceEvent,
        arrived: float | None = None,
        agent: str | None = None,
    ) -> tuple[QuarantineKind, str] | None:
        """None to admit, else (the kind, the reason) for quarantine. ``arrived``: when Kafka
        received it (epoch seconds; None: counted by event time alone); ``agent``: a preference's
        agent.

        Admitted feedback counts toward its source's quota and vote caps.
        """
        invalid = self._invalid(event) if isinstance(event, AgentFeedbackEvent) else None
        if invalid is not None:
            return self._refuse("invalid", invalid)
        source = (
            event.annotator
            if isinstance(event, PreferenceEvent)
            else (event.user_id or f"session:{event.session_id}")
        )
        at = event.timestamp.timestamp()
        by_event, by_arrival = self.windows.touch(source, lambda: (deque(), deque()))
        quota = self.limits.feedback_per_source_per_hour
        for window, now in ((by_event, at), (by_arrival, arrived)):
            if now is None:
                continue
            while window and window[0] <= now - HOUR:
                window.popleft()
            if len(window) >= quota:
                how = "received" if window is by_arrival else "stamped"
                return self._refuse(
                    "rate_limited",
                    f"{source} gave {len(window)} feedback events {how} in the last hour; "
                    f"the quota is {quota}",
                )
        variants = (
            [event.chosen, event.rejected]
            if isinstance(event, PreferenceEvent)
            else [event.variant]
        )
        cap = self.limits.votes_per_source_per_variant
        owner = agent or getattr(event, "agent", "")
        tallies = [self.votes.touch(f"{source}|{owner}|{variant}", deque) for variant in variants]
        clock = arrived if arrived is not None else at
        for variant, tally in zip(variants, tallies):
            while tally and tally[0] <= clock - HOUR:
                tally.popleft()
            if len(tally) >= cap:
                return self._refuse(
                    "capped",
                    f"{source} gave variant {variant!r} of {owner!r} {len(tally)} votes in "
                    f"the last hour; a source counts for at most {cap}",
                )
        by_event.append(at)
        if arrived is not None:
            by_arrival.append(arrived)
        for tally in tallies:
            tally.append(clock)
        return None

    def _refuse(self, kind: QuarantineKind, reason: str) -> tuple[QuarantineKind, str]:
        self.quarantined[kind] = self.quarantined.get(kind, 0) + 1
        return kind, reason

    def _invalid(self, event: AgentFeedbackEvent) -> str | None:
        bounds = {"rating": self.limits.rating_range, "score": self.limits.score_range}.get(
            event.kind
        )
        if (
            bounds is not None
            and isinstance(event.value, float)
            and not bounds[0] <= event.value <= bounds[1]
        ):
            return f"{event.kind} {event.value} is outside [{bounds[0]}, {bounds[1]}]"
        return None

    def take_changes(self) -> dict[str, list[Any] | None]:
        """The quota windows and vote tallies changed since the last call, as changelog entries (see
        :meth:`AgentGuard.take_changes`)."""
        changes: dict[str, list[Any] | None] = {}
        for key, value in self.windows.take_changes():
            changes["window:" + key] = (
                [list(value[0]), list(value[1])] if value is not None else None
            )
        for key, value in self.votes.take_changes():
            changes["votes:" + key] = list(value) if value is not None else None
        return changes

    def load(self, key: str, values: list[Any]) -> bool:
        """Take back one changelog entry of :meth:`take_changes` (False: not one of this
        guard's)."""
        kind, _, name = key.partition(":")
        if kind == "window":
            self.windows.touch(name, lambda: (deque(values[0]), deque(values[1])))
        elif kind == "votes":
            self.votes.touch(name, lambda: deque(values))
        else:
            return False
        return True

    def clear_changes(self) -> None:
        self.windows.changed, self.votes.changed = {}, {}


# Each pattern is bounded (local parts of 64, labels of 63, numbers of 20 characters: their
# standards' limits), so scrubbing is linear in the text's length: unbounded ones backtrack, and a
# 10,000-character comment of digits and spaces took 0.6 s of CPU.
_EMAIL = re.compile(r"(?<![\w.+-])[\w.+-]{1,64}@[\w-]{1,63}(?:\.[\w-]{1,63}){1,8}")
_CARD = re.compile(r"(?<![\w-])(?:\d[ -]?){12,18}\d(?![\w-])")
_PHONE = re.compile(r"(?<![\w+])\+?\d(?:[ ().-]{0,2}\d){7,19}(?![\w])")


def _luhn(digits: str) -> bool:
    total = 0
    for k, d in enumerate(reversed(digits)):
        n = int(d) * (2 if k % 2 else 1)
        total += n - 9 if n > 9 else n
    return total % 10 == 0


def scrub_pii(text: str) -> str:
    """Replace emails, card numbers (Luhn-valid) and phone numbers with placeholders.

    >>> scrub_pii("mail jane.doe@example.com or +1 (555) 010-9999, card 4111 1111 1111 1111")
    'mail [email] or [phone], card [card]'
    """
    text = _EMAIL.sub("[email]", text)
    text = _CARD.sub(lambda m: "[card]" if _luhn(re.sub(r"\D", "", m.group())) else m.group(), text)
    return _PHONE.sub("[phone]", text)
