"""Canary versions: the split of decisions by id, the gate on the two groups' outcomes, and the
records."""

from __future__ import annotations

import hashlib
import math
import pickle
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import ValidationError

from adaptloop.learners.canary_gate import CanaryGate
from adaptloop.learners.canary_split import in_canary, split_point, threshold
from adaptloop.learners.online import OnlineLearner
from adaptloop.learners.spec import CanarySpec, DriftSpec, LearnerSpec
from adaptloop.learners.store import ModelStore
from adaptloop.schemas.inference import TrainingExample

IDS = [f"d{n}" for n in range(100_000)]
A, B, C = "a" * 16, "b" * 16, "c" * 16


# -- the split
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("share", "expected"), [(0.01, 1023), (0.1, 9919), (0.25, 24918), (0.5, 50031), (0.9, 90047)]
)
def test_the_split_gives_each_share_of_many_ids_exactly_and_within_sampling_error(share, expected):
    count = sum(in_canary(decision_id, share) for decision_id in IDS)
    assert count == expected
    assert abs(count - share * len(IDS)) < 4 * math.sqrt(len(IDS) * share * (1 - share))


def test_the_split_is_the_documented_function_of_the_id_alone():
    # The first 8 bytes of SHA-256 of the UTF-8 id, big-endian, against floor(share * 2**64): the
    # same computation written another way (hex digits), as a service in another language would
    # write it.
    for decision_id in ["d-1", "", "décision-✓", *IDS[:1000]]:
        reference = int(hashlib.sha256(decision_id.encode("utf-8")).hexdigest()[:16], 16)
        assert split_point(decision_id) == reference
        assert in_canary(decision_id, 0.3) == (reference < int(0.3 * 2**64))
    assert split_point("décision-✓") == 17005877075960795711
    assert [n for n in range(12) if in_canary(f"d{n}", 0.5)] == [0, 5, 6, 8]
    assert threshold(0.5) == 2**63 and threshold(0.25) == 2**62


def test_one_decision_never_flips_and_a_larger_share_only_adds_decisions():
    first = [in_canary(decision_id, 0.2) for decision_id in IDS[:20_000]]
    assert [in_canary(decision_id, 0.2) for decision_id in IDS[:20_000]] == first
    smaller = {decision_id for decision_id in IDS if in_canary(decision_id, 0.1)}
    larger = {decision_id for decision_id in IDS if in_canary(decision_id, 0.2)}
    assert smaller < larger and len(larger - smaller) == 19_980 - 9_919


# -- the gate
# ----------------------------------------------------------------------------------------------


def running_gate(**spec: float) -> CanaryGate:
    gate = CanaryGate(CanarySpec(**{"share": 0.1, "min_outcomes": 10, **spec}))
    assert gate.publish(A, servable=True) is None  # the stable version
    record = gate.publish(B, servable=True)
    assert record is not None and (record.stable, record.canary, record.state) == (A, B, "running")
    return gate


def feed(gate: CanaryGate, outcomes: list[tuple[str, float]]) -> list[tuple[int, str]]:
    """Feed (served version, error) outcomes; the (index, verdict) of each verdict."""
    return [
        (i, verdict)
        for i, (served, error) in enumerate(outcomes)
        if (verdict := gate.observe(served, error))
    ]


def test_a_worse_canary_is_rolled_back_once_the_evidence_against_it_crosses_the_bound():
    gate = running_gate(confidence=0.99)
    # Nine stable outcomes (right) then one canary outcome (wrong), over and over: the stable
    # outcomes count from the canary's first on (the first nine do not), and each canary outcome
    # pairs with a stable one and loses. Evidence after n losses: (2^(n+1) - 1) / (n + 1), past 2 /
    # (1 - 0.99) = 200 at n = 11.
    outcomes = ([(A, 0.0)] * 9 + [(B, 1.0)]) * 20
    assert feed(gate, outcomes) == [(109, "rolled_back")]
    assert (gate.canary_group.outcomes, gate.stable_group.outcomes) == (11, 90)
    assert (gate.test.compared, gate.test.wins, gate.test.losses) == (11, 0, 11)
    # decided: nothing more counts
    assert gate.observe(B, 1.0) is None and gate.canary_group.outcomes == 11
    record = gate.publish(A, servable=True)  # the learner returned to the stable version
    assert record is not None and record.state == "rolled_back"
    assert (record.stable, record.canary, record.canary_outcomes, record.stable_outcomes) == (
        A,
        B,
        11,
        90,
    )
    assert (record.canary_error, record.stable_error, record.compared, record.losses) == (
        1.0,
        0.0,
        11,
        11,
    )
    assert record.evidence_worse == pytest.approx(
        (2**12 - 1) / 12
    ) and record.bound == pytest.approx(200)
    # A new round: the stable version stays, the next version is the new line's canary.
    assert gate.stable == A and gate.canary_group.outcomes == 0 and gate.test.compared == 0
    # no canary yet: A serves all
    assert gate.observe(A, 0.0) is None and gate.stable_group.outcomes == 0
    assert gate.publish(C, servable=True).state == "running" and gate.group_of(B) is None  # type: ignore[union-attr]


def test_a_better_canary_is_promoted_and_the_promoted_version_is_the_new_stable_one():
    gate = running_gate(confidence=0.99)
    outcomes = ([(A, 1.0)] * 9 + [(B, 0.0)]) * 20
    assert feed(gate, outcomes) == [(109, "promoted")]
    assert "canary promoted" in gate.describe("promoted") and "over 11 decisions" in gate.describe(
        "promoted"
    )
    record = gate.publish(C, servable=True)
    assert record is not None and (
        record.state,
        record.canary,
        record.wins,
        record.stable_outcomes,
    ) == (
        "promoted",
        B,
        11,
        90,
    )
    # C serves every decision until the next canary
    assert gate.stable == C and gate.group_of(C) is None
    assert gate.publish("d" * 16, servable=True).stable == C  # type: ignore[union-attr]
    assert gate.group_of(C) == "stable" and gate.group_of(B) is None


def test_the_minimum_count_holds_a_clear_verdict_back_until_each_group_has_it():
    gate = running_gate(min_outcomes=50, confidence=0.9)
    # Evidence passes 2 / (1 - 0.9) = 20 after 7 losses, but the canary group reaches 50 outcomes
    # only at the 500th outcome.
    outcomes = ([(A, 0.0)] * 9 + [(B, 1.0)]) * 60
    assert feed(gate, outcomes) == [(499, "rolled_back")]
    assert gate.canary_group.outcomes == 50 and gate.stable_group.outcomes == 441


def test_a_difference_that_is_not_significant_waits():
    gate = running_gate(confidence=0.99, min_outcomes=10)
    # The canary errs on 3 of 10 of its outcomes, the stable version on 2 of 10 of the ones they are
    # paired with: 0.3 vs 0.2 over 2,000 pairs is evidence; over 100 it is not.
    block = [(B, 1.0), (A, 0.0)] * 3 + [(B, 0.0), (A, 1.0)] * 2 + [(B, 0.0), (A, 0.0)] * 5
    assert feed(gate, block * 5) == []
    assert (gate.test.compared, gate.test.wins, gate.test.losses) == (50, 10, 15)
    assert gate.verdict is None and gate.test.evidence() < 1 and gate.against().evidence() < 200


def test_an_even_canary_is_never_decided_on():
    gate = running_gate()
    assert feed(gate, [(B, 1.0), (A, 0.0), (B, 0.0), (A, 1.0)] * 5_000) == []
    assert gate.test.compared == 10_000 and gate.test.wins == gate.test.losses == 5_000


def test_outcomes_of_versions_outside_the_round_are_not_counted():
    gate = running_gate()
    assert gate.observe("f" * 16, 1.0) is None  # an older version's late decision
    assert gate.canary_group.outcomes == gate.stable_group.outcomes == 0
    assert gate.publish(C, servable=True).canary == C  # type: ignore[union-attr]
    gate.observe(C, 1.0)
    gate.observe(B, 1.0)  # the whole line is the canary group
    assert gate.canary_group.outcomes == 2 and gate.pending == ("canary", 1.0)


def test_the_first_version_that_may_serve_is_the_stable_one_and_an_operator_replaces_it():
    gate = CanaryGate(CanarySpec(share=0.2))
    assert gate.publish(A, servable=False) is None and gate.stable is None  # not served: no canary
    assert gate.publish(B, servable=True) is None and gate.stable == B
    assert gate.publish(C, servable=True).stable == B  # type: ignore[union-attr]
    gate.replace()  # an operator's rollback to A: it serves every decision
    assert gate.publish(A, servable=True) is None and gate.stable == A and gate.group_of(C) is None
    restored = pickle.loads(pickle.dumps(gate))  # checkpointed with the learner
    assert restored.stable == A and restored.spec == gate.spec


def test_the_spec_takes_one_canary_with_its_bounds():
    spec = LearnerSpec(name="m", canary={"share": 0.05})  # type: ignore[arg-type]
    assert spec.canary == CanarySpec(share=0.05, confidence=0.99, min_outcomes=200)
    for share in (0.0, 1.0):
        with pytest.raises(ValidationError, match=r"canary\.share"):
            LearnerSpec(name="m", canary={"share": share})  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="canary and the drift policy 'rollback'"):
        LearnerSpec(name="m", canary=CanarySpec(share=0.1), drift=DriftSpec(policy="rollback"))
    assert LearnerSpec(
        name="m", canary=CanarySpec(share=0.1), drift=DriftSpec(policy="challenger")
    ).canary


# -- with the learner and its store
# ------------------------------------------------------------------------


def example(n: int, served_by: str, right: bool) -> TrainingExample:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    return TrainingExample(
        model="m",
        decision_id=f"d{n}",
        model_version=served_by,
        features={"x": 1.0},
        prediction=right,  # the label is always True
        label=True,
        predicted_at=now,
        outcome_at=now,
    )


def test_the_learner_records_its_canary_and_the_gate_rolls_a_worse_line_back(tmp_path: Path):
    spec = LearnerSpec(
        name="m",
        min_examples=0,
        metrics=["Accuracy"],
        drift=DriftSpec(concept=False, data=False),
        canary=CanarySpec(share=0.1, min_outcomes=10, confidence=0.99),
    )
    store, learner = ModelStore(tmp_path), OnlineLearner(spec)
    stable = store.checkpoint(learner)
    assert stable.canary is None  # the first version serves every decision
    n = 0
    for n in range(5):
        learner.learn(example(n, "none", True), ("training-examples:0", n))
    canary = store.checkpoint(learner)
    assert canary.canary is not None and (canary.canary.stable, canary.canary.canary) == (
        stable.version,
        canary.version,
    )
    # nine right decisions of the stable version, then a wrong one of the canary
    for i in range(200):
        n += 1
        served_by, right = (canary.version, False) if i % 10 == 9 else (stable.version, True)
        learner.learn(example(n, served_by, right), ("training-examples:0", n))
        if learner.watch.actions:
            break
    assert n == 4 + 110  # the 11th canary outcome
    [action] = learner.watch.actions
    assert (action.kind, action.to_version, action.actor) == (
        "rollback",
        stable.version,
        "policy:canary",
    )
    assert f"its newest version {canary.version} stays in the store" in action.note
    learner.model = store.load_model("m", stable.version)  # what the learner agent does with it
    rollback = store.checkpoint(learner, reason="rollback", actor=action.actor, note=action.note)
    assert rollback.version == stable.version and rollback.parent == canary.version
    assert rollback.canary is not None and rollback.canary.state == "rolled_back"
    assert (rollback.canary.canary_outcomes, rollback.canary.stable_outcomes) == (11, 90)
    assert canary.version in store.versions("m")  # the withdrawn line's learning is kept
