"""Serving never mutates a model: a read-only view that predicts exactly like the original.

River estimators keep statistics in ``collections.defaultdict`` s and read them
with ``[]`` while predicting (``StandardScaler.transform_one`` does), which
inserts an entry for every feature seen: a served model would change, and grow,
with traffic. :func:`read_only` swaps each defaultdict for a dict that answers a
missing key with the same default without storing it. (River also fills lazy
caches on a model's first call, such as a pipeline's execution plan; those are
not learned state and stay as River builds them.)
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from adaptloop.learners.recipes import Model


class ReadOnlyDefaults(dict[Any, Any]):
    """Like a defaultdict for reads, but a missing key is answered, never inserted.

    >>> counts = ReadOnlyDefaults({"a": 1.0}, float)
    >>> counts["a"], counts["b"], "b" in counts
    (1.0, 0.0, False)
    """

    def __init__(self, data: dict[Any, Any], default_factory: Any) -> None:
        super().__init__(data)
        self.default_factory = default_factory

    def __missing__(self, key: Any) -> Any:
        return self.default_factory()


def read_only(model: Model) -> Model:
    """Make ``model`` (in place) safe to share between predicting threads; returns it.

    >>> from river import preprocessing
    >>> scaler = preprocessing.StandardScaler()
    >>> scaler.learn_one({"x": 2.0})
    >>> served = read_only(scaler)
    >>> served.transform_one({"x": 2.0, "new": 1.0})
    {'x': 0.0, 'new': 0.0}
    >>> sorted(served.vars)
    ['x']
    """
    _freeze(model, set())
    return model


def _freeze(value: Any, seen: set[int]) -> Any:
    if id(value) in seen:
        return value
    seen.add(id(value))
    if isinstance(value, defaultdict):
        return ReadOnlyDefaults(
            {k: _freeze(v, seen) for k, v in value.items()}, value.default_factory
        )
    if isinstance(value, dict):
        for key, item in value.items():
            value[key] = _freeze(item, seen)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            value[index] = _freeze(item, seen)
    elif type(value).__module__.startswith("river.") and hasattr(value, "__dict__"):
        for name, attribute in vars(value).items():
            frozen = _freeze(attribute, seen)
            if frozen is not attribute:
                setattr(value, name, frozen)
    return value
