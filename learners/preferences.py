"""Preference stores: what users think of an agent's variants (prompts, models, tool policies), per segment.

- pairwise preferences -> Bradley-Terry ratings with standard errors: the win counts
  are kept incrementally (a comparison costs O(1), whatever the number of variants) and
  the ratings are their maximum-likelihood fit, computed when asked for;
- thumbs -> Beta posteriors per variant (exact counts); ratings and scores -> a
  Gaussian posterior of the mean per variant;
- :meth:`PreferenceStore.choose_variant`: Thompson sampling over the thumbs posteriors,
  returning the choice with its probability, so that logged choices support
  off-policy evaluation later.

>>> store = PreferenceStore()
>>> for _ in range(8):
...     store.add_thumbs("faq", "support", "b", True)
>>> store.add_thumbs("faq", "support", "a", False)
>>> store.beta("faq", "support", "b")
(9.0, 1.0)
>>> import random
>>> store.choose_variant("faq", "support", ["a", "b"], random.Random(0))[0]
'b'
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from adaptloop.schemas.agents import PreferenceSnapshot, VariantStats

REFERENCE = "__reference__"  # a virtual variant of rating 0, played by each variant through the prior


@dataclass
class BradleyTerry:
    """Bradley-Terry log-strengths from pairwise wins, with a weak prior that keeps them finite.

    The prior is ``prior`` virtual comparisons of each variant against a reference of
    rating 0, half won and half lost: without it, a variant that never lost would
    have an infinite rating. The win counts are the sufficient statistics; the
    ratings are their penalised maximum-likelihood fit by Newton's method, warm-started
    from the previous fit, computed when asked for (:meth:`fit`, :meth:`ratings`).

    >>> bt = BradleyTerry()
    >>> for _ in range(30):
    ...     bt.add("b", "a")
    >>> for _ in range(10):
    ...     bt.add("a", "b")
    >>> ratings = bt.fit()
    >>> ratings["b"] > ratings["a"], round(ratings["b"] - ratings["a"], 2)
    (True, 1.08)
    """

    prior: float = 1.0
    wins: dict[str, dict[str, float]] = field(default_factory=lambda: defaultdict(lambda: defaultdict(float)))
    theta: dict[str, float] = field(default_factory=dict)
    _fitted: bool = field(default=False, repr=False, compare=False)

    def add(self, chosen: str, rejected: str, weight: float = 1.0) -> None:
        """Count a comparison: O(1). The ratings are fitted when asked for (:meth:`ratings`)."""
        self.wins[chosen][rejected] += weight
        for variant in (chosen, rejected):
            self.theta.setdefault(variant, 0.0)
        self._fitted = False

    @property
    def variants(self) -> list[str]:
        return sorted(self.theta)

    def _newton(self) -> tuple[float, np.ndarray]:
        """One Newton step; return its size and the information matrix at the start of the step."""
        variants = self.variants
        theta = np.array([self.theta[v] for v in variants])
        gradient, info = np.zeros(len(variants)), np.zeros((len(variants), len(variants)))
        for a, i in enumerate(variants):
            p = 1 / (1 + math.exp(-theta[a]))  # against the reference
            gradient[a] += self.prior / 2 - self.prior * p
            info[a, a] += self.prior * p * (1 - p)
            for b, j in enumerate(variants):
                won = self.wins[i].get(j, 0.0)
                if a == b or not won:
                    continue
                p = 1 / (1 + math.exp(theta[b] - theta[a]))
                gradient[a] += won * (1 - p)
                gradient[b] -= won * (1 - p)
                w = won * p * (1 - p)
                info[a, a] += w
                info[b, b] += w
                info[a, b] -= w
                info[b, a] -= w
        step = np.linalg.solve(info, gradient)
        for a, v in enumerate(variants):
            self.theta[v] = float(theta[a] + step[a])
        return float(np.max(np.abs(step))) if len(step) else 0.0, info

    def fit(self, tol: float = 1e-12, max_steps: int = 100) -> dict[str, float]:
        """Newton steps, warm-started from the previous fit, until the ratings move less than ``tol``; return them."""
        for _ in range(max_steps):
            if not self.theta or self._newton()[0] < tol:
                break
        self._fitted = True
        return dict(sorted(self.theta.items()))

    def ratings(self) -> dict[str, float]:
        """The log-strengths (the reference has 0): the maximum-likelihood fit of the counts so far."""
        return self.fit() if not self._fitted else dict(sorted(self.theta.items()))

    def standard_errors(self) -> dict[str, float]:
        """Standard errors of the log-strengths: the inverse Fisher information at the fit."""
        if not self.theta:
            return {}
        saved = dict(self.theta)
        _, info = self._newton()
        self.theta = saved
        covariance = np.linalg.inv(info)
        return {v: float(math.sqrt(covariance[a, a])) for a, v in enumerate(self.variants)}


class Cardinality:
    """The names a worker's preference stores take: at most ``agents`` agents, and per agent at most
    ``variants`` variants and ``segments`` segments, so a flood of invented names can grow neither the stores
    nor the cost of publishing them.

    >>> names = Cardinality(agents=10, variants=2, segments=10)
    >>> names.admit("*", "support", ["a"])
    >>> names.refuses("*", "support", ["b", "c"])
    "agent 'support' has 1 variant(s) and takes 2 at most: 'c' would be one too many"
    """

    def __init__(self, agents: int, variants: int, segments: int) -> None:
        self.agents, self.variants, self.segments = agents, variants, segments
        self.known: dict[str, tuple[set[str], set[str]]] = {}  # agent -> (its segments, its variants)

    def refuses(self, segment: str, agent: str, variants: list[str]) -> str | None:
        """Why feedback for ``variants`` of ``agent`` in ``segment`` would take one name too many, if it would."""
        known = self.known.get(agent)
        if known is None:
            if len(self.known) >= self.agents:
                return (
                    f"the store has {len(self.known)} agents and takes {self.agents} at most: {agent!r} is one too many"
                )
            known = (set(), set())
        segments, seen = known
        if segment not in segments and len(segments) >= self.segments:
            return (
                f"agent {agent!r} has {len(segments)} segments and takes {self.segments} at most: {segment!r} "
                "is one too many"
            )
        new = [v for v in dict.fromkeys(variants) if v not in seen]
        if len(seen) + len(new) > self.variants:
            return (
                f"agent {agent!r} has {len(seen)} variant(s) and takes {self.variants} at most: "
                f"{new[-1]!r} would be one too many"
            )
        return None

    def admit(self, segment: str, agent: str, variants: list[str]) -> None:
        segments, seen = self.known.setdefault(agent, (set(), set()))
        segments.add(segment)
        seen.update(variants)

    def admit_store(self, store: PreferenceStore) -> None:
        """Take the names a (restored) store holds."""
        for (segment, agent), held in store.segments.items():
            self.admit(segment, agent, [*held.thumbs, *held.ratings, *held.pairs.theta])


@dataclass
class GaussianMean:
    """The posterior of a mean under a flat prior: sample mean and standard error (Welford)."""

    n: int = 0
    mean: float = 0.0
    m2: float = 0.0

    def add(self, value: float) -> None:
        self.n += 1
        delta = value - self.mean
        self.mean += delta / self.n
        self.m2 += delta * (value - self.mean)

    def merge(self, n: int, mean: float, m2: float) -> None:
        """Add another sample's summary (Chan et al.'s parallel update)."""
        if not n:
            return
        total = self.n + n
        delta = mean - self.mean
        self.m2 += m2 + delta * delta * self.n * n / total
        self.mean += delta * n / total
        self.n = total

    @property
    def stderr(self) -> float:
        return math.sqrt(self.m2 / (self.n - 1) / self.n) if self.n > 1 else math.inf


@dataclass
class Segment:
    """One agent's store in one context segment."""

    thumbs: dict[str, list[float]] = field(default_factory=dict)  # variant -> [alpha, beta]
    ratings: dict[str, GaussianMean] = field(default_factory=dict)
    pairs: BradleyTerry = field(default_factory=BradleyTerry)
    updates: int = 0


class PreferenceStore:
    """Per (segment, agent): thumbs posteriors, rating means and Bradley-Terry ratings over variants.

    Each agent's segments and variants are indexed as they arrive, so :meth:`stats` costs what one agent
    holds, not what the whole store holds.
    """

    def __init__(self, prior_alpha: float = 1.0, prior_beta: float = 1.0) -> None:
        self.prior = (prior_alpha, prior_beta)
        self.segments: dict[tuple[str, str], Segment] = {}
        self._agents: dict[str, tuple[dict[str, Segment], set[str]]] = {}  # agent -> (its segments, its variants)

    def segment(self, segment: str, agent: str) -> Segment:
        store = self.segments.get((segment, agent))
        if store is None:
            store = self.segments[(segment, agent)] = Segment()
            self._agents.setdefault(agent, ({}, set()))[0][segment] = store
        return store

    @property
    def agents(self) -> list[str]:
        return sorted(self._agents)

    def variants(self, agent: str) -> set[str]:
        """The variants ``agent`` has feedback for, in any segment."""
        return self._agents.get(agent, ({}, set()))[1]

    def add_thumbs(self, segment: str, agent: str, variant: str, up: bool) -> None:
        store = self.segment(segment, agent)
        posterior = store.thumbs.setdefault(variant, list(self.prior))
        posterior[0 if up else 1] += 1.0
        store.updates += 1
        self._agents[agent][1].add(variant)

    def add_rating(self, segment: str, agent: str, variant: str, value: float) -> None:
        store = self.segment(segment, agent)
        store.ratings.setdefault(variant, GaussianMean()).add(value)
        store.updates += 1
        self._agents[agent][1].add(variant)

    def add_preference(self, segment: str, agent: str, chosen: str, rejected: str) -> None:
        store = self.segment(segment, agent)
        store.pairs.add(chosen, rejected)
        store.updates += 1
        self._agents[agent][1].update((chosen, rejected))

    def stats(self, agent: str) -> dict[str, dict[str, VariantStats]]:
        """The agent's sufficient statistics per segment and variant (what a shard snapshot carries)."""
        out: dict[str, dict[str, VariantStats]] = {}
        for segment, store in sorted(self._agents.get(agent, ({}, set()))[0].items()):
            variants = sorted(set(store.thumbs) | set(store.ratings) | set(store.pairs.theta))
            out[segment] = {}
            for v in variants:
                alpha, beta = store.thumbs.get(v, self.prior)
                rating = store.ratings.get(v, GaussianMean())
                out[segment][v] = VariantStats(
                    ups=float(alpha - self.prior[0]),
                    downs=float(beta - self.prior[1]),
                    ratings=rating.n,
                    rating_mean=float(rating.mean),
                    rating_m2=float(rating.m2),
                    wins={w: float(n) for w, n in sorted(store.pairs.wins.get(v, {}).items()) if n},
                )
        return out

    def merge(self, agent: str, segments: dict[str, dict[str, VariantStats]]) -> None:
        """Add a shard's statistics (counts add up, so merging shards is exact)."""
        for segment, variants in segments.items():
            store = self.segment(segment, agent)
            for v, st in variants.items():
                if st.ups or st.downs:
                    posterior = store.thumbs.setdefault(v, list(self.prior))
                    posterior[0] += st.ups
                    posterior[1] += st.downs
                if st.ratings:
                    store.ratings.setdefault(v, GaussianMean()).merge(st.ratings, st.rating_mean, st.rating_m2)
                for loser, won in st.wins.items():
                    store.pairs.add(v, loser, won)
                self._agents[agent][1].add(v)
                store.updates += int(st.ups + st.downs + st.ratings + sum(st.wins.values()))

    def fit(self) -> None:
        """Fit every segment's Bradley-Terry ratings to convergence."""
        for store in self.segments.values():
            store.pairs.fit()

    def beta(self, segment: str, agent: str, variant: str) -> tuple[float, float]:
        alpha, beta = self.segment(segment, agent).thumbs.get(variant, self.prior)
        return float(alpha), float(beta)

    def choose_variant(
        self,
        segment: str,
        agent: str,
        variants: list[str],
        rng: random.Random,
        draws: int = 2000,
        exploration: float = 0.0,
    ) -> tuple[str, float]:
        """Thompson sampling by probability matching: each variant's chance of having the best thumbs-up rate is
        estimated from ``draws`` samples of the posteriors, and the variant is drawn with those chances; return it
        with its chance.

        ``exploration`` gives every variant at least ``exploration / len(variants)`` of the traffic (the chances are
        mixed with the uniform ones), so that off-policy estimates of any policy rest on some decisions.

        The returned probability is the one the choice was made with, exactly: the propensity an off-policy
        estimate divides by. (Drawing the choice from one sample and estimating its chance from others logs a
        wrong propensity for rare choices, and biases every estimate that uses it.)
        """
        posteriors = [self.beta(segment, agent, v) for v in variants]
        generator = np.random.default_rng(rng.getrandbits(64))
        samples = np.stack([generator.beta(a, b, size=draws) for a, b in posteriors])
        chances = np.bincount(samples.argmax(axis=0), minlength=len(variants)) / draws
        chances = (1 - exploration) * chances + exploration / len(variants)
        choice = rng.choices(range(len(variants)), weights=chances.tolist())[0]
        return variants[choice], float(chances[choice])

    def traffic_shares(
        self, segment: str, agent: str, variants: list[str], draws: int = 4000, seed: int = 0
    ) -> dict[str, float]:
        """The share of traffic Thompson sampling gives each variant now."""
        generator = np.random.default_rng(seed)
        samples = np.stack([generator.beta(*self.beta(segment, agent, v), size=draws) for v in variants])
        winners = samples.argmax(axis=0)
        return {v: float(np.mean(winners == k)) for k, v in enumerate(variants)}


class Publications:
    """The newest complete publication of each shard of a preference store, from its snapshot records.

    A shard too large for one record is published in parts that share their offsets. The parts of a
    publication arrive one by one (they lie on different partitions of the topic), so a reader keeps the
    previous complete publication until every part of the next one has arrived.

    >>> from adaptloop.schemas import PreferenceSnapshot
    >>> parts = [PreferenceSnapshot(agent="a", shard=f"a@agent-feedback:0/{i}", offsets={"agent-feedback:0": 9},
    ...                             segments={}, updates=1, part=i, parts=2) for i in range(2)]
    >>> publications = Publications()
    >>> publications.add(parts[0]), publications.add(parts[1]), len(publications.of("a"))
    (False, True, 2)
    """

    def __init__(self) -> None:
        self.complete: dict[tuple[str, str], list[PreferenceSnapshot]] = {}  # (agent, input shard) -> its parts
        self._pending: dict[tuple[str, str], dict[int, dict[int, PreferenceSnapshot]]] = {}

    def add(self, snapshot: PreferenceSnapshot) -> bool:
        """Take one record; True if it completed a publication newer than the one kept."""
        key, position = (snapshot.agent, snapshot.input_shard), snapshot.position
        kept = self.complete.get(key)
        if kept is not None and position <= kept[0].position:
            return False
        pending = self._pending.setdefault(key, {})
        parts = pending.setdefault(position, {})
        parts[snapshot.part] = snapshot
        if any(part not in parts for part in range(snapshot.parts)):
            return False
        self.complete[key] = [parts[part] for part in range(snapshot.parts)]
        for older in [p for p in pending if p <= position]:
            del pending[older]
        return True

    def of(self, agent: str) -> list[PreferenceSnapshot]:
        """Every part of the newest complete publication of each of ``agent``'s shards."""
        return [part for (owner, _), parts in sorted(self.complete.items()) if owner == agent for part in parts]


def segment_of(context: dict[str, str], keys: list[str]) -> str:
    """The segment a context falls in: ``task=refund|tenant=acme`` for ``keys = ["task", "tenant"]``.

    >>> segment_of({"task": "refund", "tenant": "acme", "lang": "en"}, ["task", "tenant"])
    'task=refund|tenant=acme'
    >>> segment_of({}, ["task"])
    'task=*'
    """
    return "|".join(f"{key}={context.get(key, '*')}" for key in keys) or "*"
