"""Caps that cannot be squatted: declared names never go, undeclared ones beyond a cap take the slot
of the weakest holder (least evidence, then idlest), deterministically, and a restored shard decides
as one that never stopped."""

from __future__ import annotations

import random

from adaptloop.learners.preferences import Cardinality, PreferenceStore

DECLARED = {"support": ["prompt-a", "prompt-b"]}


def _names() -> Cardinality:
    return Cardinality(agents=1000, variants=100, segments=10, declared=DECLARED)


def test_10000_junk_agents_and_100_junk_variants_lock_nobody_out():
    names, reclaimed, at = _names(), [], 0
    assert names.admit("*", "billing-old", ["v1"], at) == []  # a legitimate agent with a history
    for at in range(1, 6):
        names.admit("*", "billing-old", ["v1"], at)
    for k in range(10_000):
        at += 1
        reclaimed += names.admit("*", f"junk-{k}", ["v"], at)
    # 1,000 undeclared slots: the first 999 junk names fill them, each later one takes the idlest
    # junk name's.
    assert len(reclaimed) == 9_001 and {r.variant for r in reclaimed} == {None}
    assert [r.agent for r in reclaimed] == [f"junk-{k}" for k in range(9_001)]
    assert all((r.held.evidence, r.cap) == (1, 1000) for r in reclaimed)
    assert reclaimed[0].by == "junk-999" and reclaimed[-1].by == "junk-9999"
    assert "billing-old" in names.known and names.known["billing-old"].holding.evidence == 6
    for k in range(100):
        at += 1
        # support is declared: no slot taken
        assert names.admit("*", "support", [f"junk-variant-{k}"], at) == []
    at += 1
    assert names.refuses("*", "billing", ["v1"]) is None
    new_agent = names.admit("*", "billing", ["v1"], at)
    assert [(r.agent, r.by) for r in new_agent] == [("junk-9001", "billing")]
    # a declared variant: never a cap's
    assert names.admit("*", "support", ["prompt-a"], at + 1) == []
    # undeclared: takes the idlest junk one's
    new_variant = names.admit("*", "support", ["prompt-c"], at + 2)
    assert [(r.agent, r.variant, r.by) for r in new_variant] == [
        ("support", "junk-variant-0", "prompt-c")
    ]
    assert len(names.known) == 1000 + 1 and names.undeclared == 1000
    assert (
        len(names.known["support"].variants) == 99 + 2 and names.known["support"].undeclared == 100
    )


def test_a_preference_never_takes_the_slot_of_its_own_other_variant():
    names = Cardinality(agents=10, variants=2, segments=10)
    names.admit("*", "ranker", ["a", "b"], 0)
    # a is as weak as b, but it is in the preference
    reclaimed = names.admit("*", "ranker", ["a", "c"], 1)
    assert [(r.variant, r.by) for r in reclaimed] == [("b", "c")]
    assert sorted(names.known["ranker"].variants) == ["a", "c"]


def test_segments_beyond_their_cap_are_still_refused():
    names = Cardinality(agents=10, variants=10, segments=1)
    names.admit("tenant=a", "support", ["v"], 0)
    assert names.refuses("tenant=b", "support", ["v"]) == (
        "agent 'support' has 1 segments and takes 1 at most: 'tenant=b' is one too many"
    )


def _stream(seed: int) -> list[tuple[str, list[str]]]:
    rng = random.Random(seed)
    agents = [f"a{k}" for k in range(40)] + ["support"]
    return [
        (rng.choice(agents), rng.sample([f"v{k}" for k in range(12)] + ["prompt-a"], 2))
        for _ in range(3000)
    ]


def test_a_restored_shard_reclaims_as_one_that_never_stopped():
    stream = _stream(7)

    def run(names: Cardinality, store: PreferenceStore, start: int, stop: int) -> list[tuple]:
        out = []
        for at in range(start, stop):
            agent, (chosen, rejected) = stream[at]
            for r in names.admit("*", agent, [chosen, rejected], at):
                store.forget(r.agent, r.variant)
                out.append((r.agent, r.variant, r.by, r.held.last, r.held.evidence))
            store.add_preference("*", agent, chosen, rejected)
        return out

    def small() -> Cardinality:
        return Cardinality(agents=20, variants=4, segments=10, declared=DECLARED)

    whole, whole_store = small(), PreferenceStore()
    uninterrupted = run(whole, whole_store, 0, len(stream))
    # deterministic
    assert uninterrupted and run(small(), PreferenceStore(), 0, len(stream)) == uninterrupted

    first, store = small(), PreferenceStore()
    before = run(first, store, 0, 1500)
    changes = first.take_changes()  # as the agents role writes them to its state topic
    restored, restored_store = small(), PreferenceStore()
    for agent in store.agents:
        restored_store.merge(agent, store.stats(agent))  # as published
    restored.admit_store(restored_store)
    for key, values in changes.items():
        if values is not None:
            restored.load(key, values)
    after = run(restored, restored_store, 1500, len(stream))
    assert before + after == uninterrupted
    assert {a: whole_store.stats(a) for a in whole_store.agents} == {
        a: restored_store.stats(a) for a in restored_store.agents
    }
    # What was reclaimed is gone from the store: its agents and variants hold no statistics.
    gone = {agent for agent, variant, *_ in uninterrupted if variant is None} - set(whole.known)
    assert gone and not gone & set(whole_store.agents)


def test_forgetting_a_variant_drops_its_comparisons_both_ways():
    store = PreferenceStore()
    store.add_preference("*", "r", "a", "b")
    store.add_preference("*", "r", "b", "c")
    store.add_preference("*", "r", "c", "a")
    store.add_thumbs("*", "r", "b", True)
    store.forget("r", "b")
    stats = store.stats("r")["*"]
    assert sorted(stats) == ["a", "c"] and stats["a"].wins == {} and stats["c"].wins == {"a": 1.0}
    assert store.variants("r") == {"a", "c"}
    store.forget("r")
    assert store.agents == [] and store.stats("r") == {}
