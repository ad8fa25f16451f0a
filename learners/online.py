"""An online learner: predict before learn (the shadow metric), learn, and remember what it has seen."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from adaptloop.learners.drift import LABEL_RATE, PREDICTION
from adaptloop.learners.recent import RecentIds
from adaptloop.learners.recipes import NUMERIC_RECIPES, Metric, Model, build_metric, build_model
from adaptloop.learners.spec import LearnerSpec
from adaptloop.learners.watch import ModelWatch
from adaptloop.schemas.errors import ConfigError, UnlearnableExample
from adaptloop.schemas.inference import LEARNABLE, TrainingExample
from adaptloop.schemas.system import ModelVersion

_NUMBERS = frozenset({float, int, bool})
log = logging.getLogger(__name__)


@dataclass
class LearnerProgress:
    """What a learner has seen, saved with each checkpoint so a restart resumes exactly."""

    examples_seen: int = 0
    offsets: dict[str, int] = field(default_factory=dict)  # "topic:partition" -> next offset to learn
    recent_ids: RecentIds = field(default_factory=RecentIds)  # decision ids learned last, to skip duplicates
    version: str | None = None
    learned_since_version: int = 0
    record: ModelVersion | None = None  # the published record of ``version``
    dataset_hash: str = hashlib.sha256(b"").hexdigest()  # chained over every example learned, in order
    pending: list[tuple[TrainingExample, object, str]] = field(default_factory=list)  # a mini-batch being filled


class OnlineLearner:
    """Progressive validation on a live stream: each example is first predicted, then learned.

    ``shadow`` metrics score the learner's own prediction made just before it
    learns; ``production`` metrics score the prediction that was actually served
    and logged. Examples are learned once: an offset already covered or a
    decision_id seen recently is skipped.

    >>> from datetime import UTC, datetime
    >>> from river import datasets
    >>> learner = OnlineLearner(LearnerSpec(name="phishing", recipe="logistic", metrics=["Accuracy"]))
    >>> now = datetime(2026, 1, 1, tzinfo=UTC)
    >>> for i, (x, y) in enumerate(datasets.Phishing()):
    ...     example = TrainingExample(model="phishing", decision_id=str(i), model_version="v0", features=x,
    ...                               prediction=True, label=y, predicted_at=now)
    ...     _ = learner.learn(example, ("training-examples:0", i))
    >>> learner.shadow["Accuracy"]
    Accuracy: 89.28%
    >>> learner.learn(example, ("training-examples:0", i))  # the same offset again: skipped
    False
    """

    def __init__(
        self,
        spec: LearnerSpec,
        model: Model | None = None,
        *,
        shadow: dict[str, Metric] | None = None,
        production: dict[str, Metric] | None = None,
        progress: LearnerProgress | None = None,
        watch: ModelWatch | None = None,
    ) -> None:
        self.spec = spec
        self.model = model if model is not None else build_model(spec)
        # Restored metrics go on; a metric the spec added since starts now, one it dropped is gone.
        shadow, production = shadow or {}, production or {}
        self.shadow = {name: shadow[name] if name in shadow else build_metric(name) for name in spec.metrics}
        self.production: dict[str, Metric] = {
            name: production.get(name, metric)
            for name in spec.metrics
            if (metric := build_metric(name)).requires_labels or spec.task == "regression"
        }
        if shadow and list(shadow) != list(self.shadow):
            log.warning("model %r: metrics %s restored, now %s", spec.name, list(shadow), list(self.shadow))
        self.progress = progress or LearnerProgress()
        self.watch = watch if watch is not None else ModelWatch(spec)
        if watch is not None and (changed := watch.follow(spec)):
            log.warning(
                "model %r: drift settings changed since the checkpoint (%s): monitors whose settings "
                "changed start over",
                spec.name,
                ", ".join(changed),
            )
        # (metric, whether it scores the predicted class rather than the probabilities), looked up once
        self._shadow_scoring = [(metric, metric.requires_labels) for metric in self.shadow.values()]
        self._classifier = spec.task != "regression"
        self._numeric_only = spec.recipe in NUMERIC_RECIPES
        if not hasattr(self.progress, "pending"):  # a checkpoint from before mini-batches
            self.progress.pending = []
        if not isinstance(self.progress.recent_ids, RecentIds):  # a checkpoint that kept them in an OrderedDict
            self.progress.recent_ids = RecentIds(self.progress.recent_ids)
        if spec.mini_batch and not hasattr(self.model, "learn_many"):
            raise ConfigError(f"model {spec.name!r}: recipe {spec.recipe!r} has no learn_many; unset mini_batch")
        if self.progress.pending and not spec.mini_batch:  # mini_batch unset since: learn the batch begun
            log.warning(
                "model %r: mini_batch unset since the checkpoint; learning its %d pending examples as one batch",
                spec.name,
                len(self.progress.pending),
            )
            self._learn_batch()

    def already_learned(self, decision_id: str, position: tuple[str, int] | None) -> bool:
        if position is not None and position[1] < self.progress.offsets.get(position[0], 0):
            return True
        return decision_id in self.progress.recent_ids

    def learn(self, example: TrainingExample, position: tuple[str, int] | None = None) -> bool:
        """Predict, score, learn; return False if the example was skipped (seen, or not learnable).

        With ``spec.mini_batch`` the example joins the pending batch (saved with each checkpoint),
        and the batch is predicted and learned once it is full.
        """
        if self.already_learned(example.decision_id, position):
            return False
        if self._numeric_only:
            self._check_numeric(example)
        if position is not None:
            self.progress.offsets[position[0]] = position[1] + 1
        target = example.label if example.label is not None else example.reward
        if example.status != "late":  # a late record follows an expired one for the same decision
            self.watch.observe_decision(
                {**example.features, PREDICTION: example.prediction, LABEL_RATE: float(example.status == "joined")},
                self.progress.version,
                self.progress.examples_seen,
            )
        if example.status not in LEARNABLE or target is None:
            return False
        where = f"{position[0]}@{position[1]}:" if position is not None else ""
        self.progress.recent_ids.add(example.decision_id)
        if self.spec.mini_batch:
            self.progress.pending.append((example, target, where))
            if len(self.progress.pending) >= self.spec.mini_batch:
                self._learn_batch()
            return True
        x = example.features
        if self._classifier:
            proba = self.model.predict_proba_one(x)
            # The same tie-break as river's Classifier.predict_one.
            y_pred = max(proba, key=proba.get) if proba else None
        else:
            proba, y_pred = None, self.model.predict_one(x)
        shadow_error = self._score(example, target, y_pred, proba, self.progress.examples_seen)
        promoted = self.watch.shadow_challenger(x, target, shadow_error, self._classifier)
        self.model.learn_one(x, target)
        if promoted is not None:
            self.model = promoted  # it has learned this example too
        self._learned(example, where)
        return True

    def _check_numeric(self, example: TrainingExample) -> None:
        if _NUMBERS.issuperset(map(type, example.features.values())):  # the usual case, checked in C
            return
        for name, value in example.features.items():
            if type(value) not in _NUMBERS:
                raise UnlearnableExample(
                    f"model {self.spec.name!r} (recipe {self.spec.recipe!r}) learns from numbers only; feature "
                    f"{name!r} of decision {example.decision_id!r} is {value!r}"
                )

    def _learn_batch(self) -> None:
        """Predict the whole pending batch, score each example, then learn it with one ``learn_many``."""
        batch, self.progress.pending = self.progress.pending, []
        X = pd.DataFrame([example.features for example, _, _ in batch])
        targets = [target for _, target, _ in batch]
        probas: list[dict[Any, float] | None] = [None] * len(batch)
        if self._classifier:
            frame = self.model.predict_proba_many(X)
            predicted = frame.idxmax(axis=1).tolist() if len(frame.columns) else [None] * len(batch)
            if any(not metric.requires_labels for metric in self.shadow.values()):
                probas = frame.to_dict("records")
        else:
            predicted = self.model.predict_many(X).tolist()
        seen = self.progress.examples_seen
        for i, ((example, target, _), y_pred) in enumerate(zip(batch, predicted)):
            self._score(example, target, y_pred, probas[i], seen + i)
        self.model.learn_many(X, pd.Series(targets))
        for example, _, where in batch:
            self._learned(example, where)

    def _score(
        self, example: TrainingExample, target: Any, y_pred: Any, proba: dict[Any, float] | None, seen: int
    ) -> float:
        """Update the shadow and production metrics and the drift watch; return the shadow error."""
        if self._classifier:
            for metric, on_labels in self._shadow_scoring:
                metric.update(target, y_pred if on_labels else proba)
            shadow_error = float(y_pred != target)
        else:
            for metric in self.shadow.values():
                metric.update(target, y_pred)
            shadow_error = abs(float(y_pred) - float(target))
        production_error = None
        if example.status == "joined" and example.prediction is not None:
            for metric in self.production.values():
                metric.update(target, example.prediction)
            production_error = (
                float(example.prediction != target)
                if self._classifier
                else abs(float(example.prediction) - float(target))
            )
        self.watch.observe_errors(shadow_error, production_error, example.model_version, self.progress.version, seen)
        return shadow_error

    def _learned(self, example: TrainingExample, where: str) -> None:
        self.progress.dataset_hash = hashlib.sha256(
            f"{self.progress.dataset_hash}|{where}{example.decision_id}".encode()
        ).hexdigest()
        self.progress.examples_seen += 1
        self.progress.learned_since_version += 1

    def metric_values(self) -> dict[str, float]:
        """Current metrics as ``{"shadow.Accuracy": 0.9, "production.Accuracy": 0.8, ...}``."""
        values = {f"shadow.{name}": metric.get() for name, metric in self.shadow.items()}
        values.update({f"production.{name}": metric.get() for name, metric in self.production.items()})
        return {name: float(value) for name, value in values.items() if value == value}  # drop NaN
