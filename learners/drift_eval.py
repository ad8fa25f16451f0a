"""How well the drift monitors work, measured on River's synthetic streams (no broker needed).

- :func:`concept_drift_calibration`: detection delay on a stream whose concept changes at
  a known point (River's ``Sine``: SINE1, then the reversed SINE1), and false alarms on
  the same stream without the change;
- :func:`data_drift_calibration`: false alarms of the data-drift checks on a stationary
  stream, and whether a shifted feature is caught;
- :func:`recovery`: the accuracy after the drift with a drift policy on or off;
- :func:`policy_suite`: every drift policy on drifting streams nobody tuned for (River's SEA,
  Agrawal, STAGGER, Mixed and Sine generators; abrupt and gradual drifts at two positions, two
  seeds, two recipes), served as the loop serves: production accuracy after the drift, examples
  to recover, switches; with a canary (:func:`canary_serving`), each decision served by the version
  its id's split names.

``python -m bench.drift`` prints the first three and ``tests/unit/learners/test_drift.py`` asserts
them; ``python -m bench policies`` prints the suite.
"""

from __future__ import annotations

import copy
import itertools
import statistics
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from river.datasets import synth

from adaptloop.learners.canary_split import in_canary
from adaptloop.learners.online import OnlineLearner
from adaptloop.learners.spec import CanarySpec, DriftSpec, LearnerSpec
from adaptloop.learners.store import ModelStore
from adaptloop.schemas.base import FeatureValue
from adaptloop.schemas.inference import TrainingExample
from adaptloop.schemas.system import DriftAlert, ModelVersion

_AT = datetime(2026, 1, 1, tzinfo=UTC)


def sine_stream(
    seed: int, n: int, drift_at: int | None, shift: float = 0.0
) -> Iterator[tuple[dict[Any, float], bool]]:
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


def _feed(
    learner: OnlineLearner, stream: Iterable[tuple[dict[Any, float], bool]]
) -> list[tuple[int, DriftAlert]]:
    """Learn the stream as the loop would (served prediction = the learner's own); (index, alert)
    pairs."""
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
        alerts = [
            i
            for i, a in _feed(_learner(spec), sine_stream(seed, n, drift_at))
            if a.signal == "shadow_error"
        ]
        after = [i for i in alerts if i >= drift_at]
        if after:
            delays.append(after[0] - drift_at)
        calm = [
            i
            for i, a in _feed(_learner(spec), sine_stream(seed, n, None))
            if a.signal == "shadow_error"
        ]
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
    """Data-drift alerts on a stationary stream (false alarms) and on one whose ``x0`` moves by
    ``shift``."""
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


def recovery(
    policy: str, seed: int = 7, n: int = 12_000, drift_at: int = 6000, window: int = 2000
) -> Recovery:
    """The demo's stream and model, with the given drift policy: how fast accuracy comes back after
    the drift."""
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


CANARY_CHALLENGER = "canary+challenger"
POLICIES = ("none", "alert", "challenger", "rollback", CANARY_CHALLENGER)
"""The drift policies the suite compares; ``none`` watches nothing (no monitor, no action);
``canary+challenger`` is the ``challenger`` policy with :data:`SUITE_CANARY` (see
:func:`canary_run`)."""

SUITE_CANARY = CanarySpec(share=0.1)
"""The canary of ``canary+challenger``: the documented example (a tenth of the decisions, confidence
0.99, 200 outcomes each group at least)."""

SUITE_STREAMS: dict[str, tuple[Callable[..., Any], dict[str, Any], dict[str, Any]]] = {
    # name: (River's generator, its arguments for the concept before, and after the drift)
    "SEA 0>3": (synth.SEA, {"variant": 0, "noise": 0.05}, {"variant": 3, "noise": 0.05}),
    "Agrawal 0>2": (synth.Agrawal, {"classification_function": 0}, {"classification_function": 2}),
    "Agrawal 1>4": (synth.Agrawal, {"classification_function": 1}, {"classification_function": 4}),
    "STAGGER 0>2": (synth.STAGGER, {"classification_function": 0}, {"classification_function": 2}),
    "Mixed 0>1": (synth.Mixed, {"classification_function": 0}, {"classification_function": 1}),
    "Sine 2>3": (synth.Sine, {"classification_function": 2}, {"classification_function": 3}),
}


@dataclass(frozen=True)
class SuiteStream:
    """One drifting stream of the suite: a generator pair, the drift's position and width, a
    seed."""

    name: str
    position: int
    width: int  # 1: abrupt; more: the examples over which the new concept takes over
    seed: int
    after: int = 5000  # examples after the drift

    def examples(self) -> Iterator[tuple[dict[str, FeatureValue], bool]]:
        generator, before_args, after_args = SUITE_STREAMS[self.name]
        before, after = (
            generator(**before_args, seed=self.seed),
            generator(**after_args, seed=self.seed + 1000),
        )
        stream: Iterable[tuple[dict[Any, Any], Any]]
        if self.width == 1:  # (River's ConceptDriftStream overflows its sigmoid at width 1)
            stream = itertools.chain(itertools.islice(before, self.position), after)
        else:
            stream = synth.ConceptDriftStream(
                stream=before,
                drift_stream=after,
                position=self.position,
                width=self.width,
                seed=self.seed,
            )
        for x, y in itertools.islice(stream, self.position + self.after):
            yield {str(k): v for k, v in x.items()}, bool(y)


@dataclass
class PolicyRun:
    stream: SuiteStream
    recipe: str
    policy: str
    accuracy_before: float  # production accuracy over the 1,000 decisions before the drift
    accuracy_after: float  # production accuracy over every decision after the drift
    # decisions after the drift until the rolling accuracy (200) is back within 0.02
    to_recover: int | None
    switches: int  # promotions and rollbacks


def _policy_spec(policy: str) -> DriftSpec:
    if policy == "none":
        return DriftSpec(concept=False, data=False)
    if policy == CANARY_CHALLENGER:
        return DriftSpec(policy="challenger", data=False)
    return DriftSpec(policy=policy, data=False)


def policy_run(
    stream: SuiteStream,
    recipe: str,
    policy: str,
    version_every: int = 500,
    canary: CanarySpec = SUITE_CANARY,
) -> PolicyRun:
    """Learn ``stream`` as the loop does: services are served the newest version (a copy of the
    model published every ``version_every`` examples and at every switch), and the learner scores
    each served prediction against its outcome. ``canary+challenger`` is served with ``canary`` as
    :func:`canary_run` says."""
    if policy == CANARY_CHALLENGER:
        return canary_run(stream, recipe, version_every, canary)
    learner = OnlineLearner(
        LearnerSpec(name="eval", recipe=recipe, metrics=["Accuracy"], drift=_policy_spec(policy))
    )
    versions: dict[str, Any] = {}  # version id -> the model as published

    def publish() -> None:
        version = f"v{len(versions)}"
        versions[version] = copy.deepcopy(learner.model)
        learner.progress.version = version
        learner.progress.published.add(version)

    publish()
    hits: list[int] = []
    switches = 0
    for i, (features, y) in enumerate(stream.examples()):
        served_version = learner.progress.version or "v0"
        proba = versions[served_version].predict_proba_one(features)
        served = max(proba, key=proba.get) if proba else False
        hits.append(int(served == y))
        learner.learn(
            TrainingExample(
                model="eval",
                decision_id=str(i),
                model_version=served_version,
                features=features,
                prediction=served,
                label=y,
                predicted_at=_AT,
            )
        )
        actions = learner.watch.actions
        for action in actions:
            # as the agent: the stored version
            if action.kind == "rollback" and action.to_version is not None:
                learner.model = copy.deepcopy(versions[action.to_version])
        switches += len(actions)
        if actions or (i + 1) % version_every == 0:
            publish()
        actions.clear()
        learner.watch.alerts.clear()
    return _policy_result(stream, recipe, policy, hits, switches)


def _policy_result(
    stream: SuiteStream, recipe: str, policy: str, hits: list[int], switches: int
) -> PolicyRun:
    """The run's figures from its decisions' hits (1: the served prediction was right)."""
    at = stream.position
    before = statistics.fmean(hits[at - 1000 : at])
    recovered = None
    rolling = sum(hits[at : at + 200])
    for j in range(at + 200, len(hits)):
        if rolling / 200 >= before - 0.02:
            recovered = j - at
            break
        rolling += hits[j] - hits[j - 200]
    return PolicyRun(
        stream, recipe, policy, before, statistics.fmean(hits[at:]), recovered, switches
    )


@dataclass
class CanaryServing:
    """What ``canary+challenger`` served: each decision's id and version, and the records
    published."""

    served: list[tuple[str, str]]  # (decision id, the version that answered it), in order
    # every record the learner published: (decisions before it, it)
    records: list[tuple[int, ModelVersion]]
    hits: list[int]  # 1: the served prediction was right
    switches: int  # the learner's actions: challenger promotions and the gate's verdicts


def canary_serving(
    examples: Iterable[tuple[dict[str, FeatureValue], bool]],
    recipe: str,
    canary: CanarySpec = SUITE_CANARY,
    version_every: int = 500,
) -> CanaryServing:
    """Learn ``examples`` under the ``challenger`` policy with ``canary``, served as the loop serves
    it.

    Versions are made as the learner agent makes them: :meth:`ModelStore.checkpoint` (a temporary
    store) every ``version_every`` examples and after every action of the drift policy, whose
    records carry the canary gate's state; a rollback loads the stable version from the store first,
    as ``LearnerAgent._act`` does. Serving answers with the newest servable record (before there is
    one, the newest record: the other policies' runs serve from the first version too), and while
    its canary runs, the decisions outside the share
    (:func:`~adaptloop.learners.canary_split.in_canary` on the decision id, as ``ModelClient``) get
    the canary's stable version.
    """
    spec = LearnerSpec(
        name="eval",
        recipe=recipe,
        metrics=["Accuracy"],
        drift=_policy_spec(CANARY_CHALLENGER),
        canary=canary,
    )
    learner = OnlineLearner(spec)
    out = CanaryServing([], [], [], 0)
    models: dict[str, Any] = {}  # version -> the model as serving loaded it
    with tempfile.TemporaryDirectory(prefix="adaptloop-canary-eval-") as root:
        store = ModelStore(root)

        def publish(record: ModelVersion) -> None:
            # (no new record: nothing learned)
            if not out.records or out.records[-1][1] is not record:
                out.records.append((len(out.served), record))

        def model(version: str) -> Any:
            if version not in models:
                models[version] = store.load_model(spec.name, version)
            return models[version]

        publish(store.checkpoint(learner))
        for i, (features, y) in enumerate(examples):
            decision_id = str(i)
            servable = [record for _, record in out.records if record.servable]
            record = servable[-1] if servable else out.records[-1][1]
            gate = record.canary
            version = record.version
            if (
                gate is not None
                and gate.state == "running"
                and not in_canary(decision_id, gate.share)
            ):
                version = gate.stable
            proba = model(version).predict_proba_one(features)
            served = max(proba, key=proba.get) if proba else False
            out.served.append((decision_id, version))
            out.hits.append(int(served == y))
            learner.learn(
                TrainingExample(
                    model=spec.name,
                    decision_id=decision_id,
                    model_version=version,
                    features=features,
                    prediction=served,
                    label=y,
                    predicted_at=_AT,
                )
            )
            actions = learner.watch.actions
            acted = bool(actions)
            while actions:  # as LearnerAgent._act
                action = actions.pop(0)
                if action.kind == "rollback":
                    assert action.to_version is not None
                    learner.model = store.load_model(spec.name, action.to_version)
                actor = action.actor or f"policy:{spec.drift.policy}"
                publish(
                    store.checkpoint(learner, reason=action.kind, actor=actor, note=action.note)
                )
                out.switches += 1
            if not acted and (i + 1) % version_every == 0:
                publish(store.checkpoint(learner))
            learner.watch.alerts.clear()
    return out


def canary_run(
    stream: SuiteStream, recipe: str, version_every: int = 500, canary: CanarySpec = SUITE_CANARY
) -> PolicyRun:
    """``canary+challenger`` on ``stream`` (see :func:`canary_serving`)."""
    serving = canary_serving(stream.examples(), recipe, canary, version_every)
    return _policy_result(stream, recipe, CANARY_CHALLENGER, serving.hits, serving.switches)


def suite_streams(
    names: Iterable[str] = SUITE_STREAMS,
    positions: Iterable[int] = (2000, 5000),
    seeds: Iterable[int] = (1, 2),
) -> list[SuiteStream]:
    """Every stream of the suite: each generator pair, abrupt and gradual (1,000 wide), at each
    position and seed."""
    return [
        SuiteStream(name, position, width, seed)
        for name in names
        for position in positions
        for width in (1, 1000)
        for seed in seeds
    ]


def policy_suite(
    streams: list[SuiteStream],
    recipes: Iterable[str] = ("logistic", "hoeffding"),
    policies: Iterable[str] = POLICIES,
) -> list[PolicyRun]:
    """Every policy on every stream with every recipe (see :func:`policy_run`)."""
    return [
        policy_run(stream, recipe, policy)
        for stream in streams
        for recipe in recipes
        for policy in policies
    ]
