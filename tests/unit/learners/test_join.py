from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, datetime, timedelta

from adaptloop.learners.join import DelayedJoin, JoinState
from adaptloop.learners.spec import LearnerSpec
from adaptloop.schemas import OutcomeEvent, PredictionEvent, TrainingExample, decode, encode
from adaptloop.schemas.topics import TRAINING_EXAMPLES
from adaptloop.schemas.trusted import as_event, decode_training

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _prediction(i: int, at: float, model: str = "m") -> PredictionEvent:
    return PredictionEvent(
        decision_id=f"d{i}",
        model=model,
        model_version="v",
        features={"x": float(i)},
        prediction=i % 2 == 0,
        timestamp=T0 + timedelta(seconds=at),
    )


def _outcome(i: int, at: float, label: bool = True) -> OutcomeEvent:
    return OutcomeEvent(
        decision_id=f"d{i}", label=label, source="s", timestamp=T0 + timedelta(seconds=at)
    )


def _traffic(n: int, seed: int, horizon: float, missing: float = 0.1, duplicates: float = 0.05):
    """Time-ordered predictions and outcomes with random delays, some duplicated, some never
    answered."""
    rng = random.Random(seed)
    timeline = []
    for i in range(n):
        timeline.append((float(i), 0, _prediction(i, i)))
        if rng.random() < duplicates:
            timeline.append((i + 0.5, 0, _prediction(i, i + 0.5)))
        if rng.random() >= missing:
            # some after the horizon: late
            at = i + min(rng.expovariate(1 / (horizon * 0.6)), horizon * 2)
            timeline.append((at, 1, _outcome(i, at, label=rng.random() < 0.5)))
            if rng.random() < duplicates:
                timeline.append((at + 1, 1, _outcome(i, at + 1)))
    timeline.sort(key=lambda item: (item[0], item[1]))
    return [event for _, _, event in timeline]


def _run(join: DelayedJoin, events, end: float):
    examples, orphans = [], []
    for event in events:
        out = (
            join.on_prediction(event, 0)
            if isinstance(event, PredictionEvent)
            else join.on_outcome(event, 0)
        )
        examples += out.examples
        orphans += out.rejections
    out = join.tick(0, end)
    return examples + out.examples, orphans + out.rejections


def test_counts_add_up_exactly_with_delays_duplicates_and_missing_outcomes():
    horizon = 30.0
    join = DelayedJoin({}, {"m": LearnerSpec(name="m", horizon_seconds=horizon)})
    events = _traffic(5000, seed=7, horizon=horizon)
    examples, orphans = _run(join, events, end=(T0 + timedelta(days=1)).timestamp())
    statuses = Counter(example.status for example in examples)
    predictions = len({e.decision_id for e in events if isinstance(e, PredictionEvent)})
    assert predictions == 5000
    # Every prediction ends exactly once; a late outcome turns an expired one into a late one.
    assert statuses["joined"] + statuses["expired"] == predictions
    assert join.counts["joined"] + join.counts["expired"] + join.counts["late"] == predictions
    assert join.counts["joined"] == statuses["joined"] and join.counts["late"] == statuses["late"]
    # ~10% never answered
    assert statuses["late"] > 0 and statuses["expired"] - statuses["late"] > 400
    learned_ids = [e.decision_id for e in examples if e.status == "joined"]
    assert len(learned_ids) == len(set(learned_ids))  # no decision joined twice
    assert join.counts["duplicate_predictions"] > 0 and join.counts["duplicate_outcomes"] > 0
    assert not orphans
    assert not join.state  # everything finished and was garbage-collected


def test_every_example_survives_validation_and_the_round_trip_through_bytes():
    # What the learner reads back from Kafka is exactly what the join made, for every kind of
    # ending.
    for spec in (
        LearnerSpec(name="m", horizon_seconds=30.0),
        LearnerSpec(name="m", horizon_seconds=30.0, on_missing="default", default_label=False),
    ):
        join = DelayedJoin({}, {"m": spec})
        examples, _ = _run(
            join, _traffic(500, seed=3, horizon=30.0), end=(T0 + timedelta(days=1)).timestamp()
        )
        assert {e.status for e in examples} == {
            "joined",
            "late",
            "expired" if spec.on_missing == "drop" else "defaulted",
        }
        for example in examples:
            validated = TrainingExample.model_validate(example.model_dump())
            assert validated == example and list(validated.__dict__) == list(example.__dict__)
            assert decode(TRAINING_EXAMPLES, encode(example)) == example
            # the learner's fast reader
            assert as_event(decode_training(encode(example))) == example


def test_outcome_first_then_prediction_joins_with_features_as_served():
    join = DelayedJoin({}, {"m": LearnerSpec(name="m", horizon_seconds=60)})
    assert join.on_outcome(_outcome(1, 3, label=False), 0).examples == []
    [example] = join.on_prediction(_prediction(1, 1), 0).examples
    assert (example.status, example.features, example.label, example.model_version) == (
        "joined",
        {"x": 1.0},
        False,
        "v",
    )


def test_a_waiting_outcome_joins_the_same_kept_parsed_or_read_back_from_the_state():
    """The join keeps an outcome that came first parsed, beside its JSON in the state: a restarted
    join (nothing kept) joins it the same, the latest of duplicates wins in both, and an entry
    changed under it is read anew."""
    spec = {"m": LearnerSpec(name="m", horizon_seconds=60)}
    live = DelayedJoin({}, spec, outcome_duplicates="last")
    live.on_outcome(_outcome(1, 2, label=False), 0)
    live.on_outcome(_outcome(1, 3, label=True), 0)
    restarted = DelayedJoin(dict(live.state), spec, outcome_duplicates="last")
    [kept] = live.on_prediction(_prediction(1, 1), 0).examples
    [read_back] = restarted.on_prediction(_prediction(1, 1), 0).examples
    assert kept == read_back
    assert (kept.label, kept.outcome_at) == (True, T0 + timedelta(seconds=3))

    state = JoinState()
    join = DelayedJoin(state, spec)
    join.on_outcome(_outcome(2, 2, label=False), 0)
    # e.g. restored from the changelog
    state["d2"] = {**state["d2"], "o": encode(_outcome(2, 4, label=True))}
    [example] = join.on_prediction(_prediction(2, 1), 0).examples
    assert (example.label, example.outcome_at) == (True, T0 + timedelta(seconds=4))


def test_an_outcome_past_the_horizon_is_late_even_before_the_watermark_moves():
    join = DelayedJoin({}, {"m": LearnerSpec(name="m", horizon_seconds=10)})
    join.on_prediction(_prediction(1, 0), 0)
    out = join.on_outcome(_outcome(1, 11), 0)
    assert [e.status for e in out.examples] == ["expired", "late"]
    assert join.counts["late"] == 1 and join.counts["expired"] == 0


def test_default_policy_learns_the_configured_label_when_the_outcome_never_comes():
    spec = LearnerSpec(name="m", horizon_seconds=10, on_missing="default", default_label=False)
    join = DelayedJoin({}, {"m": spec})
    join.on_prediction(_prediction(1, 0), 0)
    [example] = join.tick(0, (T0 + timedelta(seconds=10)).timestamp()).examples
    assert (example.status, example.label) == ("defaulted", False)


def test_duplicate_policy_last_keeps_the_latest_prediction():
    join = DelayedJoin({}, {"m": LearnerSpec(name="m", duplicates="last")})
    join.on_prediction(_prediction(1, 0), 0)
    second = PredictionEvent(
        decision_id="d1", model="m", model_version="v2", features={"x": 9.0}, timestamp=T0
    )
    join.on_prediction(second, 0)
    [example] = join.on_outcome(_outcome(1, 1), 0).examples
    assert (example.model_version, example.features) == ("v2", {"x": 9.0})


def test_an_outcome_without_prediction_becomes_an_orphan_with_a_reason():
    join = DelayedJoin({}, {"m": LearnerSpec(name="m", horizon_seconds=5)})
    join.on_outcome(_outcome(1, 0), 0, offset=41)
    out = join.tick(0, (T0 + timedelta(hours=2)).timestamp())
    [orphan] = out.rejections
    assert (
        orphan.event.decision_id == "d1"
        and "no prediction" in orphan.reason
        and orphan.offset == 41
    )
    assert join.counts["orphan_outcomes"] == 1


def test_state_restored_from_a_changelog_expires_the_same_way():
    spec = {"m": LearnerSpec(name="m", horizon_seconds=10)}
    first = DelayedJoin({}, spec)
    first.on_prediction(_prediction(1, 0), 0)
    restored = DelayedJoin(dict(first.state), spec)  # a new process with the recovered table
    [example] = restored.tick(0, (T0 + timedelta(seconds=11)).timestamp()).examples
    assert example.status == "expired"


def _final_statuses(events, horizon: float) -> tuple[dict[str, list[str]], Counter]:
    join = DelayedJoin({}, {"m": LearnerSpec(name="m", horizon_seconds=horizon)})
    examples, orphans = _run(join, events, end=(T0 + timedelta(days=1)).timestamp())
    assert not orphans
    by_decision: dict[str, list[str]] = {}
    for example in examples:
        by_decision.setdefault(example.decision_id, []).append(example.status)
    return by_decision, join.counts


def test_any_interleaving_of_the_two_topics_gives_the_same_result():
    """Kafka orders each topic, not the two together: a consumer may read either far ahead."""
    horizon = 20.0
    events = _traffic(1500, seed=11, horizon=horizon)
    predictions = [e for e in events if isinstance(e, PredictionEvent)]
    outcomes = [e for e in events if isinstance(e, OutcomeEvent)]
    expected, counts = _final_statuses(events, horizon)
    rng = random.Random(5)
    shuffles = [predictions + outcomes, outcomes + predictions]
    for _ in range(3):  # random merges that keep each topic's order
        merged, i, j = [], 0, 0
        while i < len(predictions) or j < len(outcomes):
            if j == len(outcomes) or (i < len(predictions) and rng.random() < 0.5):
                merged.append(predictions[i])
                i += 1
            else:
                merged.append(outcomes[j])
                j += 1
        shuffles.append(merged)
    for merged in shuffles:
        got, got_counts = _final_statuses(merged, horizon)
        assert got == expected
        assert {k: got_counts[k] for k in ("joined", "expired", "late")} == {
            k: counts[k] for k in ("joined", "expired", "late")
        }


def test_what_breaks_a_models_contract_is_rejected_where_it_entered():
    """A string label for a binary model, a category for a model of numbers: each is one rejection,
    named, and every good decision still joins."""
    join = DelayedJoin(
        {},
        {
            "m": LearnerSpec(name="m", recipe="hoeffding", horizon_seconds=60),
            "numbers": LearnerSpec(name="numbers", recipe="logistic", horizon_seconds=60),
        },
    )
    out = join.on_prediction(_prediction(1, 0), 0)
    bad = OutcomeEvent(
        decision_id="d1", label="true", source="other-language", timestamp=T0 + timedelta(seconds=1)
    )
    out.extend(join.on_outcome(bad, 0, offset=7))
    assert [(r.event.decision_id, r.reason) for r in out.rejections] == [
        ("d1", "label 'true' is a string; model 'm' (binary) takes true or false")
    ]
    # Recorded for the learner's health and the audits, never learned:
    assert [(e.decision_id, e.status, e.label, e.reason) for e in out.examples] == [
        (
            "d1",
            "rejected",
            "true",
            "label 'true' is a string; model 'm' (binary) takes true or false",
        )
    ]
    # The prediction waits on: a good outcome still joins it.
    good = join.on_outcome(_outcome(1, 2, label=False), 0)
    assert [(e.decision_id, e.status, e.label) for e in good.examples] == [("d1", "joined", False)]
    # An outcome that came first, then broke the contract when its prediction came: refused,
    # prediction pending.
    early = join.on_outcome(
        OutcomeEvent(decision_id="d2", label=3.5, source="s", timestamp=T0), 0, offset=9
    )
    early.extend(join.on_prediction(_prediction(2, 1), 0))
    assert [(r.event.decision_id, r.offset, r.reason) for r in early.rejections] == [
        ("d2", 9, "label 3.5 is a number; model 'm' (binary) takes true or false")
    ]
    assert join.state["d2"]["st"] == "pending" and join.state["d2"]["p"] is not None
    # A prediction whose features a model of numbers refuses: rejected, and its outcome after it.
    category = PredictionEvent(
        decision_id="d3",
        model="numbers",
        model_version="v",
        features={"plan": "pro"},
        timestamp=T0 + timedelta(seconds=2),
    )
    refused = join.on_prediction(category, 0)
    refused.extend(join.on_outcome(_outcome(3, 3), 0, offset=11))
    assert [r.reason for r in refused.rejections] == [
        "feature 'plan' is 'pro', a string; model 'numbers' learns from numbers only",
        (
            "its prediction was rejected: feature 'plan' is 'pro', a string; model 'numbers' "
            "learns from numbers only"
        ),
    ]
    assert join.counts["rejected_predictions"] == 1 and join.counts["rejected_outcomes"] == 3
    assert [(e.decision_id, e.status) for e in early.examples + refused.examples] == [
        ("d2", "rejected"),
        ("d3", "rejected"),
    ]  # the refused outcome of d3 ends nothing new
    # Nothing rejected is ever learned; the pending prediction of d2 expires at its horizon.
    final = join.tick(0, (T0 + timedelta(days=1)).timestamp())
    assert [(e.decision_id, e.status) for e in final.examples] == [("d2", "expired")]


def test_an_unlearnable_label_is_refused_in_either_order_even_after_the_horizon():
    """The same records read in either order end the same: an outcome whose label the model cannot
    learn is a dead letter whenever it comes (before its prediction, within the horizon or after it,
    after the prediction expired), never a ``late`` record holding a label the model cannot take; a
    later good outcome is still late."""
    spec = {"m": LearnerSpec(name="m", horizon_seconds=10)}
    at = T0 + timedelta(seconds=11)
    bad = OutcomeEvent(decision_id="d1", label="yes", source="s", timestamp=at)
    reason = "label 'yes' is a string; model 'm' (binary) takes true or false"
    end = (T0 + timedelta(days=1)).timestamp()
    prediction_first = DelayedJoin({}, spec)
    out = prediction_first.on_prediction(_prediction(1, 0), 0)
    out.extend(prediction_first.on_outcome(bad, 0, offset=5))
    out.extend(prediction_first.tick(0, end))
    outcome_first = DelayedJoin({}, spec)
    out_first = outcome_first.on_outcome(bad, 0, offset=5)
    out_first.extend(outcome_first.on_prediction(_prediction(1, 0), 0))
    out_first.extend(outcome_first.tick(0, end))
    assert [(r.reason, r.offset) for r in out.rejections] == [(reason, None)]
    assert [(r.reason, r.offset) for r in out_first.rejections] == [(reason, 5)]
    # (the outcome's time moved the clock first)
    assert [e.status for e in out.examples] == ["expired", "rejected"]
    assert [e.status for e in out_first.examples] == ["rejected", "expired"]

    expired = DelayedJoin({}, spec)
    expired.on_prediction(_prediction(1, 0), 0)
    horizon_passed = expired.tick(0, (T0 + timedelta(seconds=10)).timestamp())
    assert [e.status for e in horizon_passed.examples] == ["expired"]
    refused = expired.on_outcome(bad, 0)
    assert [(e.status, e.reason) for e in refused.examples] == [("rejected", reason)]
    assert [r.reason for r in refused.rejections] == [reason]
    late = expired.on_outcome(_outcome(1, 12), 0)
    assert [(e.status, e.label) for e in late.examples] == [("late", True)]


def test_the_last_of_repeated_waiting_outcomes_is_dead_lettered_where_it_was_read():
    """Under ``outcome_duplicates = "last"`` the outcome kept is the last, and so are the topic and
    offset its dead letter names (an orphan here): not those of the outcome it replaced."""
    spec = {"m": LearnerSpec(name="m", horizon_seconds=5)}
    join = DelayedJoin({}, spec, outcome_duplicates="last")
    join.on_outcome(_outcome(1, 0), 0, offset=3, sent_on=True)
    join.on_outcome(_outcome(1, 1, label=False), 0, offset=8)
    [orphan] = join.tick(0, (T0 + timedelta(hours=2)).timestamp()).rejections
    assert (orphan.event.label, orphan.offset, orphan.sent_on) == (False, 8, False)


def test_an_outcome_at_its_deadline_is_late_in_any_order_and_with_any_lateness():
    """An outcome stamped at the deadline itself moves the outcomes clock to it, which expires the
    prediction read before it: so it is late whichever came first, also when the clock trails."""
    spec = {"m": LearnerSpec(name="m", horizon_seconds=10)}
    at_deadline = _outcome(1, 10)
    for lateness in (0.0, 1.0):
        prediction_first = DelayedJoin({}, spec, lateness=lateness)
        out = prediction_first.on_prediction(_prediction(1, 0), 0)
        out.extend(prediction_first.on_outcome(at_deadline, 0))
        outcome_first = DelayedJoin({}, spec, lateness=lateness)
        out_first = outcome_first.on_outcome(at_deadline, 0)
        out_first.extend(outcome_first.on_prediction(_prediction(1, 0), 0))
        assert [e.status for e in out.examples] == ["expired", "late"], lateness
        assert [e.status for e in out_first.examples] == ["expired", "late"], lateness
    just_before = DelayedJoin({}, spec)
    just_before.on_prediction(_prediction(1, 0), 0)
    [joined] = just_before.on_outcome(_outcome(1, 9.999), 0).examples
    assert joined.status == "joined"
