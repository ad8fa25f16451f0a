"""Named River pipelines, and the way to bring your own (``"module:function"``)."""

from __future__ import annotations

import functools
import hashlib
import importlib
import inspect
import logging
import math
import pickle
from collections.abc import Callable
from typing import Any, TypeAlias

from river import base, compose, linear_model, metrics, preprocessing, tree

from adaptloop.learners.spec import LearnerSpec
from adaptloop.schemas.errors import ConfigError, UnknownModel

log = logging.getLogger(__name__)

Model: TypeAlias = Any
"""A River estimator: a classifier or a regressor, or a pipeline ending in one. River's types do not
say which methods a model has (a pipeline has ``predict_proba_one`` only if its last step does), so
the loop calls them as River does, by name."""

Metric: TypeAlias = Any
"""A River metric (``river.metrics.base.Metric``); classification metrics also say whether they
score labels (``requires_labels``) or probabilities."""

RECIPES: dict[str, Callable[..., Model]] = {
    "logistic": lambda **p: preprocessing.StandardScaler() | linear_model.LogisticRegression(**p),
    "hoeffding": lambda **p: tree.HoeffdingTreeClassifier(**p),
    "linear": lambda **p: preprocessing.StandardScaler() | linear_model.LinearRegression(**p),
    "hoeffding_regressor": lambda **p: tree.HoeffdingTreeRegressor(**p),
}


def model_seed(name: str) -> int:
    """The seed of a model's random sources, derived from its name: the same in every process and
    run.

    >>> model_seed("churn") == model_seed("churn"), model_seed("churn") == model_seed("fraud")
    (True, False)
    """
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "big")


def build_model(spec: LearnerSpec) -> Model:
    """A fresh, untrained River estimator for ``spec``.

    A ``module:function`` recipe that takes a ``seed`` and is not given one in ``params`` gets
    :func:`model_seed`, so the same examples make the same model, byte for byte, in every run. A
    model with a component left unseeded that takes a seed (a forest, an adaptive tree) is built,
    with a warning: its versions would not reproduce.

    >>> list(build_model(LearnerSpec(name="m", recipe="logistic")).steps)
    ['StandardScaler', 'LogisticRegression']
    """
    if ":" in spec.recipe:
        module, _, function = spec.recipe.partition(":")
        try:
            factory = getattr(importlib.import_module(module), function)
        except (ImportError, AttributeError) as error:
            raise UnknownModel(
                f"recipe {spec.recipe!r} of model {spec.name!r} cannot be imported: {error}"
            ) from None
    elif spec.recipe in RECIPES:
        factory = RECIPES[spec.recipe]
    else:
        raise UnknownModel(
            f"model {spec.name!r} names unknown recipe {spec.recipe!r}; known: "
            f"{', '.join(RECIPES)} or "
            "'module:function'"
        )
    params: dict[str, Any] = dict(spec.params)
    if "seed" not in params and "seed" in inspect.signature(factory).parameters:
        params["seed"] = model_seed(spec.name)
    model = factory(**params)
    if (unseeded := _unseeded(model)) is not None:
        log.warning(
            "model %r: %s has no seed, so its versions will not reproduce (adaptloop "
            "replay); give the recipe a seed",
            spec.name,
            unseeded,
        )
    return model


def _unseeded(model: Model) -> str | None:
    """The first River component of ``model`` that takes a seed and was given none, if any."""
    todo: list[tuple[str, Any]] = [(type(model).__name__, model)]
    while todo:
        name, component = todo.pop()
        get_params = getattr(component, "_get_params", None)
        if get_params is None:
            continue
        if (
            "seed" in inspect.signature(type(component)).parameters
            and getattr(component, "seed", 0) is None
        ):
            return name
        for value in vars(component).values():
            if hasattr(value, "_get_params"):
                todo.append((type(value).__name__, value))
            elif isinstance(value, (list, tuple)):
                todo.extend(
                    (type(item).__name__, item) for item in value if hasattr(item, "_get_params")
                )
            elif isinstance(value, dict):
                todo.extend(
                    (type(item).__name__, item)
                    for item in value.values()
                    if hasattr(item, "_get_params")
                )
    return None


def build_metric(name: str) -> Metric:
    """A River metric by class name (``Accuracy``, ``LogLoss``, ``MAE``, ``ROCAUC`` ...)."""
    metric = getattr(metrics, name, None)
    if not (isinstance(metric, type) and issubclass(metric, metrics.base.Metric)):
        raise ConfigError(f"{name!r} is not a River metric class (river.metrics.{name})")
    return metric()


def metric_value(metric: Metric) -> float | None:
    """``metric``'s value, or None while it has scored nothing: River answers 0.0 then, which would
    read as a model that is always wrong. (A NaN, River's answer where a value is undefined, is None
    as well.)

    A metric still in the state it was built in has scored nothing (every update changes its
    counts), whatever its kind: this holds for every River metric without knowing how each keeps its
    counts.

    >>> accuracy = build_metric("Accuracy")
    >>> metric_value(accuracy) is None
    True
    >>> accuracy.update(True, False)
    >>> metric_value(accuracy)
    0.0
    """
    kind = type(metric)
    if kind not in _UNSCORED:
        _UNSCORED[kind] = pickle.dumps(kind(), protocol=pickle.HIGHEST_PROTOCOL)
    if pickle.dumps(metric, protocol=pickle.HIGHEST_PROTOCOL) == _UNSCORED[kind]:
        return None
    value = float(metric.get())
    return value if math.isfinite(value) else None


_UNSCORED: dict[type, bytes] = {}  # each kind of metric as built, pickled


def check_spec(spec: LearnerSpec) -> None:
    """Raise :class:`ConfigError` in one line naming the model, the field, the value and the
    choices, unless everything ``spec`` names can be built: its recipe (with its params, for its
    task), its metrics and its drift detector. The worker checks every spec so before any role
    starts, as a misspelt name would otherwise stop the learner only once it builds the model.

    >>> check_spec(LearnerSpec(name="churn", recipe="logisitc"))
    Traceback (most recent call last):
    ...
    adaptloop.schemas.errors.ConfigError: model 'churn': recipe 'logisitc' is unknown; choices: logistic, \
hoeffding, linear, hoeffding_regressor, or 'module:function' returning a River estimator
    """
    from adaptloop.learners.drift import build_detector, detector_names

    where = f"model {spec.name!r}"
    if ":" not in spec.recipe and spec.recipe not in RECIPES:
        raise ConfigError(
            f"{where}: recipe {spec.recipe!r} is unknown; choices: {', '.join(RECIPES)}, or "
            "'module:function' "
            "returning a River estimator"
        )
    try:
        model = build_model(spec)
    except TypeError as error:  # a parameter the recipe does not take
        raise ConfigError(
            f"{where}: params {dict(spec.params)} do not fit recipe {spec.recipe!r}: {error}"
        ) from None
    except UnknownModel as error:
        raise ConfigError(str(error)) from None
    kind, needed = (
        ("regressor", base.Regressor)
        if spec.task == "regression"
        else ("classifier", base.Classifier)
    )
    if not isinstance(_last_step(model), needed):
        fitting = [
            name for name, factory in RECIPES.items() if isinstance(_last_step(factory()), needed)
        ]
        raise ConfigError(
            f"{where}: recipe {spec.recipe!r} is not a {kind}, which task {spec.task!r} "
            "needs; choices: "
            f"{', '.join(fitting)}"
        )
    for name in spec.metrics:
        if name not in metric_names():
            raise ConfigError(
                f"{where}: metrics has {name!r}, not a River metric; choices: "
                f"{', '.join(metric_names())}"
            )
    try:
        build_detector(spec.drift.detector, spec.drift.detector_params)
    except ConfigError:
        raise ConfigError(
            f"{where}: drift.detector {spec.drift.detector!r} is unknown; choices: "
            f"{', '.join(detector_names())}"
        ) from None
    except TypeError as error:
        raise ConfigError(
            f"{where}: drift.detector_params {dict(spec.drift.detector_params)} do not fit "
            "detector "
            f"{spec.drift.detector!r}: {error}"
        ) from None


def _last_step(model: Model) -> Model:
    """The estimator at the end of ``model`` (a pipeline's last step), which says whether it
    classifies."""
    return list(model.steps.values())[-1] if isinstance(model, compose.Pipeline) else model


@functools.cache
def metric_names() -> tuple[str, ...]:
    """The class names :func:`build_metric` takes: River's concrete metrics.

    >>> "Accuracy" in metric_names(), "Metric" in metric_names()
    (True, False)
    """
    return tuple(
        sorted(
            name
            for name, value in vars(metrics).items()
            if isinstance(value, type)
            and issubclass(value, metrics.base.Metric)
            and not inspect.isabstract(value)
        )
    )
