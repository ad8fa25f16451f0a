"""The challenger policy promotes on evidence only, and a replaced champion can win back."""

from __future__ import annotations

import pickle
from typing import Any

from adaptloop.learners.evidence import PairedSignTest
from adaptloop.learners.spec import DriftSpec, LearnerSpec
from adaptloop.learners.watch import Challenger, ModelWatch


class Says:
    """A model that always predicts ``answer`` (set from outside), and counts what it learned."""

    def __init__(self, answer: bool) -> None:
        self.answer = answer
        self.learned = 0

    def predict_proba_one(self, x: dict[str, Any]) -> dict[bool, float]:
        return {self.answer: 1.0}

    def learn_one(self, x: dict[str, Any], y: Any) -> None:
        self.learned += 1


def watch_with_challenger(**drift: Any) -> tuple[ModelWatch, Says]:
    watch = ModelWatch(
        LearnerSpec(name="m", drift=DriftSpec(policy="challenger", data=False, **drift))
    )
    challenger = Says(True)
    watch.challenger = Challenger(challenger)  # type: ignore[arg-type]
    return watch, challenger


def feed(
    watch: ModelWatch, champion: Says, outcomes: list[tuple[bool, bool]]
) -> list[tuple[int, Any]]:
    """Feed (challenger right?, champion right?) pairs; the (index, promoted model) of each
    promotion."""
    promotions = []
    for i, (challenger_right, champion_right) in enumerate(outcomes):
        if watch.challenger is None:  # dropped
            break
        challenger: Says = watch.challenger.model  # type: ignore[assignment]
        challenger.answer = challenger_right  # the target is always True
        champion_error = float(not champion_right)
        promoted = watch.shadow_challenger({"x": 1.0}, True, champion_error, True, champion)  # type: ignore[arg-type]
        if promoted is not None:
            promotions.append((i, promoted))
            champion = promoted
    return promotions


def block(wins: int, losses: int) -> list[tuple[bool, bool]]:
    """40 examples: ``wins`` the challenger alone gets right, ``losses`` the champion alone, the
    rest ties."""
    ties = 40 - wins - losses
    return (
        [(True, True)] * (ties - 5)
        + [(False, False)] * 5
        + [(True, False)] * wins
        + [(False, True)] * losses
    )


def test_a_small_advantage_is_not_evidence_enough():
    # As in the field: 0.246 against 0.274 mean error. The old rule (a 300-example window, a 0.02
    # margin) promoted such a challenger at its 300th example; 672 examples of it are no evidence at
    # 0.99.
    watch, _ = watch_with_challenger()
    outcomes = (block(wins=6, losses=5) * 17)[:672]
    assert feed(watch, Says(True), outcomes) == [] and watch.actions == []
    assert watch.challenger is not None
    test = watch.challenger.test
    assert (test.compared, test.wins, test.losses) == (672, 99, 80)
    ours, theirs = test.mean_errors()
    assert round(ours, 4) == 0.2455 and round(theirs, 4) == 0.2738 and ours + 0.02 < theirs
    assert test.evidence() < 100


def test_an_equal_challenger_is_dropped_after_challenger_examples():
    watch, _ = watch_with_challenger(challenger_examples=2000)
    assert feed(watch, Says(True), block(wins=6, losses=6) * 49) == []
    assert watch.challenger is not None and watch.challenger.test.compared == 1960
    assert feed(watch, Says(True), block(wins=6, losses=6)) == []
    assert watch.challenger is None and watch.actions == []


def test_a_clear_winner_is_promoted_at_the_example_the_evidence_crosses_the_bound():
    # Only wins: M after n of them is (2^(n+1) - 1) / (n + 1); it passes 1 / (1 - 0.999) = 1000 at n
    # = 13.
    watch, challenger = watch_with_challenger(challenger_window=10, challenger_confidence=0.999)
    champion = Says(False)
    promotions = feed(watch, champion, [(True, False)] * 20)
    assert [i for i, _ in promotions] == [12]  # the 13th example
    assert promotions[0][1] is challenger and challenger.learned == 13
    (action,) = watch.actions
    assert action.kind == "promotion"
    summary = (
        "challenger promoted: paired sign test over 13 examples: lower error on 13, higher on 0 "
    )
    assert action.note.startswith(summary)
    assert "evidence 1.17e+03 >= 1e+03 (confidence 0.999)" in action.note
    # The champion it replaced learns on in shadow as the challenger.
    assert watch.challenger is not None and watch.challenger.model is champion
    assert watch.challenger.origin == "replaced" and watch.challenger.test.compared == 7


def test_a_promoted_challenger_that_falls_behind_is_replaced_by_the_old_champion():
    watch, challenger = watch_with_challenger(challenger_window=10, challenger_confidence=0.99)
    champion = Says(False)
    promotions = feed(watch, champion, [(True, False)] * 10)
    assert [model for _, model in promotions] == [challenger]
    watch.actions.clear()
    # Now the world turns back: the old champion (the challenger now) is right, the promoted one
    # wrong.
    back = feed(watch, challenger, [(True, False)] * 10)
    assert [(i, model) for i, model in back] == [(9, champion)]
    (action,) = watch.actions
    assert action.note.startswith(
        "the replaced champion wins back: paired sign test over 10 examples"
    )
    assert watch.challenger is not None and watch.challenger.model is challenger


def test_the_test_is_checkpointed_with_the_watch_and_old_checkpoints_start_it_over():
    watch, _ = watch_with_challenger(challenger_window=50)
    feed(watch, Says(False), [(True, False)] * 30)
    restored = pickle.loads(pickle.dumps(watch))
    assert restored.challenger is not None and restored.challenger.test == watch.challenger.test  # type: ignore[union-attr]
    # A checkpoint made before the sign test kept two rolling windows and a count.
    old = Challenger.__new__(Challenger)
    old.__setstate__({"model": "m", "champion_error": None, "challenger_error": None, "seen": 250})
    assert old.test == PairedSignTest() and old.origin == "drift" and old.model == "m"


def test_on_a_stream_nobody_tuned_for_the_challenger_is_promoted_once_and_serves_better():
    from adaptloop.learners.drift_eval import SuiteStream, policy_run

    stream = SuiteStream("STAGGER 0>2", position=2000, width=1, seed=1, after=2000)
    alert, challenger = (
        policy_run(stream, "hoeffding", "alert"),
        policy_run(stream, "hoeffding", "challenger"),
    )
    assert (alert.switches, challenger.switches) == (0, 1)
    assert alert.accuracy_before == challenger.accuracy_before  # the same model until the drift
    assert challenger.accuracy_after > alert.accuracy_after + 0.1


def test_a_promotion_that_turns_bad_long_after_is_undone_on_what_happens_from_then_on():
    # The promoted model leads for 500 examples, then the world turns. The replaced champion's test
    # starts over whenever the promoted model leads it, so it wins back as soon as the evidence
    # since the turn is enough (10 wins: M = 2047 / 11 = 186 >= 100), not after it has made up a
    # 500-example lead.
    watch, challenger = watch_with_challenger(challenger_window=10, challenger_confidence=0.99)
    champion = Says(False)
    assert [model for _, model in feed(watch, champion, [(True, False)] * 10)] == [challenger]
    watch.actions.clear()
    # the promoted one right, the old one wrong
    assert feed(watch, challenger, [(False, True)] * 500) == []
    assert watch.challenger is not None and watch.challenger.model is champion
    assert watch.challenger.examples == 500 and watch.challenger.test.compared == 0  # started over
    back = feed(watch, challenger, [(True, False)] * 10)
    assert [(i, model) for i, model in back] == [(9, champion)]
    (action,) = watch.actions
    assert action.note.startswith(
        "the replaced champion wins back: paired sign test over 10 examples"
    )


def test_a_replaced_champion_is_dropped_after_challenger_examples_across_restarts_of_its_test():
    watch, challenger = watch_with_challenger(challenger_window=10, challenger_examples=400)
    champion = Says(False)
    feed(watch, champion, [(True, False)] * 10)
    assert watch.challenger is not None and watch.challenger.origin == "replaced"
    feed(watch, challenger, [(False, True)] * 399)
    assert watch.challenger is not None and watch.challenger.examples == 399
    feed(watch, challenger, [(False, True)])
    assert watch.challenger is None  # it shadowed 400 examples: "for a while", not for ever


def test_a_checkpoint_from_before_examples_were_counted_counts_its_tests_examples():
    watch, _ = watch_with_challenger(challenger_window=50)
    feed(watch, Says(False), [(True, False)] * 30)
    state = dict(vars(watch.challenger))
    del state["examples"]
    old = Challenger.__new__(Challenger)
    old.__setstate__(state)
    assert old.examples == 30 == old.test.compared


def test_the_default_policy_is_the_challenger_and_alert_for_models_learned_in_mini_batches():
    import pytest

    assert LearnerSpec(name="m").drift.policy == "challenger"
    batched = {"name": "m", "mini_batch": 10, "checkpoint_every": 100}
    assert LearnerSpec(**batched).drift.policy == "alert"
    assert LearnerSpec(**batched, drift={"window": 100}).drift == DriftSpec(
        window=100, policy="alert"
    )
    assert LearnerSpec(**batched, drift=DriftSpec(window=100)).drift.policy == "alert"
    with pytest.raises(ValueError, match="the challenger policy learns one example at a time"):
        LearnerSpec(**batched, drift=DriftSpec(policy="challenger"))


def test_a_promoted_challengers_versions_count_every_example_the_stream_gave_across_restarts(
    tmp_path,
):
    """Whoever waits for a version that has learned the N examples they sent (ingest, the demo, the
    bench, a service's script) finds it after a promotion too: a version's ``examples_seen`` counts
    the model's stream, not the examples the promoted challenger learned since it started."""
    from datetime import UTC, datetime

    from adaptloop.learners.drift_eval import sine_stream
    from adaptloop.learners.online import OnlineLearner
    from adaptloop.learners.store import ModelStore
    from adaptloop.schemas.inference import TrainingExample

    spec = LearnerSpec(
        name="sine", drift=DriftSpec(policy="challenger", data=False), metrics=["Accuracy"]
    )
    store = ModelStore(tmp_path)
    learner = OnlineLearner(spec)
    published: list[tuple[int, Any]] = []  # (examples sent when it was made, the record)
    restarted_with: list[str] = []  # the origin of the challenger each restart restored
    sent = 0
    for i, (x, y) in enumerate(sine_stream(seed=7, n=7000, drift_at=6000)):
        features = {f"x{k}": value for k, value in x.items()}
        example = TrainingExample(
            model="sine",
            decision_id=str(i),
            model_version="v0",
            features=features,
            prediction=False,
            label=y,
            predicted_at=datetime(2026, 1, 1, tzinfo=UTC),
        )
        assert learner.learn(example, ("training-examples:0", i))
        sent += 1
        for action in learner.watch.actions:  # as the learner agent acts: at once
            published.append((sent, store.checkpoint(learner, reason=action.kind, actor="policy")))
        learner.watch.actions.clear()
        if sent % 100 == 0:
            published.append((sent, store.checkpoint(learner)))
            if learner.watch.challenger is not None:  # a worker restarted while one runs
                learner = store.restore(spec)
                restarted_with.append(learner.watch.challenger.origin)  # type: ignore[union-attr]

    promotions = [record for _, record in published if record.reason == "promotion"]
    assert [(r.examples_seen, r.actor) for r in promotions] == [(6315, "policy")]
    # restarts with the drift challenger shadowing, then with the replaced champion
    assert restarted_with[0] == "drift" and restarted_with[-1] == "replaced"
    assert [record.examples_seen for _, record in published] == [n for n, _ in published]
    assert published[-1][1].examples_seen == sent == 7000
    assert [record.sequence for _, record in published] == list(range(1, len(published) + 1))
