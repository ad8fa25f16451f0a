"""Drift monitors and policies, measured on River's streams: the numbers the README states."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from learners.drift import DataDriftMonitor, build_detector, js_distance, psi
from learners.drift_eval import concept_drift_calibration, data_drift_calibration, recovery
from learners.online import OnlineLearner
from learners.spec import DriftSpec, LearnerSpec
from learners.store import ModelStore
from schemas.inference import TrainingExample

AT = datetime(2026, 1, 1, tzinfo=timezone.utc)


def test_adwin_catches_the_concept_change_within_100_examples_and_rarely_cries_wolf():
    result = concept_drift_calibration("ADWIN", seeds=range(5))
    assert result.detected == result.runs == 5
    assert result.delay_max <= 100
    assert result.false_alarms_per_10k <= 2.0


@pytest.mark.parametrize("detector", ["PageHinkley", "KSWIN", "DDM", "HDDMA"])
def test_other_river_detectors_are_configurable(detector):
    assert concept_drift_calibration(detector, seeds=range(1), n=4000, drift_at=2000).detected == 1


def test_data_drift_has_no_false_alarm_on_a_stationary_stream_and_catches_a_shifted_feature():
    result = data_drift_calibration(seeds=range(3))
    assert result.false_alarms == 0 and result.checks > 0
    assert result.shift_detected == result.runs


def test_the_challenger_policy_recovers_faster_after_the_drift():
    off, on = recovery("alert"), recovery("challenger")
    assert on.promotions >= 1 and off.promotions == 0
    assert on.accuracy_after > off.accuracy_after + 0.05
    assert 0 < on.to_recover < off.to_recover


def test_statistics_agree_with_their_definitions():
    assert psi([1.0, 2.0, 3.0, 4.0] * 100, [1.0, 2.0, 3.0, 4.0] * 100) == pytest.approx(0.0, abs=1e-12)
    assert js_distance(["a"] * 3, ["b"] * 3) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="not a drift detector"):
        build_detector("Nope")


def test_label_rate_drop_is_an_alert():
    monitor = DataDriftMonitor(DriftSpec(reference_size=100, window=100, check_every=50))
    alerts = [monitor.update({"@label_rate": 1.0 if i < 300 else 0.0}) for i in range(600)]
    fired = [a for batch in alerts for a in batch]
    assert [a["signal"] for a in fired] == ["label_rate"]
    assert fired[0]["statistic"] < 0.5


def _example(i: int, x: float, label: bool, served: str, prediction: bool) -> TrainingExample:
    return TrainingExample(model="m", decision_id=str(i), model_version=served, features={"x": x},
                           prediction=prediction, label=label, predicted_at=AT)


def test_the_rollback_policy_returns_to_the_best_served_version(tmp_path):
    spec = LearnerSpec(name="m", metrics=["Accuracy"], drift=DriftSpec(policy="rollback", window=200, data=False,
                                                                        concept=False, rollback_bound=0.15))
    learner = OnlineLearner(spec)
    store = ModelStore(tmp_path)
    good = store.checkpoint(learner).version
    for i in range(300):  # the good version serves well: 5% errors
        learner.learn(_example(i, float(i % 2), bool(i % 2), good, bool(i % 2) if i % 20 else not i % 2))
    assert not learner.watch.actions
    bad = store.checkpoint(learner).version  # say this update was corrupt
    for i in range(300, 600):  # the bad version serves: 50% errors
        learner.learn(_example(i, float(i % 2), bool(i % 2), bad, bool(i % 3)))
    actions = learner.watch.actions
    assert [(a.kind, a.to_version) for a in actions] == [("rollback", good)]
    assert "production error" in actions[0].note


def test_the_watch_is_checkpointed_with_the_learner(tmp_path):
    spec = LearnerSpec(name="m", metrics=["Accuracy"])
    learner = OnlineLearner(spec)
    for i in range(50):
        learner.learn(_example(i, float(i), bool(i % 2), "v", True))
    store = ModelStore(tmp_path)
    store.checkpoint(learner)
    restored = store.restore(spec)
    assert restored.watch.data.count == learner.watch.data.count == 50
