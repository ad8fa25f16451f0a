"""Preference stores: what users think of an agent's variants (prompts, models, tool policies), per segment.

- pairwise preferences -> Bradley-Terry ratings with standard errors: the win counts
  are kept incrementally and the ratings are their maximum-likelihood fit (a
  warm-started Newton step per comparison; :meth:`BradleyTerry.fit` converges);
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

from adaptloop.schemas.agents import VariantStats

REFERENCE = "__reference__"  # a virtual variant of rating 0, played by each variant through the prior


@dataclass
class BradleyTerry:
    """Bradley-Terry log-strengths from pairwise wins, with a weak prior that keeps them finite.

    The prior is ``prior`` virtual comparisons of each variant against a reference of
    rating 0, half won and half lost: without it, a variant that never lost would
    have an infinite rating. The win counts are the sufficient statistics; the
    ratings are their penalised maximum-likelihood fit by Newton's method, warm-started
    from the previous fit (one step per new comparison online, to convergence in :meth:`fit`).

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

    def add(self, chosen: str, rejected: str, weight: float = 1.0) -> None:
        self.wins[chosen][rejected] += weight
        for variant in (chosen, rejected):
            self.theta.setdefault(variant, 0.0)

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

    def step(self) -> None:
        """One warm-started Newton step (what each new comparison costs online)."""
        if self.theta:
            self._newton()

    def fit(self, tol: float = 1e-12, max_steps: int = 100) -> dict[str, float]:
        """Newton steps until the ratings move less than ``tol``; return them."""
        for _ in range(max_steps):
            if not self.theta or self._newton()[0] < tol:
                break
        return self.ratings()

    def ratings(self) -> dict[str, float]:
        """The current log-strengths (the reference has 0)."""
        return dict(sorted(self.theta.items()))

    def standard_errors(self) -> dict[str, float]:
        """Standard errors of the log-strengths: the inverse Fisher information at the fit."""
        if not self.theta:
            return {}
        saved = dict(self.theta)
        _, info = self._newton()
        self.theta = saved
        covariance = np.linalg.inv(info)
        return {v: float(math.sqrt(covariance[a, a])) for a, v in enumerate(self.variants)}


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
    """Per (segment, agent): thumbs posteriors, rating means and Bradley-Terry ratings over variants."""

    def __init__(self, prior_alpha: float = 1.0, prior_beta: float = 1.0) -> None:
        self.prior = (prior_alpha, prior_beta)
        self.segments: dict[tuple[str, str], Segment] = {}

    def segment(self, segment: str, agent: str) -> Segment:
        return self.segments.setdefault((segment, agent), Segment())

    def add_thumbs(self, segment: str, agent: str, variant: str, up: bool) -> None:
        store = self.segment(segment, agent)
        posterior = store.thumbs.setdefault(variant, list(self.prior))
        posterior[0 if up else 1] += 1.0
        store.updates += 1

    def add_rating(self, segment: str, agent: str, variant: str, value: float) -> None:
        store = self.segment(segment, agent)
        store.ratings.setdefault(variant, GaussianMean()).add(value)
        store.updates += 1

    def add_preference(self, segment: str, agent: str, chosen: str, rejected: str) -> None:
        store = self.segment(segment, agent)
        store.pairs.add(chosen, rejected)
        store.pairs.step()
        store.updates += 1

    def stats(self, agent: str) -> dict[str, dict[str, VariantStats]]:
        """The agent's sufficient statistics per segment and variant (what a shard snapshot carries)."""
        out: dict[str, dict[str, VariantStats]] = {}
        for (segment, owner), store in sorted(self.segments.items()):
            if owner != agent:
                continue
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
                store.updates += int(st.ups + st.downs + st.ratings + sum(st.wins.values()))

    def fit(self) -> None:
        """Fit every segment's Bradley-Terry ratings to convergence."""
        for store in self.segments.values():
            store.pairs.fit()

    def beta(self, segment: str, agent: str, variant: str) -> tuple[float, float]:
        alpha, beta = self.segment(segment, agent).thumbs.get(variant, self.prior)
        return float(alpha), float(beta)

    def choose_variant(
        self, segment: str, agent: str, variants: list[str], rng: random.Random, draws: int = 2000
    ) -> tuple[str, float]:
        """Thompson sampling: draw each variant's thumbs-up rate, take the best; return it with its probability.

        The probability is estimated from ``draws`` further samples (the share of draws the
        chosen variant wins), for the propensity logged with the choice.
        """
        posteriors = [self.beta(segment, agent, v) for v in variants]
        choice = max(range(len(variants)), key=lambda k: rng.betavariate(*posteriors[k]))
        generator = np.random.default_rng(rng.getrandbits(64))
        samples = np.stack([generator.beta(a, b, size=draws) for a, b in posteriors])
        probability = float(np.mean(samples.argmax(axis=0) == choice))
        return variants[choice], max(probability, 1.0 / draws)

    def traffic_shares(
        self, segment: str, agent: str, variants: list[str], draws: int = 4000, seed: int = 0
    ) -> dict[str, float]:
        """The share of traffic Thompson sampling gives each variant now."""
        generator = np.random.default_rng(seed)
        samples = np.stack([generator.beta(*self.beta(segment, agent, v), size=draws) for v in variants])
        winners = samples.argmax(axis=0)
        return {v: float(np.mean(winners == k)) for k, v in enumerate(variants)}


def segment_of(context: dict[str, str], keys: list[str]) -> str:
    """The segment a context falls in: ``task=refund|tenant=acme`` for ``keys = ["task", "tenant"]``.

    >>> segment_of({"task": "refund", "tenant": "acme", "lang": "en"}, ["task", "tenant"])
    'task=refund|tenant=acme'
    >>> segment_of({}, ["task"])
    'task=*'
    """
    return "|".join(f"{key}={context.get(key, '*')}" for key in keys) or "*"
