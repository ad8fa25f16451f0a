"""What a learner is: its model name, task, River pipeline, metrics, checkpoint cadence and join
rules."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    model_validator,
)

from adaptloop.learners.budget import FeatureBudget
from adaptloop.schemas.contract import FeatureKind, LabelType, ModelContract, Task

NUMERIC_RECIPES = frozenset({"logistic", "linear"})
"""Recipes whose pipelines only take numbers (they scale their inputs): other features are
refused."""

MAX_EVENT_FEATURES = 1_000
"""The default feature budget per example: wide tabular rows have tens to hundreds of features; a
thousand is no row a service sends by accident."""

MAX_FEATURE_NAMES = 50_000
"""The default number of feature names a model grows to: sparse features (one name per id or word)
reach it, tabular ones never; a logistic model of 50,000 names is a 2.5 MB version."""


class DriftSpec(BaseModel):
    """How a model is watched for drift, and what the loop does when it drifts.

    ``policy``: ``alert`` only; ``challenger`` (the default) starts a fresh learner on concept
    drift, fed the same stream in shadow, and promotes it only when a paired sequential test on the
    two models' errors finds it better at ``challenger_confidence`` (after ``challenger_window``
    examples at least); the replaced champion learns on as the challenger and wins back the same
    way, its test starting over whenever the promoted model leads it (see
    :mod:`adaptloop.learners.watch`); ``rollback`` returns to the last good version when the served
    versions' production error exceeds the last good one's by ``rollback_bound``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    concept: StrictBool = Field(
        True, description="Watch the shadow and production errors for concept drift."
    )
    detector: StrictStr = Field(
        "ADWIN", description="A class of river.drift or river.drift.binary."
    )
    detector_params: dict[StrictStr, StrictFloat | StrictInt | StrictStr | StrictBool] = Field(
        default_factory=dict,
        description="Keyword arguments of the detector, e.g. {delta = 0.001} for ADWIN.",
    )
    window: int = Field(
        500, ge=10, description="Recent window: error before/after, and data-drift samples."
    )
    data: StrictBool = Field(
        True, description="Watch the features, the prediction and the label rate."
    )
    reference_size: int = Field(
        1000, ge=10, description="Decisions in a data-drift reference window."
    )
    check_every: int = Field(500, ge=1, description="Data drift is checked every N decisions.")
    max_features: int = Field(
        100,
        ge=1,
        description="Data drift watches this many features at most, the first seen (sparse "
        "features, "
        "one name per id or word, would otherwise keep a window each and make every check "
        "visit them all).",
    )
    psi_threshold: float = Field(
        0.25, gt=0, description="PSI above this is data drift (0.25 is the usual 'major shift')."
    )
    js_threshold: float = Field(
        0.2, gt=0, le=1, description="Jensen-Shannon distance above this is drift (categories)."
    )
    label_rate_drop: float = Field(
        0.5,
        gt=0,
        lt=1,
        description="Alert when the share of decisions with an outcome falls by this.",
    )
    policy: Literal["alert", "challenger", "rollback"] = Field(
        "challenger",
        description="What the loop does on drift: alert only; run a challenger (the default; "
        "'alert' for a "
        "model learned in mini-batches); roll back (see above).",
    )
    challenger_window: int = Field(
        300,
        ge=10,
        description="The fewest examples a challenger is compared on before it may be promoted.",
    )
    challenger_confidence: float = Field(
        0.99,
        gt=0.5,
        lt=1,
        description="How sure the paired sequential sign test must be that a challenger is "
        "better to promote it.",
    )
    challenger_margin: float = Field(
        0.0,
        ge=0,
        description="How much lower a challenger's mean error must also be, over the "
        "examples compared.",
    )
    challenger_examples: int = Field(
        5000,
        ge=10,
        description="A challenger not better after this many examples is dropped (a replaced "
        "champion too).",
    )
    rollback_bound: float = Field(
        0.15, gt=0, description="Production error above the last good version's by this: roll back."
    )


class CanarySpec(BaseModel):
    """A canary: each new version serves ``share`` of the decisions (chosen by decision id, see
    :mod:`adaptloop.learners.canary_split`), the version before it the rest, until a gate on the two
    groups' production outcomes promotes it (every decision) or rolls it back (the learner returns
    to the stable version; the withdrawn line's last version stays in the store, named in the
    rollback's record).

    The gate decides when each group has ``min_outcomes`` decisions with an outcome and a sequential
    sign test on their errors finds the canary better, or worse, at ``confidence``; until then it
    waits, and the learner's newer versions join the canary line.

    >>> CanarySpec(share=0.1).confidence
    0.99
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    share: float = Field(
        gt=0, lt=1, description="The share of decisions the newest version serves."
    )
    confidence: float = Field(
        0.99,
        gt=0.5,
        lt=1,
        description="How sure the gate's sequential test must be, either way, to decide.",
    )
    min_outcomes: int = Field(
        200,
        ge=10,
        description="The fewest decisions with an outcome each group needs before "
        "the gate decides.",
    )


class LearnerSpec(BaseModel):
    """The declaration of one online model.

    ``recipe`` names a pipeline from :mod:`adaptloop.learners.recipes`, or ``"module:function"``
    returning your own River estimator.

    >>> spec = LearnerSpec(name="churn", task="binary", recipe="logistic", checkpoint_every=500)
    >>> spec.metrics, spec.horizon_seconds, spec.on_missing
    (['Accuracy', 'LogLoss'], 3600.0, 'drop')
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: StrictStr = Field(
        min_length=1,
        pattern=r"^[A-Za-z0-9_.-]+$",
        description="The model's name, as services call it.",
    )
    task: Task = Field("binary", description="binary, multiclass or regression.")
    recipe: StrictStr = Field(
        "logistic",
        description="logistic, hoeffding, linear or hoeffding_regressor, or 'module:function' "
        "returning a River "
        "estimator.",
    )
    params: dict[StrictStr, StrictFloat | StrictInt | StrictStr | StrictBool] = Field(
        default_factory=dict, description="Keyword arguments of the recipe."
    )
    metrics: list[StrictStr] = Field(
        default_factory=lambda: ["Accuracy", "LogLoss"], description="River metrics, by class name."
    )
    checkpoint_every: int = Field(
        1000,
        ge=1,
        description="Publish a version each time the examples learned reach a multiple of N...",
    )
    checkpoint_seconds: float | None = Field(
        30.0, gt=0, description="...or after this long with unpublished learning."
    )
    keep_versions: int = Field(
        1000,
        ge=20,
        description="Model versions kept in the store, the newest (the current one always); "
        "older ones "
        "are removed. Snapshots keep the bytes of theirs, and `adaptloop replay` rebuilds "
        "any from the archive.",
    )
    horizon_seconds: float = Field(
        3600.0, gt=0, description="How long the join waits for an outcome (event time)."
    )
    on_missing: Literal["drop", "default"] = Field(
        "drop", description="An outcome that never came: drop, or learn the default."
    )
    default_label: StrictBool | StrictInt | StrictFloat | StrictStr | None = Field(
        None, description="The label learned when no outcome came (on_missing = 'default')."
    )
    default_reward: StrictFloat | None = Field(
        None, description="The reward learned when no outcome came (on_missing = 'default')."
    )
    duplicates: Literal["first", "last"] = Field(
        "first",
        description="Which of a decision's repeated predictions counts while it waits for its "
        "outcome: the first, or the last (its deadline then runs from the last one's time). Of "
        "repeated outcomes the first counts, always: it ends the decision, or waits for the "
        "prediction.",
    )
    label_type: LabelType | None = Field(
        None,
        description="multiclass: the type of the labels (bool, int or str); unset: the type of "
        "the first label "
        "learned, kept from then on. A label of another type is refused before the model changes.",
    )
    labels_01: StrictBool = Field(
        False, description="binary: also take the labels 0 and 1 (learned as false and true)."
    )
    features: dict[StrictStr, FeatureKind] | None = Field(
        None,
        description="The kind of each feature (number, category or flag); a prediction with "
        "another feature or "
        "kind is refused. Unset: any features (the logistic and linear recipes take numbers only).",
    )
    min_examples: int = Field(
        100,
        ge=0,
        description="Versions learned from fewer examples are published for the lineage but not "
        "served; "
        "meanwhile ModelClient answers with default_prediction, or raises NoModelYet.",
    )
    default_prediction: StrictBool | StrictInt | StrictFloat | StrictStr | None = Field(
        None, description="What serving answers (flagged as a fallback) before a version may serve."
    )
    mini_batch: int | None = Field(
        None,
        ge=2,
        description="Learn in mini-batches of this many examples with River's learn_many "
        "(models that "
        "have it, e.g. the logistic recipe); unset: learn_one on each example.",
    )
    max_event_features: int | None = Field(
        None,
        ge=1,
        description="The feature budget: an example with more features is dead-lettered before "
        "the model changes "
        "(unless `features` declares them). Unset: the worker's `max_event_features`.",
    )
    max_feature_names: int | None = Field(
        None,
        ge=1,
        description="The feature budget: distinct feature names the model learns from at most; "
        "an example with "
        "new names beyond them is dead-lettered (unless `features` declares them). Unset: "
        "the worker's "
        "`max_feature_names`.",
    )
    drift: DriftSpec = Field(
        default_factory=DriftSpec, description="Drift monitoring and the policy on drift."
    )
    canary: CanarySpec | None = Field(
        None,
        description="Serve each new version to a share of the decisions first, and promote or "
        "roll it back on "
        "their outcomes (see below). Unset: a new version serves every decision at once.",
    )

    def budget(self) -> FeatureBudget | None:
        """The model's feature budget; None if its contract declares its features (it refuses any
        other name).

        >>> LearnerSpec(name="churn", max_event_features=10).budget()
        FeatureBudget(per_event=10, names=50000)
        >>> LearnerSpec(name="churn", features={"age": "number"}).budget() is None
        True
        """
        if self.features is not None:
            return None
        return FeatureBudget(
            self.max_event_features or MAX_EVENT_FEATURES,
            self.max_feature_names or MAX_FEATURE_NAMES,
        )

    def budgeted(self, per_event: int, names: int) -> LearnerSpec:
        """This spec with the worker's feature budget where it sets none of its own.

        >>> LearnerSpec(name="churn", max_feature_names=10).budgeted(100, 1000).budget()
        FeatureBudget(per_event=100, names=10)
        """
        return self.model_copy(
            update={
                "max_event_features": self.max_event_features or per_event,
                "max_feature_names": self.max_feature_names or names,
            }
        )

    def contract(self) -> ModelContract:
        """What this model learns from, as published with its versions.

        >>> LearnerSpec(name="churn", recipe="logistic").contract().numbers_only
        True
        """
        return ModelContract(
            model=self.name,
            task=self.task,
            label_type=self.label_type,
            labels_01=self.labels_01,
            features=self.features,
            numbers_only=self.recipe in NUMERIC_RECIPES,
            default_prediction=self.default_prediction,
            min_examples=self.min_examples,
        )

    @model_validator(mode="after")
    def _defaults_fit_the_contract(self) -> LearnerSpec:
        contract = self.contract()
        for name, value in (
            ("default_label", self.default_label),
            ("default_prediction", self.default_prediction),
        ):
            if value is not None and (problem := contract.label_problem(value)) is not None:
                raise ValueError(f"{name}: {problem}")
        if self.label_type is not None and self.task != "multiclass":
            raise ValueError(
                f"label_type is for multiclass models; a {self.task} model's labels are fixed"
            )
        return self

    @model_validator(mode="before")
    @classmethod
    def _mini_batches_default_to_alert(cls, data: Any) -> Any:
        """A model learned in mini-batches has no default challenger (it learns one example at a
        time): its drift policy is ``alert`` unless the spec names one."""
        if not isinstance(data, dict) or data.get("mini_batch") is None:
            return data
        drift = data.get("drift")
        if drift is None:
            return {**data, "drift": {"policy": "alert"}}
        if isinstance(drift, dict) and "policy" not in drift:
            return {**data, "drift": {**drift, "policy": "alert"}}
        if isinstance(drift, DriftSpec) and "policy" not in drift.model_fields_set:
            return {**data, "drift": drift.model_copy(update={"policy": "alert"})}
        return data

    @model_validator(mode="after")
    def _mini_batches_fit(self) -> LearnerSpec:
        if self.mini_batch is not None:
            if self.checkpoint_every % self.mini_batch:
                raise ValueError(
                    f"checkpoint_every ({self.checkpoint_every}) must be a multiple of mini_batch "
                    f"({self.mini_batch}), so versions fall on whole batches"
                )
            if self.drift.policy == "challenger":
                raise ValueError(
                    "the challenger policy learns one example at a time; use it without mini_batch"
                )
        return self

    @model_validator(mode="after")
    def _one_judge_of_served_versions(self) -> LearnerSpec:
        if self.canary is not None and self.drift.policy == "rollback":
            raise ValueError(
                "canary and the drift policy 'rollback' both judge the served versions' "
                "outcomes; the canary's gate "
                "rolls a worse version back: use it with the policy 'alert' or 'challenger'"
            )
        return self
