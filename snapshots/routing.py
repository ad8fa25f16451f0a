"""Off-policy evaluation of agent routing from a snapshot: the logged routes (each with its
propensity) and the thumbs that followed in each session, and what other policies would have earned
on them (:mod:`adaptloop.learners.offpolicy`).

A session's reward is its share of thumbs-up; sessions without thumbs carry no evidence and are left
out. Routes are logged with the tenant only, so policies are evaluated over one context (a policy
that would route by other context keys is evaluated as if it routed every session the same way).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import duckdb

from adaptloop.learners.offpolicy import (
    ESTIMATORS,
    Estimate,
    Logged,
    estimate,
    fixed,
    greedy,
    logged_policy_value,
    uniform,
)
from adaptloop.schemas.errors import ConfigError

LOGGED = """
WITH routes AS (
    SELECT session_id, variant, TRY_CAST(value AS DOUBLE) AS propensity FROM agent_feedback
    WHERE kind = 'route' AND agent = $agent
    QUALIFY row_number() OVER (PARTITION BY session_id ORDER BY timestamp, _offset) = 1
), rewards AS (
    SELECT session_id, avg(CASE WHEN value IN ('1.0', '1', 'true') THEN 1.0 ELSE 0.0 END) AS reward
    FROM agent_feedback WHERE kind = 'thumbs' AND agent = $agent GROUP BY session_id
)
SELECT variant, propensity, reward FROM routes JOIN rewards USING (session_id) ORDER BY session_id
"""


@dataclass(frozen=True)
class PolicyValue:
    policy: str
    estimate: Estimate


def evaluate_routing(snapshot: Path, agent: str) -> list[PolicyValue]:
    """The logged policy's value and, by each estimator, the uniform, greedy (on the store's current
    posteriors) and each fixed-variant policy's, from ``snapshot``'s routes and thumbs of
    ``agent``."""
    with duckdb.connect(str(snapshot), read_only=True) as db:
        rows = db.execute(LOGGED, {"agent": agent}).fetchall()
        means = db.execute(
            "SELECT variant, thumbs_posterior_mean FROM preference_variants WHERE agent = "
            "$agent AND segment = '*'",
            {"agent": agent},
        ).fetchall()
    logs = [
        Logged("*", variant, propensity, reward)
        for variant, propensity, reward in rows
        if propensity
    ]
    if not logs:
        raise ConfigError(f"no routed session of agent {agent!r} with thumbs in this snapshot")
    variants = sorted({log.variant for log in logs} | {variant for variant, _ in means})
    policies = {
        "uniform": uniform(variants),
        "greedy (current posteriors)": greedy({"*": dict(means)}, variants),
    }
    policies.update({f"always {variant}": fixed(variant) for variant in variants})
    results = [PolicyValue("logged (on-policy)", logged_policy_value(logs))]
    for name, policy in policies.items():
        results += [
            PolicyValue(name, estimate(logs, policy, estimator)) for estimator in ESTIMATORS
        ]
    return results


ROUTING_COLUMNS = ("policy", "estimator", "value", "95% interval", "effective n")


def routing_rows(results: list[PolicyValue]) -> list[tuple[str, ...]]:
    """The estimates as text rows under :data:`ROUTING_COLUMNS`."""
    return [
        (
            r.policy,
            r.estimate.estimator,
            f"{r.estimate.value:.3f}",
            f"[{r.estimate.low:.3f}, {r.estimate.high:.3f}]",
            f"{r.estimate.effective_n:,.0f}",
        )
        for r in results
    ]
