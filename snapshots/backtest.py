"""Backtests: candidate specs evaluated on a model's archived traffic, without touching production.

Each candidate (a recipe, its parameters, a drift policy, a mini-batch) learns the model's archived
training examples in their learning order with the learner's own
:class:`~adaptloop.learners.online.OnlineLearner`, predicting each before learning it (progressive
validation), as the production learner did. Beside them: the production spec replayed the same way
(what the loop's own shadow metric says) and the accuracy of the predictions the production versions
actually served on those examples.
"""

from __future__ import annotations

import contextlib
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from river import metrics as river_metrics

from adaptloop.learners.online import OnlineLearner
from adaptloop.learners.spec import LearnerSpec
from adaptloop.learners.store import ModelStore, model_bytes
from adaptloop.schemas.errors import ConfigError, UnlearnableExample
from adaptloop.snapshots.replay import learning_order, model_history

SERVED = "served by production versions"


@dataclass
class Evaluation:
    """One candidate's result: its final metrics, its rolling key metric over the examples, its
    promotions."""

    name: str
    metric: str  # Accuracy for classifiers, MAE for regressions
    value: float | None  # the key metric over every example (progressive validation)
    metrics: dict[str, float] = field(default_factory=dict)
    # (examples seen, the key metric over the window)
    curve: list[tuple[int, float]] = field(default_factory=list)
    examples: int = 0
    promotions: int = 0  # challengers that replaced the model (a drift policy at work)
    stored: str | None = None  # the version its final model was stored as (to promote it)
    model: Any = field(default=None, repr=False)  # its final model


def key_metric(spec: LearnerSpec) -> str:
    return "MAE" if spec.task == "regression" else "Accuracy"


def _evaluate(name: str, spec: LearnerSpec, examples: list, window: int, points: int) -> Evaluation:
    metric = key_metric(spec)
    if metric not in spec.metrics:
        spec = spec.model_copy(update={"metrics": [*spec.metrics, metric]})
    learner = OnlineLearner(spec)
    recent: deque[float] = deque(maxlen=window)
    result = Evaluation(name, metric, None)
    every = max(1, len(examples) // points)
    before = 0.0  # the key metric's running sum (correct answers, or absolute errors) so far
    for position, offset, example in examples:
        model = learner.model
        # refused by the contract, as the learner refused it
        with contextlib.suppress(UnlearnableExample):
            if not learner.learn(example, (position, offset)):
                continue
        seen = learner.progress.examples_seen
        total = learner.shadow[metric].get() * seen
        recent.append(total - before)
        before = total
        result.promotions += learner.model is not model
        if seen % every == 0:
            result.curve.append((seen, sum(recent) / len(recent)))
    result.examples, result.model = learner.progress.examples_seen, learner.model
    result.metrics = {name_: float(m.get()) for name_, m in learner.shadow.items()}
    result.value = result.metrics.get(metric) if result.examples else None
    return result


def backtest(
    archive_root: Path | str,
    production: LearnerSpec,
    candidates: dict[str, LearnerSpec],
    prefix: str = "",
    *,
    window: int = 500,
    points: int = 200,
    store: ModelStore | None = None,
) -> list[Evaluation]:
    """The production spec, each candidate, and what the production versions served, on the archived
    examples of ``production.name``; the key metric of each over every example and over a rolling
    ``window``. With ``store``, each candidate's final model is stored as a version of the model
    (signed, as the learner's are), which ``adaptloop promote`` can serve."""
    for name, spec in candidates.items():
        if spec.name != production.name or spec.task != production.task:
            raise ConfigError(
                f"candidate {name!r}: a candidate learns the same model ({production.name}, "
                f"{production.task})"
            )
    examples = list(learning_order(archive_root, production.name, prefix))
    if not examples:
        raise ConfigError(f"the archive holds no training examples of model {production.name!r}")
    results = [_evaluate("production spec (replayed)", production, examples, window, points)]
    for name, spec in candidates.items():
        result = _evaluate(name, spec, examples, window, points)
        if store is not None:
            result.stored = store.put_model(production.name, model_bytes(result.model))[0]
        results.append(result)
    results.append(
        _served(production, examples, model_history(archive_root, production.name, prefix))
    )
    return results


def _served(spec: LearnerSpec, examples: list, history: list) -> Evaluation:
    """The key metric of the predictions the model's published versions served, on the same
    examples."""
    metric_name = key_metric(spec)
    published = {record.version for record in history}
    metric = river_metrics.MAE() if metric_name == "MAE" else river_metrics.Accuracy()
    contract = spec.contract()
    result = Evaluation(SERVED, metric_name, None)
    for _, _, example in examples:
        target = contract.target_of(example.label, example.reward)
        if (
            example.status == "joined"
            and not example.fallback
            and example.model_version in published
            and example.prediction is not None
            and target is not None
        ):
            metric.update(target, example.prediction)
            result.examples += 1
    result.value = float(metric.get()) if result.examples else None
    result.metrics = {metric_name: result.value} if result.value is not None else {}
    return result


def candidate_spec(production: LearnerSpec, changes: dict) -> LearnerSpec:
    """The production spec with ``changes`` (nested tables, such as ``drift``, changed key by key).

    >>> spec = candidate_spec(LearnerSpec(name="m"), {"recipe": "hoeffding", "drift": {"policy": "challenger"}})
    >>> spec.recipe, spec.drift.policy, spec.drift.detector
    ('hoeffding', 'challenger', 'ADWIN')
    """
    fields = production.model_dump()
    for key, value in changes.items():
        fields[key] = (
            {**fields[key], **value}
            if isinstance(value, dict) and isinstance(fields.get(key), dict)
            else value
        )
    return LearnerSpec.model_validate(fields)


def write_backtest_png(results: list[Evaluation], path: Path, title: str) -> Path:
    """The candidates' rolling key metric over the examples, in one chart."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(11, 4.5))
    for result in results:
        if result.curve:
            axis.plot([n for n, _ in result.curve], [v for _, v in result.curve], label=result.name)
    axis.set_xlabel("examples learned")
    axis.set_ylabel(results[0].metric + " over the last examples (rolling)")
    axis.set_title(title)
    axis.legend(loc="lower right", fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(figure)
    return path
