"""Off-policy estimates on simulated logs whose true values are known: each estimator's 95% interval
covers the truth at about its stated rate, and the estimates agree with the truth."""

from __future__ import annotations

import random

import pytest

from adaptloop.learners.offpolicy import (
    ESTIMATORS,
    Logged,
    estimate,
    fixed,
    greedy,
    logged_policy_value,
    uniform,
)

VARIANTS = ["a", "b", "c"]
QUALITY = {"eu": {"a": 0.35, "b": 0.55, "c": 0.75}, "us": {"a": 0.60, "b": 0.50, "c": 0.30}}
# a poor logging policy
LOGGING = {"eu": {"a": 0.5, "b": 0.3, "c": 0.2}, "us": {"a": 0.2, "b": 0.3, "c": 0.5}}


def _logs(rng: random.Random, n: int) -> list[Logged]:
    logs = []
    for _ in range(n):
        context = rng.choice(["eu", "us"])
        variant = rng.choices(VARIANTS, weights=[LOGGING[context][v] for v in VARIANTS])[0]
        reward = float(rng.random() < QUALITY[context][variant])
        logs.append(Logged(context, variant, LOGGING[context][variant], reward))
    return logs


def _truth(policy) -> float:
    return sum(0.5 * sum(p * QUALITY[c][v] for v, p in policy(c).items()) for c in QUALITY)


POLICIES = {
    "uniform": uniform(VARIANTS),
    "fixed c": fixed("c"),
    # the best per context: 0.75 and 0.60
    "greedy": greedy({c: QUALITY[c] for c in QUALITY}, VARIANTS),
}


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_each_estimators_interval_covers_the_true_value_at_its_stated_rate(estimator):
    rng = random.Random(11)
    runs = 250
    covered = dict.fromkeys(POLICIES, 0)
    errors = {name: [] for name in POLICIES}
    for _ in range(runs):
        logs = _logs(rng, 1000)
        for name, policy in POLICIES.items():
            result = estimate(logs, policy, estimator)
            covered[name] += result.low <= _truth(policy) <= result.high
            errors[name].append(result.value - _truth(policy))
    for name in POLICIES:
        assert 0.91 <= covered[name] / runs <= 0.99, (name, covered[name] / runs)  # 95% nominal
        assert abs(sum(errors[name]) / runs) < 0.01, name  # no bias to speak of


def test_the_greedy_policy_is_worth_more_than_the_logged_one_and_the_logged_value_is_the_mean_reward():
    logs = _logs(random.Random(3), 5000)
    on_policy = logged_policy_value(logs)
    assert on_policy.value == sum(log.reward for log in logs) / len(logs)
    truth = sum(0.5 * sum(LOGGING[c][v] * QUALITY[c][v] for v in VARIANTS) for c in QUALITY)
    assert on_policy.low <= truth <= on_policy.high
    best = estimate(logs, POLICIES["greedy"], "dr")
    assert best.low > on_policy.high  # clearly better than what was logged
    # a deterministic policy uses only the decisions it agrees with
    assert best.effective_n < len(logs)


def test_no_evidence_is_an_error_not_a_number():
    logs = [Logged("*", "a", 1.0, 1.0)] * 10
    with pytest.raises(ValueError, match="no evidence"):
        estimate(logs, fixed("b"), "snips")
    with pytest.raises(ValueError, match="propensity"):
        estimate([Logged("*", "a", 0.0, 1.0)], fixed("a"), "ips")


def test_the_routers_logged_propensities_are_the_chances_its_choices_were_made_with():
    from adaptloop.learners.preferences import PreferenceStore

    store = PreferenceStore()
    for variant, ups, downs in (("a", 30, 10), ("b", 24, 16), ("c", 9, 11)):
        for k in range(ups + downs):
            store.add_thumbs("*", "support", variant, k < ups)
    rng = random.Random(5)
    logs = [
        Logged("*", *store.choose_variant("*", "support", VARIANTS, rng, draws=500), 1.0)
        for _ in range(4000)
    ]
    # With every reward 1, IPS of "always v" is the mean of 1{chosen v} / propensity: 1 when
    # propensities are exact, for the rare variant too (c is chosen about 3% of the time here).
    for variant in VARIANTS:
        result = estimate(logs, fixed(variant), "ips")
        assert result.low <= 1.0 <= result.high, (variant, result)
    assert 0 < sum(log.variant == "c" for log in logs) < 400


def test_exploration_gives_every_variant_its_share_and_the_logged_chance():
    from adaptloop.learners.preferences import PreferenceStore

    store = PreferenceStore()
    for k in range(200):  # c is far behind: without exploration it is (almost) never chosen
        store.add_thumbs("*", "support", "a", k < 180)
        store.add_thumbs("*", "support", "c", k < 20)
    rng = random.Random(8)
    chosen = [
        store.choose_variant("*", "support", ["a", "c"], rng, draws=500, exploration=0.2)
        for _ in range(3000)
    ]
    # exactly the explored share: the posterior gives c nothing
    assert {p for v, p in chosen if v == "c"} == {0.1}
    assert 0.08 < sum(v == "c" for v, _ in chosen) / len(chosen) < 0.12
    logs = [Logged("*", v, p, 1.0) for v, p in chosen]
    assert estimate(logs, fixed("c"), "ips").low <= 1.0 <= estimate(logs, fixed("c"), "ips").high
