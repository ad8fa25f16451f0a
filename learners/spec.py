"""What a learner is: its model name, task, River pipeline, metrics, checkpoint cadence and join rules."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr

Task = Literal["binary", "multiclass", "regression"]


class LearnerSpec(BaseModel):
    """The declaration of one online model.

    ``recipe`` names a pipeline from :mod:`learners.recipes`, or ``"module:function"``
    returning your own River estimator.

    >>> spec = LearnerSpec(name="churn", task="binary", recipe="logistic", checkpoint_every=500)
    >>> spec.metrics, spec.horizon_seconds, spec.on_missing
    (['Accuracy', 'LogLoss'], 3600.0, 'drop')
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: StrictStr = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    task: Task = "binary"
    recipe: StrictStr = "logistic"
    params: dict[StrictStr, StrictFloat | StrictInt | StrictStr | StrictBool] = Field(default_factory=dict)
    metrics: list[StrictStr] = Field(default_factory=lambda: ["Accuracy", "LogLoss"])
    checkpoint_every: int = Field(1000, ge=1, description="Publish a version every N learned examples...")
    checkpoint_seconds: float | None = Field(30.0, gt=0, description="...or after this long with unpublished learning.")
    horizon_seconds: float = Field(3600.0, gt=0, description="How long the join waits for an outcome (event time).")
    on_missing: Literal["drop", "default"] = Field("drop", description="An outcome that never came: drop, or learn the default.")
    default_label: StrictBool | StrictInt | StrictFloat | StrictStr | None = None
    default_reward: StrictFloat | None = None
    duplicates: Literal["first", "last"] = Field("first", description="Which of repeated predictions/outcomes counts.")
