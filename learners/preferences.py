"""Preference stores: what users think of an agent's variants (prompts, models, tool policies), per
segment.

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

import heapq
import math
import random
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

from adaptloop.schemas.agents import PreferenceSnapshot, VariantStats

# a virtual variant of rating 0, played by each variant through the prior
REFERENCE = "__reference__"


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
    wins: dict[str, dict[str, float]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(float))
    )
    theta: dict[str, float] = field(default_factory=dict)
    _fitted: bool = field(default=False, repr=False, compare=False)

    def add(self, chosen: str, rejected: str, weight: float = 1.0) -> None:
        """Count a comparison: O(1). The ratings are fitted when asked for (:meth:`ratings`)."""
        self.wins[chosen][rejected] += weight
        for variant in (chosen, rejected):
            self.theta.setdefault(variant, 0.0)
        self._fitted = False

    def include(self, variant: str) -> None:
        """Rate ``variant`` (at the prior's 0) without a comparison."""
        if variant not in self.theta:
            self.theta[variant] = 0.0
            self._fitted = False

    def forget(self, variant: str) -> None:
        """Drop ``variant`` and every comparison it took part in."""
        self.wins.pop(variant, None)
        for row in self.wins.values():
            row.pop(variant, None)
        self.theta.pop(variant, None)
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
        """Newton steps, warm-started from the previous fit, until the ratings move less than
        ``tol``; return them."""
        for _ in range(max_steps):
            if not self.theta or self._newton()[0] < tol:
                break
        self._fitted = True
        return dict(sorted(self.theta.items()))

    def ratings(self) -> dict[str, float]:
        """The log-strengths (the reference has 0): the maximum-likelihood fit of the counts so
        far."""
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


@dataclass(slots=True)
class Holding:
    """What a name holds its slot by: when it last had traffic (the offset of its last admitted
    feedback in the shard's input partition) and its evidence (the feedback admitted for it)."""

    last: int = -1
    evidence: int = 0


@dataclass(frozen=True, slots=True)
class Reclaimed:
    """A slot taken from an undeclared agent (``variant`` None: the whole agent) or from one of its
    variants, for the name ``by``."""

    agent: str
    variant: str | None
    held: Holding
    by: str
    cap: int


_Entry = tuple[int, int, str]  # (evidence, last, name): the weakest holder sorts first


class _Weakest:
    """The weakest of a set of holders in O(log n): a heap of their (evidence, last, name), where an
    entry whose holder has moved on since (more evidence) or gone is stale and skipped. A holding
    only grows, so its newest entry is its only valid one; the heap is rebuilt when stale entries
    outnumber the holders."""

    __slots__ = ("heap",)

    def __init__(self) -> None:
        self.heap: list[_Entry] = []

    def push(self, name: str, holding: Holding) -> None:
        heapq.heappush(self.heap, (holding.evidence, holding.last, name))

    def pop(
        self, holders: Callable[[str], Holding | None], spare: Collection[str] = ()
    ) -> tuple[str, Holding]:
        """Take the weakest holder not in ``spare`` off the heap (a caller drops it)."""
        spared: list[_Entry] = []
        while True:
            entry = heapq.heappop(self.heap)
            holding = holders(entry[2])
            if holding is None or (holding.evidence, holding.last) != entry[:2]:
                continue
            if entry[2] in spare:
                spared.append(entry)
                continue
            for kept in spared:
                heapq.heappush(self.heap, kept)
            return entry[2], holding

    def compact(self, count: int, holders: Callable[[], Iterable[tuple[str, Holding]]]) -> None:
        """Rebuild the heap from the ``count`` ``holders()`` if it holds over four times their
        number."""
        if len(self.heap) > 4 * count + 64:
            self.heap = [(holding.evidence, holding.last, name) for name, holding in holders()]
            heapq.heapify(self.heap)


@dataclass(slots=True)
class _Agent:
    holding: Holding = field(default_factory=Holding)
    segments: set[str] = field(default_factory=set)
    variants: dict[str, Holding] = field(default_factory=dict)
    undeclared: int = 0  # its variants that are not declared
    weakest: _Weakest = field(default_factory=_Weakest)  # of its undeclared variants


class Cardinality:
    """The names one preference shard takes: at most ``agents`` undeclared agents, and per agent at
    most ``variants`` undeclared variants and ``segments`` segments, so a flood of invented names
    can grow neither the stores nor the cost of publishing them.

    Agents and variants named in ``declared`` (the settings' ``guardrails.agents``) never count
    toward a cap and are never reclaimed. An undeclared newcomer beyond a cap is not refused: it
    takes the slot of the holder with the least evidence, the idlest of those (then the first name),
    so names invented by the thousand (one piece of feedback each) reclaim each other's slots and
    never those of agents with a history. The choice depends only on the shard's records in their
    order: a replay gives the same store. A segment beyond its cap is refused (a segment is a
    context of a known agent, not a name anyone invents alone).

    >>> names = Cardinality(agents=1, variants=2, segments=10, declared={"support": ["a"]})
    >>> names.admit("*", "junk-1", ["x"], at=0)
    []
    >>> [(r.agent, r.variant, r.by) for r in names.admit("*", "junk-2", ["x"], at=1)]
    [('junk-1', None, 'junk-2')]
    >>> names.admit("*", "support", ["a", "b"], at=2) + names.admit("*", "support", ["c"], at=3)  # declared
    []
    >>> [(r.agent, r.variant, r.by) for r in names.admit("*", "support", ["d"], at=4)]
    [('support', 'b', 'd')]
    >>> sorted(names.known["support"].variants)
    ['a', 'c', 'd']
    """

    def __init__(
        self,
        agents: int,
        variants: int,
        segments: int,
        declared: Mapping[str, Iterable[str]] | None = None,
    ) -> None:
        self.agents, self.variants, self.segments = agents, variants, segments
        self.declared = {agent: frozenset(held) for agent, held in (declared or {}).items()}
        self.known: dict[str, _Agent] = {}
        self.undeclared = 0  # undeclared agents held
        self.weakest = _Weakest()  # of the undeclared agents
        # (agent,) or (agent, variant) whose holding changed
        self.changed: dict[tuple[str, ...], None] = {}

    def refuses(self, segment: str, agent: str, variants: list[str]) -> str | None:
        """Why feedback for ``variants`` of ``agent`` in ``segment`` is refused, if it is: only a
        segment beyond its cap is (agents and variants take a slot from the least held; see the
        class)."""
        held = self.known.get(agent)
        segments = held.segments if held is not None else ()
        if segment not in segments and len(segments) >= self.segments:
            return (
                f"agent {agent!r} has {len(segments)} segments and takes {self.segments} at "
                f"most: {segment!r} "
                "is one too many"
            )
        return None

    def admit(self, segment: str, agent: str, variants: list[str], at: int) -> list[Reclaimed]:
        """Take feedback for ``variants`` of ``agent`` in ``segment``, admitted at offset ``at``;
        return the slots reclaimed for it (their names are forgotten: the caller drops their
        statistics and reports them)."""
        reclaimed: list[Reclaimed] = []
        held = self.known.get(agent)
        if held is None:
            if agent not in self.declared:
                while self.undeclared >= self.agents:
                    reclaimed.append(self._reclaim_agent(agent))
                self.undeclared += 1
            held = self.known[agent] = _Agent()
        held.segments.add(segment)
        self._count(held.holding, at, (agent,), None if agent in self.declared else self.weakest)
        declared = self.declared.get(agent, frozenset())
        for variant in dict.fromkeys(variants):
            slot = held.variants.get(variant)
            if slot is None:
                if variant not in declared:
                    while held.undeclared >= self.variants:
                        reclaimed.append(self._reclaim_variant(agent, held, variants, variant))
                    held.undeclared += 1
                slot = held.variants[variant] = Holding()
            self._count(slot, at, (agent, variant), None if variant in declared else held.weakest)
        return reclaimed

    def _count(
        self, holding: Holding, at: int, key: tuple[str, ...], weakest: _Weakest | None
    ) -> None:
        holding.last = at
        holding.evidence += 1
        self.changed[key] = None
        if weakest is not None:
            weakest.push(key[-1], holding)

    def _agent_holding(self, name: str) -> Holding | None:
        held = self.known.get(name)
        return held.holding if held is not None else None

    def _reclaim_agent(self, newcomer: str) -> Reclaimed:
        name, holding = self.weakest.pop(self._agent_holding)
        held = self.known.pop(name)
        self.undeclared -= 1
        self.changed[(name,)] = None
        for variant in held.variants:
            self.changed[(name, variant)] = None
        self.weakest.compact(
            self.undeclared,
            lambda: (
                (agent, known.holding)
                for agent, known in self.known.items()
                if agent not in self.declared
            ),
        )
        return Reclaimed(name, None, holding, newcomer, self.agents)

    def _reclaim_variant(
        self, agent: str, held: _Agent, keep: list[str], newcomer: str
    ) -> Reclaimed:
        name, holding = held.weakest.pop(held.variants.get, spare=keep)
        del held.variants[name]
        held.undeclared -= 1
        self.changed[(agent, name)] = None
        declared = self.declared.get(agent, frozenset())
        held.weakest.compact(
            held.undeclared,
            lambda: ((v, slot) for v, slot in held.variants.items() if v not in declared),
        )
        return Reclaimed(agent, name, holding, newcomer, self.variants)

    def admit_store(self, store: PreferenceStore) -> None:
        """Take the names a (restored) store holds (their holdings: :meth:`load`)."""
        for (segment, agent), held in store.segments.items():
            names = self.known.get(agent)
            if names is None:
                names = self.known[agent] = _Agent()
                if agent not in self.declared:
                    self.undeclared += 1
                    self.weakest.push(agent, names.holding)
            names.segments.add(segment)
            declared = self.declared.get(agent, frozenset())
            for variant in [*held.thumbs, *held.ratings, *held.pairs.theta]:
                if variant not in names.variants:
                    slot = names.variants[variant] = Holding()
                    if variant not in declared:
                        names.undeclared += 1
                        names.weakest.push(variant, slot)

    def take_changes(self) -> dict[tuple[str, ...], list[int] | None]:
        """The holdings changed since the last call (``[last, evidence]``, None: reclaimed), for a
        changelog."""
        changes: dict[tuple[str, ...], list[int] | None] = {}
        for key in self.changed:
            held = self.known.get(key[0])
            holding = (
                None
                if held is None
                else (held.holding if len(key) == 1 else held.variants.get(key[1]))
            )
            changes[key] = [holding.last, holding.evidence] if holding is not None else None
        self.changed = {}
        return changes

    def load(self, key: tuple[str, ...], values: list[int]) -> None:
        """Take back one holding of :meth:`take_changes` (of a name the restored store holds)."""
        held = self.known.get(key[0])
        holding = (
            None if held is None else (held.holding if len(key) == 1 else held.variants.get(key[1]))
        )
        if holding is not None and held is not None:
            holding.last, holding.evidence = values
            if len(key) == 1 and key[0] not in self.declared:
                self.weakest.push(key[0], holding)
            elif len(key) == 2 and key[1] not in self.declared.get(key[0], ()):
                held.weakest.push(key[1], holding)


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
    """Per (segment, agent): thumbs posteriors, rating means and Bradley-Terry ratings over
    variants.

    Each agent's segments and variants are indexed as they arrive, so :meth:`stats` costs what one
    agent holds, not what the whole store holds.
    """

    def __init__(self, prior_alpha: float = 1.0, prior_beta: float = 1.0) -> None:
        self.prior = (prior_alpha, prior_beta)
        self.segments: dict[tuple[str, str], Segment] = {}
        # agent -> (its segments, its variants)
        self._agents: dict[str, tuple[dict[str, Segment], set[str]]] = {}

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

    def forget(self, agent: str, variant: str | None = None) -> None:
        """Drop the statistics of ``agent`` (``variant``: of that variant only) in every segment."""
        segments, variants = self._agents.get(agent, ({}, set()))
        if variant is None:
            for segment in segments:
                del self.segments[(segment, agent)]
            self._agents.pop(agent, None)
            return
        variants.discard(variant)
        for store in segments.values():
            store.thumbs.pop(variant, None)
            store.ratings.pop(variant, None)
            store.pairs.forget(variant)

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
        """The agent's sufficient statistics per segment and variant (what a shard snapshot
        carries)."""
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
                    store.ratings.setdefault(v, GaussianMean()).merge(
                        st.ratings, st.rating_mean, st.rating_m2
                    )
                for loser, won in st.wins.items():
                    store.pairs.add(v, loser, won)
                # compared only with a variant forgotten since
                if not (st.ups or st.downs or st.ratings or st.wins):
                    store.pairs.include(v)
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
        """Thompson sampling by probability matching: each variant's chance of having the best
        thumbs-up rate is estimated from ``draws`` samples of the posteriors, and the variant is
        drawn with those chances; return it with its chance.

        ``exploration`` gives every variant at least ``exploration / len(variants)`` of the traffic
        (the chances are mixed with the uniform ones), so that off-policy estimates of any policy
        rest on some decisions.

        The returned probability is the one the choice was made with, exactly: the propensity an
        off-policy estimate divides by. (Drawing the choice from one sample and estimating its
        chance from others logs a wrong propensity for rare choices, and biases every estimate that
        uses it.)
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
        samples = np.stack(
            [generator.beta(*self.beta(segment, agent, v), size=draws) for v in variants]
        )
        winners = samples.argmax(axis=0)
        return {v: float(np.mean(winners == k)) for k, v in enumerate(variants)}


class Publications:
    """The newest complete publication of each shard of a preference store, from its snapshot
    records.

    A shard too large for one record is published in parts that share their offsets. The parts of a
    publication arrive one by one (they lie on different partitions of the topic), so a reader keeps
    the previous complete publication until every part of the next one has arrived.

    >>> from adaptloop.schemas import PreferenceSnapshot
    >>> parts = [PreferenceSnapshot(agent="a", shard=f"a@agent-feedback:0/{i}", offsets={"agent-feedback:0": 9},
    ...                             segments={}, updates=1, part=i, parts=2) for i in range(2)]
    >>> publications = Publications()
    >>> publications.add(parts[0]), publications.add(parts[1]), len(publications.of("a"))
    (False, True, 2)
    """

    def __init__(self) -> None:
        # (agent, input shard) -> its parts
        self.complete: dict[tuple[str, str], list[PreferenceSnapshot]] = {}
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
        return [
            part
            for (owner, _), parts in sorted(self.complete.items())
            if owner == agent
            for part in parts
        ]


def segment_of(context: dict[str, str], keys: list[str]) -> str:
    """The segment a context falls in: ``task=refund|tenant=acme`` for ``keys = ["task",
    "tenant"]``.

    >>> segment_of({"task": "refund", "tenant": "acme", "lang": "en"}, ["task", "tenant"])
    'task=refund|tenant=acme'
    >>> segment_of({}, ["task"])
    'task=*'
    """
    return "|".join(f"{key}={context.get(key, '*')}" for key in keys) or "*"
