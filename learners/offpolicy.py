"""Off-policy evaluation: what a routing policy would have earned, estimated from decisions another
policy made.

Each logged decision is a context (the segment it was routed in), the variant the logging policy
chose, the probability it gave that choice (the propensity, logged with every route) and the reward
that followed (a session's thumbs: up 1, down 0). A target policy gives each variant a probability
in each context. Three estimators of its value, each with a 95% confidence interval (normal, from
the per-decision terms):

- **IPS** (inverse propensity scoring): the mean of ``pi(a|x) / mu(a|x) * r``; unbiased, high
  variance;
- **SNIPS** (self-normalised IPS): the weighted mean ``sum(w r) / sum(w)``; slightly biased, far
  steadier;
- **DR** (doubly robust): a reward model's prediction for the target policy's choices, corrected by
  IPS on the model's errors; unbiased if either the propensities or the model are right. The reward
  model (the mean reward per context and variant) is cross-fitted: each half of the decisions is
  corrected by a model of the other half, so no decision scores itself.

The estimates need the logging policy to give every variant the target policy picks a chance (a
propensity of 0 is no evidence); ``effective_n`` (the effective sample size of the weights) says how
many decisions the estimate is worth.

>>> logs = [Logged("*", "a", 0.5, 1.0), Logged("*", "b", 0.5, 0.0)] * 50
>>> round(estimate(logs, fixed("a"), "ips").value, 3), round(estimate(logs, fixed("b"), "snips").value, 3)
(1.0, 0.0)
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

Policy = Callable[[str], dict[str, float]]
"""A policy: the probability of each variant in a context."""

Z95 = 1.959963984540054
ESTIMATORS = ("ips", "snips", "dr")


@dataclass(frozen=True)
class Logged:
    """One logged decision: its context, the variant chosen, the propensity of that choice, the
    reward."""

    context: str
    variant: str
    propensity: float
    reward: float


@dataclass(frozen=True)
class Estimate:
    estimator: str
    value: float
    low: float  # the 95% confidence interval
    high: float
    n: int
    effective_n: float  # (sum w)^2 / sum w^2: how many decisions the estimate is worth


def uniform(variants: list[str]) -> Policy:
    return lambda _: {v: 1 / len(variants) for v in variants}


def fixed(variant: str) -> Policy:
    return lambda _: {variant: 1.0}


def greedy(means: dict[str, dict[str, float]], variants: list[str]) -> Policy:
    """The variant with the highest posterior mean in the context (its segment; else the pooled
    means)."""

    def policy(context: str) -> dict[str, float]:
        scores = means.get(context) or means.get("*") or {}
        best = max(variants, key=lambda v: (scores.get(v, 0.5), v))
        return {best: 1.0}

    return policy


def logged_policy_value(logs: list[Logged]) -> Estimate:
    """The logging policy's own value: the mean reward, with its interval."""
    return _interval("on-policy", [log.reward for log in logs], len(logs), float(len(logs)))


def estimate(logs: list[Logged], policy: Policy, estimator: str) -> Estimate:
    """The value of ``policy`` from ``logs`` by ``estimator`` (``ips``, ``snips`` or ``dr``)."""
    if not logs:
        raise ValueError("no logged decisions to evaluate a policy on")
    if any(not 0 < log.propensity <= 1 for log in logs):
        raise ValueError("every logged decision needs a propensity in (0, 1]")
    weights = [policy(log.context).get(log.variant, 0.0) / log.propensity for log in logs]
    total = sum(weights)
    effective = total * total / sum(w * w for w in weights) if total else 0.0
    n = len(logs)
    if estimator == "ips":
        return _interval(
            "ips", [w * log.reward for w, log in zip(weights, logs, strict=True)], n, effective
        )
    if estimator == "snips":
        if not total:
            raise ValueError(
                "the target policy never picks what the logging policy picked: no evidence"
            )
        value = sum(w * log.reward for w, log in zip(weights, logs, strict=True)) / total
        mean_w = total / n
        # The delta method: the variance of the ratio of two means.
        variance = (
            sum((w * (log.reward - value)) ** 2 for w, log in zip(weights, logs, strict=True))
            / n
            / mean_w**2
        )
        half = Z95 * math.sqrt(variance / n)
        return Estimate("snips", value, value - half, value + half, n, effective)
    if estimator == "dr":
        terms = []
        # cross-fitted: each half, the other's
        models = (_reward_model(logs[1::2]), _reward_model(logs[0::2]))
        for index, log in enumerate(logs):
            model = models[index % 2]
            target = policy(log.context)
            direct = sum(p * model(log.context, v) for v, p in target.items())
            w = target.get(log.variant, 0.0) / log.propensity
            terms.append(direct + w * (log.reward - model(log.context, log.variant)))
        return _interval("dr", terms, n, effective)
    raise ValueError(f"unknown estimator {estimator!r} (one of {', '.join(ESTIMATORS)})")


def _reward_model(logs: list[Logged]) -> Callable[[str, str], float]:
    """The mean reward per context and variant (then per variant, then overall) of ``logs``."""
    sums: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0.0, 0.0])
    by_variant: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for log in logs:
        for cell in (sums[(log.context, log.variant)], by_variant[log.variant]):
            cell[0] += log.reward
            cell[1] += 1
    overall = sum(log.reward for log in logs) / len(logs) if logs else 0.5

    def model(context: str, variant: str) -> float:
        for cell in (sums.get((context, variant)), by_variant.get(variant)):
            if cell is not None and cell[1]:
                return cell[0] / cell[1]
        return overall

    return model


def _interval(estimator: str, terms: list[float], n: int, effective: float) -> Estimate:
    mean = sum(terms) / n
    variance = sum((t - mean) ** 2 for t in terms) / (n - 1) if n > 1 else 0.0
    half = Z95 * math.sqrt(variance / n)
    return Estimate(estimator, mean, mean - half, mean + half, n, effective)
