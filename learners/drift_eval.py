"""How well the drift monitors work, measured on River's synthetic streams (no broker needed).

- :func:`concept_drift_calibration`: detection delay on a stream whose concept changes at
  a known point (River's ``Sine``: SINE1, then the reversed SINE1), and false alarms on
  the same stream without the change;
- :func:`data_drift_calibration`: false alarms of the data-drift checks on a stationary
  stream, and whether a shifted feature is caught;
- :func:`recovery`: the accuracy after the drift with a drift policy on or off.

``python -m bench.drift`` prints all three; ``tests/unit/learners/test_drift.py`` asserts them.
"""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from river.datasets import synth

from adaptloop.learners.online import OnlineLearner
from adaptloop.learners.spec import DriftSpec, LearnerSpec
from adaptloop.schemas.base import FeatureValue
from adaptloop.schemas.inference import TrainingExample
from adaptloop.schemas.system import DriftAlert

_AT = datetime(2026, 1, 1, tzinfo=UTC)


def sine_stream(seed: int, n: int, drift_at: int | None, shift: float = 0.0) -> Iterator[tuple[dict[Any, float], bool]]:
    """(x, y) of SINE1, reversed from ``drift_at`` on (None: never); ``shift`` moves x1 after it."""
    before = synth.Sine(classification_function=0, seed=seed)
    after = synth.Sine(classification_function=1, seed=seed + 1000)
    for x, y in itertools.islice(before, drift_at if drift_at is not None else n):
        yield x, bool(y)
    if drift_at is not None:
        for x, y in itertools.islice(after, n - drift_at):
            yield ({**x, 0: x[0] + shift} if shift else x), bool(y)


def _learner(drift: DriftSpec, recipe: str = "logistic") -> OnlineLearner:
    return OnlineLearner(LearnerSpec(name="eval", recipe=recipe, metrics=["Accuracy"], drift=drift))


def _feed(learner: OnlineLearner, stream: Iterable[tuple[dict[Any, float], bool]]) -> list[tuple[int, DriftAlert]]:
    """Learn the stream as the loop would (served prediction = the learner's own); (index, alert) pairs."""
    fired: list[tuple[int, DriftAlert]] = []
    for i, (x, y) in enumerate(stream):
        features: dict[str, FeatureValue] = {f"x{k}": v for k, v in x.items()}
        proba = learner.model.predict_proba_one(features)
        served = max(proba, key=proba.get) if proba else False
        learner.learn(
            TrainingExample(
                model="eval",
                decision_id=str(i),
                model_version="v",
                features=features,
                prediction=served,
                label=y,
                predicted_at=_AT,
            )
        )
        fired.extend((i, alert) for alert in learner.watch.alerts)
        learner.watch.alerts.clear()
    return fired


@dataclass
class ConceptCalibration:
    detector: str
    runs: int
    detected: int  # runs where an alert came after the drift
    delay_mean: float
    delay_max: int
    false_alarms_per_10k: float  # on the stationary stream


def concept_drift_calibration(
    detector: str = "ADWIN", seeds: range = range(5), n: int = 6000, drift_at: int = 3000
) -> ConceptCalibration:
    """Shadow-error alerts: delay after a known drift point, and false alarms without a drift.

    False alarms are counted after the first 500 examples (while a model is still learning
    from nothing, its error does fall; that is not drift).
    """
    delays, false_alarms, stationary_examples = [], 0, 0
    for seed in seeds:
        spec = DriftSpec(detector=detector, data=False)
        alerts = [i for i, a in _feed(_learner(spec), sine_stream(seed, n, drift_at)) if a.signal == "shadow_error"]
        after = [i for i in alerts if i >= drift_at]
        if after:
            delays.append(after[0] - drift_at)
        calm = [i for i, a in _feed(_learner(spec), sine_stream(seed, n, None)) if a.signal == "shadow_error"]
        false_alarms += sum(1 for i in calm if i >= 500)
        stationary_examples += n - 500
    return ConceptCalibration(
        detector,
        len(seeds),
        len(delays),
        statistics.fmean(delays) if delays else float("nan"),
        max(delays) if delays else -1,
        10_000 * false_alarms / stationary_examples,
    )


@dataclass
class DataCalibration:
    checks: int  # data-drift checks made on the stationary streams (per signal)
    false_alarms: int
    shift_detected: int  # runs where the shifted feature was caught
    runs: int


def data_drift_calibration(
    seeds: range = range(5), n: int = 6000, drift_at: int = 3000, shift: float = 0.5
) -> DataCalibration:
    """Data-drift alerts on a stationary stream (false alarms) and on one whose ``x0`` moves by ``shift``."""
    checks = false_alarms = detected = 0
    spec = DriftSpec(concept=False)
    for seed in seeds:
        calm = _feed(_learner(spec), sine_stream(seed, n, None))
        false_alarms += len(calm)
        signals = 4  # x0, x1, the prediction, the label rate
        checks += signals * max(0, (n - spec.reference_size) // spec.check_every)
        shifted = _feed(_learner(spec), sine_stream(seed, n, drift_at, shift=shift))
        detected += any(a.signal == "feature:x0" and i >= drift_at for i, a in shifted)
    return DataCalibration(checks, false_alarms, detected, len(seeds))


@dataclass
class Recovery:
    policy: str
    accuracy_after: float  # accuracy over the ``window`` examples after the drift
    to_recover: int  # examples after the drift until the rolling accuracy (200) is back above 0.9
    promotions: int


def recovery(policy: str, seed: int = 7, n: int = 12_000, drift_at: int = 6000, window: int = 2000) -> Recovery:
    """The demo's stream and model, with the given drift policy: how fast accuracy comes back after the drift."""
    learner = _learner(DriftSpec(policy=policy, data=False))
    hits: list[int] = []
    promotions = 0
    recovered = -1
    for i, (x, y) in enumerate(sine_stream(seed, n, drift_at)):
        features: dict[str, FeatureValue] = {f"x{k}": v for k, v in x.items()}
        proba = learner.model.predict_proba_one(features)
        served = max(proba, key=proba.get) if proba else False
        hits.append(int(served == y))
        learner.learn(
            TrainingExample(
                model="eval",
                decision_id=str(i),
                model_version="v",
                features=features,
                prediction=served,
                label=y,
                predicted_at=_AT,
            )
        )
        promotions += sum(1 for action in learner.watch.actions if action.kind == "promotion")
        learner.watch.actions.clear()
        learner.watch.alerts.clear()
        if i >= drift_at + 200 and recovered < 0 and sum(hits[-200:]) / 200 >= 0.9:
            recovered = i - drift_at
    return Recovery(policy, sum(hits[drift_at : drift_at + window]) / window, recovered, promotions)
