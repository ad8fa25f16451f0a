"""What one model learns from: the type of its labels and the kinds of its features.

The event contracts admit any label (a bool, an integer, a float, a string) and any feature, because
one topic carries every model's decisions. A model is narrower: a binary classifier learns
``true``/``false``, a regression finite numbers, a numbers-only pipeline numbers. One ``"true"`` (a
string) learned by a Hoeffding tree that has seen booleans makes every later call fail (Python
cannot order a ``str`` and a ``bool``), so an example that breaks its model's contract is refused,
with the field and the type it should have, before the model changes.

A :class:`ModelContract` is built from a learner spec, published with each of the model's versions
(so a ``ModelClient`` or another language can check what it sends), and exported as JSON Schema.

>>> contract = ModelContract(model="churn", task="binary")
>>> contract.label_problem(True) is None, contract.label_problem("true")
(True, "label 'true' is a string; model 'churn' (binary) takes true or false")
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr

from adaptloop.schemas.base import Count, Label

Task = Literal["binary", "multiclass", "regression"]
LabelType = Literal["bool", "int", "str"]
FeatureKind = Literal["number", "category", "flag"]

_TYPE_NAMES = {
    bool: "a boolean",
    int: "an integer",
    float: "a number",
    str: "a string",
    type(None): "missing",
}
_KIND_OF = {bool: "flag", int: "number", float: "number", str: "category"}
_LABEL_TYPES: dict[LabelType, type] = {"bool": bool, "int": int, "str": str}


def _described(value: object) -> str:
    return _TYPE_NAMES.get(type(value), type(value).__name__)


class ModelContract(BaseModel):
    """The label type and feature kinds one model learns from.

    ``label_type`` is the label type of a multiclass model (``bool``, ``int`` or ``str``); unset,
    the learner takes the type of the first label it learns and keeps it. ``labels_01``: a binary
    model also takes 0 and 1 (learned as false and true). ``features``: the kind of each feature
    (``number``, ``category``, ``flag``); unset, any feature of any kind. ``numbers_only``: every
    feature must be a number (the pipelines that scale their inputs).
    """

    model_config = ConfigDict(strict=True, frozen=True, extra="forbid")

    model: StrictStr = Field(description="The model the contract is of (for messages).")
    task: Task = Field("binary", description="binary, multiclass or regression.")
    label_type: LabelType | None = Field(
        None, description="Multiclass: the labels' type; unset: the first seen."
    )
    labels_01: StrictBool = Field(
        False, description="Binary: also take 0 and 1 (as false and true)."
    )
    features: dict[StrictStr, FeatureKind] | None = Field(
        None, description="The kind of each feature; unset: any feature, of any kind."
    )
    numbers_only: StrictBool = Field(
        False, description="Every feature must be a number (or a flag)."
    )
    default_prediction: Label | None = Field(
        None, description="What serving answers before the model may serve (see min_examples)."
    )
    min_examples: Count = Field(0, description="Examples learned before a version may serve.")

    def target_of(self, label: object, reward: object) -> object:
        """What the model learns from an outcome: the label (0/1 as booleans where the contract says
        so), or for a regression without a label, the reward."""
        if label is None:
            return reward if self.task == "regression" else None
        if self.labels_01 and type(label) is int and label in (0, 1):
            return bool(label)
        return label

    def label_problem(
        self, label: object, reward: object = None, locked: LabelType | None = None
    ) -> str | None:
        """Why this label (or reward) cannot be learned by the model, or None if it can.

        ``locked``: the label type a multiclass learner took from its first label (when the contract
        declares none).

        >>> ModelContract(model="churn", task="regression").label_problem(True)
        "label True is a boolean; model 'churn' (regression) takes numbers"
        >>> ModelContract(model="churn", task="binary", labels_01=True).label_problem(1) is None
        True
        >>> ModelContract(model="churn", task="multiclass").label_problem(3, locked="str")
        "label 3 is an integer; model 'churn' (multiclass) takes strings (the type of its first label)"
        """
        if label is None:
            if reward is not None and self.task != "regression":
                return f"the outcome has only a reward; {self._where()} learns from labels"
            return None if reward is not None else "the outcome has no label"
        kind = type(label)
        if self.task == "binary":
            if kind is bool or (self.labels_01 and kind is int and label in (0, 1)):
                return None
            takes = "true or false" + (" (or 0 and 1)" if self.labels_01 else "")
            return f"label {label!r} is {_described(label)}; {self._where()} takes {takes}"
        if self.task == "regression":
            if kind is int or kind is float:
                return None
            return f"label {label!r} is {_described(label)}; {self._where()} takes numbers"
        expected = self.label_type or locked
        if expected is None:
            if kind in (bool, int, str):
                return None
            return (
                f"label {label!r} is {_described(label)}; {self._where()} takes booleans, "
                "integers or strings"
            )
        if kind is _LABEL_TYPES[expected]:
            return None
        source = "" if self.label_type else " (the type of its first label)"
        return (
            f"label {label!r} is {_described(label)}; {self._where()} takes "
            f"{expected_names(expected)}{source}"
        )

    def _where(self) -> str:
        """The model and its task, as a problem names them (made only for a problem: the learner
        asks about every label)."""
        return f"model {self.model!r} ({self.task})"

    def feature_problem(self, features: dict[str, Any]) -> str | None:
        """Why these features cannot be learned (or served) by the model, or None if they can.

        >>> ModelContract(model="churn", numbers_only=True).feature_problem({"age": 42, "plan": "pro"})
        "feature 'plan' is 'pro', a string; model 'churn' learns from numbers only"
        >>> ModelContract(model="churn", features={"age": "number"}).feature_problem({"age": 42, "plan": "pro"})
        "feature 'plan' is not in model 'churn''s contract (its features: age)"
        """
        if self.numbers_only and not _NUMBERS.issuperset(map(type, features.values())):
            for name, value in features.items():
                if type(value) not in _NUMBERS:
                    return (
                        f"feature {name!r} is {value!r}, {_described(value)}; model "
                        f"{self.model!r} learns from "
                        "numbers only"
                    )
        declared = self.features
        if declared is not None:
            for name, value in features.items():
                kind = declared.get(name)
                if kind is None:
                    return (
                        f"feature {name!r} is not in model {self.model!r}'s contract (its "
                        "features: "
                        f"{', '.join(declared)})"
                    )
                if value is not None and _KIND_OF.get(type(value)) != kind:
                    return (
                        f"feature {name!r} is {value!r}, {_described(value)}; model "
                        f"{self.model!r} takes a {kind} there"
                    )
        return None

    def label_json_schema(self) -> dict[str, Any]:
        """The JSON Schema of this model's labels."""
        if self.task == "binary":
            return {"enum": [True, False, 0, 1]} if self.labels_01 else {"type": "boolean"}
        if self.task == "regression":
            return {"type": "number"}
        label_type = self.label_type
        if label_type is None:
            return {"type": ["boolean", "integer", "string"]}
        return {"type": {"bool": "boolean", "int": "integer", "str": "string"}[label_type]}

    def features_json_schema(self) -> dict[str, Any]:
        """The JSON Schema of this model's features."""
        kinds = {
            "number": {"type": ["number", "null"]},
            "category": {"type": ["string", "null"]},
            "flag": {"type": ["boolean", "null"]},
        }
        if self.features is not None:
            return {
                "type": "object",
                "additionalProperties": False,
                "properties": {name: kinds[kind] for name, kind in self.features.items()},
            }
        if self.numbers_only:
            return {"type": "object", "additionalProperties": {"type": ["number", "boolean"]}}
        return {
            "type": "object",
            "additionalProperties": {"type": ["number", "string", "boolean", "null"]},
        }


_NUMBERS = frozenset({int, float, bool})


def expected_names(label_type: LabelType) -> str:
    return {"bool": "booleans", "int": "integers", "str": "strings"}[label_type]


def label_type_of(label: object) -> LabelType | None:
    """The :data:`LabelType` of a label, None for other values.

    >>> label_type_of(True), label_type_of(3), label_type_of("cat"), label_type_of(2.5)
    ('bool', 'int', 'str', None)
    """
    return {bool: "bool", int: "int", str: "str"}.get(type(label))  # type: ignore[return-value]
