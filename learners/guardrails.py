"""Guardrails: on agents (runaway loops, cost caps, latency budgets) and on the loop's own feedback.

:class:`AgentGuard` sees each agent event and returns the :class:`GuardrailAlert` s it
breaches, on the very event that breaches (each rule fires once per subject and
window). :class:`FeedbackGuard` decides whether a piece of feedback may reach the
preference store: values in range, and no single source (user, annotator) above
its quota per window, so a flood cannot dominate the store; what it refuses goes
to quarantine with the reason. :func:`scrub_pii` removes obvious PII from free text.

>>> guard = AgentGuard(GuardrailLimits(max_repeated_action=3))
>>> from adaptloop.schemas import AgentFeedbackEvent
>>> steps = [AgentFeedbackEvent(trace_id="t", run_id="r", session_id="s1", agent="a", variant="v", step=i,
...                             kind="step", action="search(q)") for i in range(4)]
>>> [[alert.rule for alert in guard.observe(step)] for step in steps]
[[], [], ['tool_loop'], []]
"""

from __future__ import annotations

import re
from collections import defaultdict, deque
from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict, Field

from adaptloop.schemas.agents import AgentFeedbackEvent, PreferenceEvent
from adaptloop.schemas.system import GuardrailAlert


class GuardrailLimits(BaseModel):
    """Thresholds of the guardrails (settings: ``ADAPTLOOP_GUARDRAILS``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_repeated_action: int = Field(5, ge=2, description="The same action this many times in a row in a session.")
    max_steps: int = Field(50, ge=1, description="Steps in one session.")
    session_cost: float = Field(1.0, gt=0, description="Money per session.")
    session_tokens: int = Field(100_000, ge=1, description="Tokens per session.")
    agent_hourly_cost: float = Field(50.0, gt=0, description="Money per agent per hour.")
    tenant_hourly_cost: float = Field(20.0, gt=0, description="Money per tenant per hour.")
    step_latency_ms: float = Field(30_000.0, gt=0, description="Latency budget of one step.")
    feedback_per_source_per_hour: int = Field(100, ge=1, description="Feedback one user/annotator may give per hour.")
    rating_range: tuple[float, float] = Field((1.0, 5.0), description="Ratings outside it are quarantined.")
    score_range: tuple[float, float] = Field((0.0, 1.0), description="Scores outside it are quarantined.")


@dataclass
class _Session:
    last_action: str | None = None
    repeats: int = 0
    steps: int = 0
    cost: float = 0.0
    tokens: int = 0
    fired: set[str] = field(default_factory=set)


class AgentGuard:
    """Per session, agent and tenant counters over agent events; alerts on the breaching event."""

    def __init__(self, limits: GuardrailLimits) -> None:
        self.limits = limits
        self.sessions: dict[str, _Session] = defaultdict(_Session)
        self.hourly: dict[tuple[str, str, int], float] = defaultdict(float)  # (kind, subject, hour) -> cost
        self.fired: set[tuple[str, str, int]] = set()

    def observe(self, event: AgentFeedbackEvent) -> list[GuardrailAlert]:
        limits, alerts = self.limits, []
        session = self.sessions[event.session_id]

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
            if session.repeats >= limits.max_repeated_action and "tool_loop" not in session.fired:
                session.fired.add("tool_loop")
                fire("tool_loop", session.repeats, limits.max_repeated_action, action=event.action)
            if session.steps > limits.max_steps and "max_steps" not in session.fired:
                session.fired.add("max_steps")
                fire("max_steps", session.steps, limits.max_steps)
            if event.latency_ms > limits.step_latency_ms:
                fire("latency_budget", event.latency_ms, limits.step_latency_ms, action=event.action)
        session.cost += event.cost
        session.tokens += event.tokens
        if session.cost > limits.session_cost and "session_cost" not in session.fired:
            session.fired.add("session_cost")
            fire("session_cost", session.cost, limits.session_cost)
        if session.tokens > limits.session_tokens and "session_tokens" not in session.fired:
            session.fired.add("session_tokens")
            fire("session_tokens", session.tokens, limits.session_tokens)
        hour = int(event.timestamp.timestamp() // 3600)
        for kind, subject, limit in (
            ("agent", event.agent, limits.agent_hourly_cost),
            ("tenant", event.tenant, limits.tenant_hourly_cost),
        ):
            if subject is None or not event.cost:
                continue
            key = (kind, subject, hour)
            self.hourly[key] += event.cost
            if self.hourly[key] > limit and key not in self.fired:
                self.fired.add(key)
                fire(f"{kind}_hourly_cost", self.hourly[key], limit, subject=f"{kind}:{subject}", hour=hour)
        return alerts


class FeedbackGuard:
    """Admits feedback into the store, or says why not (for quarantine)."""

    def __init__(self, limits: GuardrailLimits) -> None:
        self.limits = limits
        self.windows: dict[str, deque[float]] = defaultdict(deque)
        self.quarantined: dict[str, int] = defaultdict(int)  # reason kind -> count

    def check(self, event: AgentFeedbackEvent | PreferenceEvent) -> tuple[str, str] | None:
        """None to admit, else (``invalid`` or ``rate_limited``, the reason) for quarantine.

        Admitted feedback counts toward its source's quota.
        """
        reason = self._invalid(event) if isinstance(event, AgentFeedbackEvent) else None
        kind = "invalid"
        if reason is None:
            source = (
                event.annotator
                if isinstance(event, PreferenceEvent)
                else (event.user_id or f"session:{event.session_id}")
            )
            now = event.timestamp.timestamp()
            window = self.windows[source]
            while window and window[0] <= now - 3600:
                window.popleft()
            if len(window) >= self.limits.feedback_per_source_per_hour:
                kind = "rate_limited"
                reason = (
                    f"{source} gave {len(window)} feedback events in the last hour; "
                    f"the quota is {self.limits.feedback_per_source_per_hour}"
                )
            else:
                window.append(now)
        if reason is None:
            return None
        self.quarantined[kind] += 1
        return kind, reason

    def _invalid(self, event: AgentFeedbackEvent) -> str | None:
        bounds = {"rating": self.limits.rating_range, "score": self.limits.score_range}.get(event.kind)
        if bounds is not None and event.value is not None and not bounds[0] <= event.value <= bounds[1]:
            return f"{event.kind} {event.value} is outside [{bounds[0]}, {bounds[1]}]"
        return None


_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_CARD = re.compile(r"\b(?:\d[ -]?){12,18}\d\b")
_PHONE = re.compile(r"(?<!\w)\+?\d[\d ().-]{7,}\d(?!\w)")


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
