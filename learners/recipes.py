"""Named River pipelines, and the way to bring your own (``"module:function"``)."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, TypeAlias

from river import linear_model, metrics, preprocessing, tree

from adaptloop.learners.spec import LearnerSpec
from adaptloop.schemas.errors import ConfigError, UnknownModel

Model: TypeAlias = Any
"""A River estimator: a classifier or a regressor, or a pipeline ending in one. River's types do not say
which methods a model has (a pipeline has ``predict_proba_one`` only if its last step does), so the
loop calls them as River does, by name."""

Metric: TypeAlias = Any
"""A River metric (``river.metrics.base.Metric``); classification metrics also say whether they score
labels (``requires_labels``) or probabilities."""

RECIPES: dict[str, Callable[..., Model]] = {
    "logistic": lambda **p: preprocessing.StandardScaler() | linear_model.LogisticRegression(**p),
    "hoeffding": lambda **p: tree.HoeffdingTreeClassifier(**p),
    "linear": lambda **p: preprocessing.StandardScaler() | linear_model.LinearRegression(**p),
    "hoeffding_regressor": lambda **p: tree.HoeffdingTreeRegressor(**p),
}


NUMERIC_RECIPES = frozenset({"logistic", "linear"})
"""Recipes whose models only take numbers (StandardScaler); other features are rejected before learning."""


def build_model(spec: LearnerSpec) -> Model:
    """A fresh, untrained River estimator for ``spec``.

    >>> list(build_model(LearnerSpec(name="m", recipe="logistic")).steps)
    ['StandardScaler', 'LogisticRegression']
    """
    if ":" in spec.recipe:
        module, _, function = spec.recipe.partition(":")
        try:
            factory = getattr(importlib.import_module(module), function)
        except (ImportError, AttributeError) as error:
            raise UnknownModel(f"recipe {spec.recipe!r} of model {spec.name!r} cannot be imported: {error}") from None
        return factory(**spec.params)
    try:
        return RECIPES[spec.recipe](**spec.params)
    except KeyError:
        raise UnknownModel(
            f"model {spec.name!r} names unknown recipe {spec.recipe!r}; known: {', '.join(RECIPES)} or "
            "'module:function'"
        ) from None


def build_metric(name: str) -> Metric:
    """A River metric by class name (``Accuracy``, ``LogLoss``, ``MAE``, ``ROCAUC`` ...)."""
    metric = getattr(metrics, name, None)
    if not (isinstance(metric, type) and issubclass(metric, metrics.base.Metric)):
        raise ConfigError(f"{name!r} is not a River metric class (river.metrics.{name})")
    return metric()
