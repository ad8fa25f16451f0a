"""The policy suite's ``canary+challenger`` runs: served as ModelClient serves a canary, versions as
the agent makes them, switches counted."""

from __future__ import annotations

from collections import Counter
from functools import cache

from adaptloop.learners.canary_split import in_canary
from adaptloop.learners.drift_eval import (
    CANARY_CHALLENGER,
    SUITE_CANARY,
    CanaryServing,
    SuiteStream,
    canary_serving,
    policy_run,
)
from adaptloop.schemas.system import ModelVersion

STREAM = SuiteStream("STAGGER 0>2", position=2000, width=1, seed=1, after=2000)


@cache  # one run per recipe for the whole module (they are deterministic)
def _serving(recipe: str) -> CanaryServing:
    return canary_serving(STREAM.examples(), recipe)


def _in_force(records: list[tuple[int, ModelVersion]], decision: int) -> ModelVersion:
    """The record serving follows at ``decision``: the newest servable one published before it (else
    the newest: the untrained first version, as the other policies' runs serve)."""
    before = [record for at, record in records if at <= decision]
    servable = [record for record in before if record.servable]
    return servable[-1] if servable else before[-1]


def test_every_decision_is_served_by_the_version_the_split_names():
    serving = _serving("logistic")
    assert len(serving.served) == len(serving.hits) == 4000
    running = 0
    for decision, (decision_id, version) in enumerate(serving.served):
        assert decision_id == str(decision)
        record = _in_force(serving.records, decision)
        canary = record.canary
        if canary is not None and canary.state == "running":
            running += 1
            expected = record.version if in_canary(decision_id, canary.share) else canary.stable
        else:
            expected = record.version
        assert version == expected, decision
    assert running > 2000  # a canary ran for most of the stream: the split was exercised


def test_the_canary_serves_its_share_and_the_gate_counts_what_each_group_served():
    serving = _serving("logistic")
    records = serving.records
    # Each round of the gate: from a stable version's first canary to its verdict (or the stream's
    # end).
    for (at, record), (next_at, following) in zip(
        records, [*records[1:], (len(serving.served), None)]
    ):
        canary = record.canary
        if canary is None or canary.state != "running":
            continue
        ids = [decision_id for decision_id, _ in serving.served[at:next_at]]
        versions = Counter(version for _, version in serving.served[at:next_at])
        in_share = sum(in_canary(decision_id, SUITE_CANARY.share) for decision_id in ids)
        assert versions == Counter({record.version: in_share, canary.stable: len(ids) - in_share})
        if (
            following is not None
            and following.canary is not None
            and following.canary.stable == canary.stable
        ):
            # The gate counted every outcome of the round so far: this example's learned before the
            # record.
            line_served = sum(
                1
                for _, version in serving.served[:next_at]
                if version != canary.stable and version in _line(records, canary.stable)
            )
            assert following.canary.canary_outcomes == line_served


def _line(records: list[tuple[int, ModelVersion]], stable: str) -> set[str]:
    """The versions of the canary line judged against ``stable``."""
    return {
        record.version
        for _, record in records
        if record.canary is not None
        and record.canary.stable == stable
        and record.canary.state == "running"
    }


def test_switches_are_the_challengers_promotions_and_the_gates_verdicts():
    for recipe in ("logistic", "hoeffding"):
        serving = _serving(recipe)
        switches = [
            record for _, record in serving.records if record.reason in ("promotion", "rollback")
        ]
        by = Counter(record.actor for record in switches)
        gate = [record for record in switches if record.actor == "policy:canary"]
        assert serving.switches == len(switches) == by["policy:challenger"] + by["policy:canary"]
        assert by["policy:challenger"] == 1 and len(gate) == 1  # this stream: one promotion of each
        assert all(
            record.canary is not None and record.canary.state == "promoted" for record in gate
        )
        run = policy_run(STREAM, recipe, CANARY_CHALLENGER)
        assert run.switches == serving.switches
        assert run.accuracy_after == sum(serving.hits[STREAM.position :]) / STREAM.after
