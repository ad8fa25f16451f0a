"""Preference stores and guardrails, without a broker: exact counts, batch equivalence, one alert
per breach."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from adaptloop.learners.guardrails import AgentGuard, FeedbackGuard, GuardrailLimits, scrub_pii
from adaptloop.learners.preferences import BradleyTerry, PreferenceStore
from adaptloop.schemas import AgentFeedbackEvent

T0 = datetime(2026, 1, 1, tzinfo=UTC)
STRENGTHS = {"a": 0.0, "b": 0.8, "c": -0.5, "d": 1.5}


def _pairs(n: int, seed: int = 1) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    pairs = []
    for _ in range(n):
        i, j = rng.sample(sorted(STRENGTHS), 2)
        p = 1 / (1 + math.exp(STRENGTHS[j] - STRENGTHS[i]))
        pairs.append((i, j) if rng.random() < p else (j, i))
    return pairs


def _batch_mle(pairs: list[tuple[str, str]], prior: float) -> dict[str, float]:
    """Newton's method on the same penalised log-likelihood: an independent fit, all pairs at
    once."""
    variants = sorted({v for pair in pairs for v in pair})
    index = {v: k for k, v in enumerate(variants)}
    theta = np.zeros(len(variants))
    for _ in range(100):
        gradient, hessian = np.zeros(len(variants)), np.zeros((len(variants), len(variants)))
        # the prior: prior/2 wins and prior/2 losses against a rating-0 reference
        for k in range(len(variants)):
            p = 1 / (1 + math.exp(-theta[k]))
            gradient[k] += prior / 2 - prior * p
            hessian[k, k] -= prior * p * (1 - p)
        for winner, loser in pairs:
            w, lose = index[winner], index[loser]
            p = 1 / (1 + math.exp(theta[lose] - theta[w]))
            gradient[w] += 1 - p
            gradient[lose] -= 1 - p
            for a, b, sign in ((w, w, -1), (lose, lose, -1), (w, lose, 1), (lose, w, 1)):
                hessian[a, b] += sign * p * (1 - p)
        step = np.linalg.solve(hessian, gradient)
        theta -= step
        if np.max(np.abs(step)) < 1e-13:
            break
    return {v: float(theta[index[v]]) for v in variants}


def test_streamed_bradley_terry_ratings_match_a_batch_maximum_likelihood_fit():
    pairs = _pairs(3000)
    store = PreferenceStore()
    for chosen, rejected in pairs:
        store.add_preference("faq", "support", chosen, rejected)
    streamed = store.segment("faq", "support").pairs
    batch = _batch_mle(pairs, streamed.prior)
    online = streamed.ratings()  # as the stream left them: a few warm-started sweeps per pair
    assert max(abs(online[v] - batch[v]) for v in batch) < 1e-6
    converged = streamed.fit()
    assert max(abs(converged[v] - batch[v]) for v in batch) < 1e-8
    # recovers the true order
    assert sorted(batch, key=batch.get) == sorted(STRENGTHS, key=STRENGTHS.get)
    few = BradleyTerry()
    for chosen, rejected in pairs[:300]:
        few.add(chosen, rejected)
    few.fit()
    errors, few_errors = streamed.standard_errors(), few.standard_errors()
    assert all(0 < errors[v] < few_errors[v] for v in batch)  # more comparisons, less uncertainty


def test_beta_posteriors_are_the_exact_counts():
    rng = random.Random(3)
    store, counts = PreferenceStore(), {"a": [0, 0], "b": [0, 0]}
    for _ in range(5000):
        variant, up = rng.choice("ab"), rng.random() < 0.6
        store.add_thumbs("s", "agent", variant, up)
        counts[variant][0 if up else 1] += 1
    for variant, (ups, downs) in counts.items():
        assert store.beta("s", "agent", variant) == (1.0 + ups, 1.0 + downs)


def test_thompson_sampling_reports_the_probability_of_its_choice():
    store = PreferenceStore()
    for _ in range(50):
        store.add_thumbs("s", "agent", "good", True)
        store.add_thumbs("s", "agent", "bad", False)
    choice, probability = store.choose_variant(
        "s", "agent", ["good", "bad", "new"], random.Random(1)
    )
    shares = store.traffic_shares("s", "agent", ["good", "bad", "new"])
    assert abs(sum(shares.values()) - 1) < 1e-12 and shares["good"] > shares["new"] > shares["bad"]
    assert 0 < probability <= 1 and abs(probability - shares[choice]) < 0.05


def _step(
    i: int, session: str = "s1", action: str | None = "search(q)", **fields
) -> AgentFeedbackEvent:
    values = {
        "trace_id": f"t{i}",
        "run_id": "r",
        "session_id": session,
        "agent": "support",
        "variant": "v1",
        "step": i,
        "kind": "step",
        "action": action,
        "tenant": "acme",
        "timestamp": T0 + timedelta(seconds=i),
        **fields,
    }
    return AgentFeedbackEvent(**values)


LIMITS = GuardrailLimits(
    max_repeated_action=4,
    max_steps=10,
    session_cost=1.0,
    session_tokens=1000,
    agent_hourly_cost=5.0,
    tenant_hourly_cost=3.0,
    step_latency_ms=2000.0,
)


@pytest.mark.parametrize(
    ("rule", "breaching", "calm", "observed"),
    [
        (
            "tool_loop",
            [_step(i) for i in range(4)],
            [_step(i, action=f"a{i % 2}") for i in range(10)],
            4.0,
        ),
        (
            "max_steps",
            [_step(i, action=f"a{i}") for i in range(11)],
            [_step(i, action=f"a{i}") for i in range(10)],
            11.0,
        ),
        (
            "session_cost",
            [_step(i, action=f"a{i}", cost=0.3) for i in range(4)],
            [_step(i, action=f"a{i}", cost=0.25) for i in range(4)],
            1.2,
        ),
        (
            "session_tokens",
            [_step(i, action=f"a{i}", tokens=400) for i in range(3)],
            [_step(i, action=f"a{i}", tokens=500) for i in range(2)],
            1200.0,
        ),
        ("latency_budget", [_step(0, latency_ms=2500.0)], [_step(0, latency_ms=2000.0)], 2500.0),
        (
            "tenant_hourly_cost",
            [_step(i, session=f"s{i}", action=f"a{i}", cost=0.8) for i in range(4)],
            [_step(i, session=f"s{i}", action=f"a{i}", cost=0.75) for i in range(4)],
            3.2,
        ),
        (
            "agent_hourly_cost",
            [_step(i, session=f"s{i}", action=f"a{i}", cost=0.9, tenant=f"t{i}") for i in range(6)],
            [_step(i, session=f"s{i}", action=f"a{i}", cost=0.8, tenant=f"t{i}") for i in range(6)],
            5.4,
        ),
    ],
)
def test_each_guardrail_fires_once_on_the_breaching_event_and_never_without_a_breach(
    rule, breaching, calm, observed
):
    guard = AgentGuard(LIMITS)
    fired = [(k, alert) for k, event in enumerate(breaching) for alert in guard.observe(event)]
    # on the event that breached
    assert [(k, alert.rule) for k, alert in fired] == [(len(breaching) - 1, rule)]
    alert = fired[0][1]
    assert (
        alert.observed == pytest.approx(observed) and alert.evidence["step"] == breaching[-1].step
    )
    calm_guard = AgentGuard(LIMITS)
    assert [alert for event in calm for alert in calm_guard.observe(event)] == []


def test_a_flood_from_one_user_moves_the_store_no_more_than_the_quota():
    limits = GuardrailLimits(feedback_per_source_per_hour=100, votes_per_source_per_variant=1_000)
    guard, store = FeedbackGuard(limits), PreferenceStore()
    quarantine = []
    for i in range(10_000):
        event = AgentFeedbackEvent(
            trace_id=f"t{i}",
            run_id="r",
            session_id=f"s{i}",
            agent="support",
            variant="v1",
            step=0,
            kind="thumbs",
            value=1.0,
            user_id="mallory",
            timestamp=T0 + timedelta(milliseconds=i),
        )
        reason = guard.check(event)
        if reason is None:
            store.add_thumbs("s", "support", event.variant, event.thumb == "up")
        else:
            quarantine.append(reason[0])
    assert store.beta("s", "support", "v1") == (101.0, 1.0)  # the quota, and not one more
    assert len(quarantine) == guard.quarantined["rate_limited"] == 9_900 and set(quarantine) == {
        "rate_limited"
    }
    honest = AgentFeedbackEvent(
        trace_id="x",
        run_id="r",
        session_id="x",
        agent="support",
        variant="v1",
        step=0,
        kind="thumbs",
        value=-1.0,
        user_id="alice",
        timestamp=T0,
    )
    assert guard.check(honest) is None  # other users are not affected


def test_out_of_range_feedback_is_quarantined_with_the_reason():
    guard = FeedbackGuard(GuardrailLimits())
    rating = AgentFeedbackEvent(
        trace_id="t",
        run_id="r",
        session_id="s",
        agent="a",
        variant="v",
        step=0,
        kind="rating",
        value=11.0,
        user_id="u",
    )
    kind, reason = guard.check(rating)
    assert (
        kind == "invalid" and "outside [1.0, 5.0]" in reason and guard.quarantined["invalid"] == 1
    )


def test_pii_is_scrubbed_but_ordinary_numbers_stay():
    text = "I am bob@corp.io, call 020 7946 0958; order 12345 cost 19.99; card 5500-0000-0000-0004"
    assert scrub_pii(text) == "I am [email], call [phone]; order 12345 cost 19.99; card [card]"


def test_one_source_counts_for_at_most_a_few_votes_per_variant_and_forged_times_do_not_bypass_the_quota():
    limits = GuardrailLimits(feedback_per_source_per_hour=50, votes_per_source_per_variant=3)
    guard = FeedbackGuard(limits)

    def thumb(i: int, variant: str, at: datetime) -> AgentFeedbackEvent:
        return AgentFeedbackEvent(
            trace_id=f"t{i}",
            run_id="r",
            session_id=f"s{i}",
            agent="support",
            variant=variant,
            step=0,
            kind="thumbs",
            value=True,
            user_id="mallory",
            timestamp=at,
        )

    # Three votes for prompt-a count; the rest of the hour's votes for it are capped, other variants
    # still count.
    verdicts = [
        guard.check(thumb(i, "prompt-a", T0 + timedelta(seconds=i)), arrived=1000.0 + i)
        for i in range(10)
    ]
    assert [v is None for v in verdicts] == [True] * 3 + [False] * 7
    assert {v[0] for v in verdicts if v} == {"capped"} and "at most 3" in verdicts[3][1]
    assert guard.check(thumb(10, "prompt-b", T0 + timedelta(seconds=10)), arrived=1010.0) is None
    # Timestamps an hour apart (forged) do not reset the quota: it is also counted by arrival.
    forged = [
        guard.check(thumb(100 + i, f"v{i}", T0 + timedelta(hours=i + 1)), arrived=2000.0 + i)
        for i in range(60)
    ]
    admitted = sum(v is None for v in forged)
    # the quota by arrival, less the four votes already admitted in that hour
    assert admitted == 50 - 4
    assert {v[0] for v in forged if v} == {"rate_limited"} and "received in the last hour" in next(
        v for v in forged if v
    )[1]


def test_the_guards_memory_is_bounded_and_their_state_restores():
    limits = GuardrailLimits(max_sessions=100, max_sources=50, session_ttl_seconds=60.0)
    guard, feedback = AgentGuard(limits), FeedbackGuard(limits)
    for i in range(5_000):
        guard.observe(
            _step(
                i,
                session=f"s{i}",
                action="a",
                cost=0.01,
                tenant=f"t{i}",
                timestamp=T0 + timedelta(milliseconds=i),
            )
        )
        feedback.check(
            AgentFeedbackEvent(
                trace_id="t",
                run_id="r",
                session_id=f"s{i}",
                agent="a",
                variant="v",
                step=0,
                kind="thumbs",
                value=True,
                user_id=f"u{i}",
            )
        )
    assert len(guard.sessions) <= 100 and len(guard.hourly) <= 50 and len(feedback.windows) <= 50
    later = _step(0, session="late", action="a", timestamp=T0 + timedelta(hours=2))
    guard.observe(later)  # two hours on: every idle session is forgotten
    assert list(guard.sessions) == ["late"]
    # The changelog of all that happened: the forgotten as tombstones, the rest as entries that load
    # back.
    changes = {**guard.take_changes(), **feedback.take_changes()}
    assert changes["session:late"] is not None and changes["session:s0"] is None
    restored, restored_feedback = AgentGuard(limits), FeedbackGuard(limits)
    for key, value in changes.items():
        if value is not None:
            assert restored.load(key, value) or restored_feedback.load(key, value)
    kept = {key: value for key, value in changes.items() if value is not None}
    assert {**restored.take_changes(), **restored_feedback.take_changes()} == kept
    assert list(restored.sessions) == ["late"] and len(restored_feedback.windows) == len(
        feedback.windows
    )


def test_the_pii_scrubber_takes_time_linear_in_the_text():
    import time

    for hostile in ("1 " * 50_000, "a" * 100_000, "a." * 50_000 + "@", ("9" * 18 + " ") * 5_000):
        # this thread's CPU time: neither other processes on a loaded machine nor the pytest
        # process's other threads (clients left by earlier tests) count
        started = time.thread_time()
        scrub_pii(hostile)
        # quadratic backtracking would take minutes (linear: 0.03 s at most)
        assert time.thread_time() - started < 1.0, hostile[:20]
