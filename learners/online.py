"""An online learner: predict before learn (the shadow metric), learn, and remember what it has
seen."""

from __future__ import annotations

import hashlib
import logging
import sys
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from adaptloop.learners.drift import LABEL_RATE, PREDICTION
from adaptloop.learners.recent import RecentIds
from adaptloop.learners.recipes import Metric, Model, build_metric, build_model, metric_value
from adaptloop.learners.spec import LearnerSpec
from adaptloop.learners.watch import ModelWatch
from adaptloop.schemas.contract import LabelType, label_type_of
from adaptloop.schemas.errors import ConfigError, ModelFailure, UnlearnableExample
from adaptloop.schemas.inference import LEARNABLE, TrainingExample
from adaptloop.schemas.system import ModelVersion

log = logging.getLogger(__name__)

# what the drift watch sees of each decision
_DECISION_ENDS = frozenset({"joined", "defaulted", "expired"})

PUBLISHED_VERSIONS = 5_000
"""The learner remembers the ids of its last 5,000 versions: a served decision whose version is not
among them (a service's own model, an invented id) is an external decision, never scored as a
version's production."""


@dataclass
class LearnerProgress:
    """What a learner has seen, saved with each checkpoint so a restart resumes exactly."""

    examples_seen: int = 0
    # "topic:partition" -> next offset to learn
    offsets: dict[str, int] = field(default_factory=dict)
    # decision ids learned last, to skip duplicates
    recent_ids: RecentIds = field(default_factory=RecentIds)
    version: str | None = None
    learned_since_version: int = 0
    record: ModelVersion | None = None  # the published record of ``version``
    # chained over every example learned, in order
    dataset_hash: str = hashlib.sha256(b"").hexdigest()
    # a mini-batch being filled
    pending: list[tuple[TrainingExample, object, str]] = field(default_factory=list)
    # a multiclass model's label type, from its first label (if not declared)
    label_type: LabelType | None = None
    # its version ids
    published: RecentIds = field(default_factory=lambda: RecentIds(limit=PUBLISHED_VERSIONS))
    # The feature names learned, in the order first learned (a dict: its pickle is the same whatever
    # the hash seed), for the feature budget.
    feature_names: dict[str, None] = field(default_factory=dict)

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Restore a checkpoint's progress, upgrading one written before a field existed: it goes on
        as that checkpoint's learner would have."""
        self.__dict__.update(state)
        if "pending" not in state:  # from before mini-batches
            self.pending = []
        if "published" not in state:  # from before contracts: its one version is this learner's own
            self.label_type = None
            self.published = RecentIds(
                [self.version] if self.version else [], limit=PUBLISHED_VERSIONS
            )
        if "feature_names" not in state:  # from before feature budgets: names count from now on
            self.feature_names = {}
        if not isinstance(self.recent_ids, RecentIds):  # it kept the ids in an OrderedDict
            self.recent_ids = RecentIds(self.recent_ids)


def interned(features: dict[str, Any]) -> dict[str, Any]:
    """``features`` with its names and category values interned: one object per name, whatever
    decoded them.

    Pickle writes a string once per object and refers back to it after, so whether a model's feature
    names are one object or many changes its bytes (and version id). How they arrive (a JSON
    parser's string cache, say) is not the model's state; interned, equal strings are one object, in
    every process.

    >>> a, b = interned({"".join(["x", "1"]): 1.0}), interned({"".join(["x", "1"]): 2.0})
    >>> next(iter(a)) is next(iter(b))
    True
    """
    return {
        _intern(name): (_intern(value) if type(value) is str else value)
        for name, value in features.items()
    }


_intern = sys.intern
_sha256 = hashlib.sha256


def probe(model: Model, spec: LearnerSpec, features: dict[str, Any]) -> None:
    """Predict ``features`` (and forget the prediction); raise :class:`ModelFailure` if the model
    cannot.

    Predicting can change a River model (its defaultdicts gain the features' names): probe a copy,
    or a learner of its own.
    """
    try:
        if spec.task != "regression":
            model.predict_proba_one(features)
        else:
            model.predict_one(features)
    except Exception as error:
        raise ModelFailure(spec.name, "predict", error) from error


class OnlineLearner:
    """Progressive validation on a live stream: each example is first predicted, then learned.

    ``shadow`` metrics score the learner's own prediction made just before it learns; ``production``
    metrics score the prediction that was actually served and logged, by one of this model's
    versions (a fallback, or a version the loop never published, is counted in ``counts`` instead).
    Examples are learned once: an offset already covered or a decision_id seen recently is skipped.
    An example that breaks the model's contract (:class:`~adaptloop.schemas.contract.ModelContract`)
    raises :class:`UnlearnableExample` before anything of the learner changes, and so does one over
    the model's feature budget (:class:`~adaptloop.learners.budget.FeatureBudget`: too many
    features, or too many new names).

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
        self.contract = spec.contract()
        self.model = model if model is not None else build_model(spec)
        # Restored metrics go on; a metric the spec added since starts now, one it dropped is gone.
        shadow, production = shadow or {}, production or {}
        self.shadow = {
            name: shadow[name] if name in shadow else build_metric(name) for name in spec.metrics
        }
        # a served prediction is a label: metrics of probabilities skip it
        self.production: dict[str, Metric] = {}
        for name in spec.metrics:
            metric = build_metric(name)
            if spec.task == "regression" or metric.requires_labels:
                self.production[name] = production.get(name, metric)
        if shadow and list(shadow) != list(self.shadow):
            log.warning(
                "model %r: metrics %s restored, now %s", spec.name, list(shadow), list(self.shadow)
            )
        self.progress = progress or LearnerProgress()
        self.watch = watch if watch is not None else ModelWatch(spec)
        if watch is not None and (changed := watch.follow(spec)):
            log.warning(
                "model %r: drift settings changed since the checkpoint (%s): monitors whose "
                "settings "
                "changed start over",
                spec.name,
                ", ".join(changed),
            )
        # (metric, whether it scores the predicted class rather than the probabilities), looked up
        # once
        self._shadow_scoring = [
            (metric, getattr(metric, "requires_labels", True)) for metric in self.shadow.values()
        ]
        self._classifier = spec.task != "regression"
        # (the watch follows the spec: its data monitor is on or off alike)
        self._watches_data = spec.drift.data
        # decisions not scored as production: "fallback", "external"
        self.counts: Counter[str] = Counter()
        self.failed_batch: list[TrainingExample] = []  # a mini-batch whose learning raised
        self.budget = spec.budget()
        if spec.mini_batch and not hasattr(self.model, "learn_many"):
            raise ConfigError(
                f"model {spec.name!r}: recipe {spec.recipe!r} has no learn_many; unset mini_batch"
            )
        # mini_batch unset since: learn the batch begun
        if self.progress.pending and not spec.mini_batch:
            log.warning(
                "model %r: mini_batch unset since the checkpoint; learning its %d pending "
                "examples as one batch",
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
        progress = self.progress
        decision_id, status = example.decision_id, example.status
        # (already_learned, inline: once per example)
        if (
            position is not None and position[1] < progress.offsets.get(position[0], 0)
        ) or decision_id in progress.recent_ids:
            return False
        learnable = status in LEARNABLE
        if learnable:
            self.check(example)
        if position is not None:
            progress.offsets[position[0]] = position[1] + 1
        # (A late record follows an expired one for the same decision.)
        if status in _DECISION_ENDS and self._watches_data:
            self.watch.observe_decision(
                {
                    **example.features,
                    PREDICTION: example.prediction,
                    LABEL_RATE: float(status == "joined"),
                },
                progress.version,
                progress.examples_seen,
            )
        target = self.contract.target_of(example.label, example.reward)
        if not learnable or target is None:
            return False
        if progress.label_type is None and self.contract.task == "multiclass":
            progress.label_type = self.contract.label_type or label_type_of(target)
        where = f"{position[0]}@{position[1]}:" if position is not None else ""
        progress.recent_ids.add(decision_id)
        x = interned(example.features)
        if self.budget is not None and not progress.feature_names.keys() >= x.keys():
            progress.feature_names.update(dict.fromkeys(x))
        if type(target) is str:
            target = sys.intern(target)
        if self.spec.mini_batch:
            progress.pending.append((example, target, where))
            if len(progress.pending) >= self.spec.mini_batch:
                self._learn_batch()
            return True
        model = self.model
        try:
            if self._classifier:
                proba = model.predict_proba_one(x)
                # The same tie-break as river's Classifier.predict_one.
                y_pred = max(proba, key=proba.get) if proba else None
            else:
                proba, y_pred = None, model.predict_one(x)
        except Exception as error:  # any error of the model's own: an earlier example broke it
            raise ModelFailure(self.spec.name, "predict", error) from error
        shadow_error = self._score(example, target, y_pred, proba, progress.examples_seen)
        try:
            promoted = self.watch.shadow_challenger(
                x, target, shadow_error, self._classifier, model
            )
            model.learn_one(x, target)
        except Exception as error:  # the model (or its challenger) may be half-updated
            raise ModelFailure(self.spec.name, "learn", error) from error
        if promoted is not None:
            self.model = promoted  # it has learned this example too
        self._learned(example, where)
        return True

    def probe(self, features: dict[str, Any]) -> None:
        """Predict ``features`` with the learner's model: see :func:`probe`."""
        probe(self.model, self.spec, features)

    def check(self, example: TrainingExample) -> None:
        """Raise :class:`UnlearnableExample` if the example breaks the model's contract (its
        features, or its label's type) or its feature budget, naming the decision, the field and
        what was expected."""
        problem = self.contract.feature_problem(example.features)
        if problem is None and self.budget is not None:
            problem = self.budget.problem(
                self.spec.name, example.features, self.progress.feature_names
            )
        if problem is not None:
            raise UnlearnableExample(f"decision {example.decision_id!r}: {problem}", "features")
        problem = self.contract.label_problem(
            example.label, example.reward, self.progress.label_type
        )
        if problem is not None:
            raise UnlearnableExample(f"decision {example.decision_id!r}: {problem}", "label")

    def _learn_batch(self) -> None:
        """Predict the whole pending batch, score each example, then learn it with one
        ``learn_many``."""
        import pandas as pd  # here: only mini-batch recipes need it (0.3-0.9 s of a learner's start)

        batch, self.progress.pending = self.progress.pending, []
        # cleared once the batch is learned
        self.failed_batch = [example for example, _, _ in batch]
        X = pd.DataFrame([interned(example.features) for example, _, _ in batch])
        targets = [target for _, target, _ in batch]
        probas: list[dict[Any, float] | None] = [None] * len(batch)
        try:
            if self._classifier:
                frame = self.model.predict_proba_many(X)
                predicted = (
                    frame.idxmax(axis=1).tolist() if len(frame.columns) else [None] * len(batch)
                )
                if any(not metric.requires_labels for metric in self.shadow.values()):
                    probas = frame.to_dict("records")
            else:
                predicted = self.model.predict_many(X).tolist()
        except Exception as error:
            raise ModelFailure(self.spec.name, "predict", error) from error
        seen = self.progress.examples_seen
        for i, ((example, target, _), y_pred) in enumerate(zip(batch, predicted)):
            self._score(example, target, y_pred, probas[i], seen + i)
        try:
            self.model.learn_many(X, pd.Series(targets))
        except Exception as error:
            raise ModelFailure(self.spec.name, "learn", error) from error
        self.failed_batch = []
        for example, _, where in batch:
            self._learned(example, where)

    def _score(
        self,
        example: TrainingExample,
        target: Any,
        y_pred: Any,
        proba: dict[Any, float] | None,
        seen: int,
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
        if (
            example.status == "joined"
            and example.prediction is not None
            and self._served_by_a_version(example)
        ):
            for metric in self.production.values():
                metric.update(target, example.prediction)
            production_error = (
                float(example.prediction != target)
                if self._classifier
                else abs(float(example.prediction) - float(target))
            )
        self.watch.observe_errors(
            shadow_error, production_error, example.model_version, self.progress.version, seen
        )
        return shadow_error

    def _served_by_a_version(self, example: TrainingExample) -> bool:
        """Whether one of this model's versions made the served prediction (not a fallback, not a
        service's own)."""
        if example.fallback:
            self.counts["fallback"] += 1
            return False
        if example.model_version not in self.progress.published:
            self.counts["external"] += 1
            return False
        return True

    def _learned(self, example: TrainingExample, where: str) -> None:
        progress = self.progress
        progress.dataset_hash = _sha256(
            f"{progress.dataset_hash}|{where}{example.decision_id}".encode()
        ).hexdigest()
        progress.examples_seen += 1
        progress.learned_since_version += 1

    def metric_values(self) -> dict[str, float | None]:
        """Current metrics as ``{"shadow.Accuracy": 0.9, "production.Accuracy": None, ...}``: None
        where the metric has scored nothing yet (no production metric before a version has served a
        decision), never a 0.0 that no decision earned."""
        values = {f"shadow.{name}": metric_value(metric) for name, metric in self.shadow.items()}
        values.update(
            {f"production.{name}": metric_value(metric) for name, metric in self.production.items()}
        )
        return values
