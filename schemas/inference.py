"""Contracts of the inference loop: what a service predicted, and what happened next."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import ConfigDict, Field, StrictBool, StrictStr, model_validator

from adaptloop.schemas.base import Event, EventTime, FeatureValue, FiniteFloat, Label, Name

Probability = Annotated[FiniteFloat, Field(ge=0.0, le=1.0)]


class PredictionEvent(Event):
    """A decision made by a served model, with the features exactly as served.

    >>> from adaptloop.schemas import PredictionEvent
    >>> event = PredictionEvent(decision_id="d-1", model="churn", model_version="v0",
    ...                         features={"age": 42, "plan": "pro"}, prediction=True,
    ...                         probabilities={"True": 0.8, "False": 0.2})
    >>> event.decision_id, event.schema_version
    ('d-1', 1)
    """

    decision_id: Name = Field(
        description="The decision's id; its outcome names it. The record's Kafka key."
    )
    model: Name
    model_version: Name = Field(
        description="What answered: a version id the loop published (model-updates; adaptloop "
        "serve and "
        "ModelClient answer with it), 'default' for the model's declared "
        "default_prediction, or any other name "
        "for a service's own model. Decisions of a version the loop did not publish are "
        "counted as external: "
        "learned from, never scored as a published version's production."
    )
    features: dict[str, FeatureValue]
    prediction: Label | None = None
    probabilities: dict[str, Probability] | None = Field(
        default=None,
        description="Per class, the probability; each key is the class as Python's str() writes "
        "it: 'True' and "
        "'False' for booleans, '3' for the integer 3, the text itself for a string class.",
    )
    score: FiniteFloat | None = None
    action_probability: Probability | None = Field(
        default=None,
        description="Probability with which the served action was chosen (exploration/propensity).",
    )
    tenant: Name | None = None
    user_id: Name | None = None
    session_id: Name | None = None
    fallback: StrictBool = Field(
        default=False,
        description="The prediction is the model's declared default_prediction, not a model's: "
        "no version of it "
        "could serve yet. Such decisions are learned from, never scored as a version's production.",
    )


class OutcomeEvent(Event):
    """The ground truth for a decision: a label, a reward, or both.

    >>> from adaptloop.schemas import OutcomeEvent
    >>> OutcomeEvent(decision_id="d-1", label=False, source="billing").label
    False
    """

    # The rule of _has_truth below, said in the exported JSON Schema too: services in other
    # languages, and the compiled core (which validates with the exported schema), refuse an outcome
    # without truth as well.
    model_config = ConfigDict(
        json_schema_extra={
            "anyOf": [
                {"required": [field], "properties": {field: {"not": {"type": "null"}}}}
                for field in ("label", "reward")
            ]
        }
    )

    decision_id: Name = Field(
        description="The decision's id, as its prediction gave it. The record's Kafka key."
    )
    label: Label | None = Field(
        default=None,
        description="What the right answer was; its type is the model's (models/<model>.outcomes).",
    )
    reward: FiniteFloat | None = None
    source: Name

    @model_validator(mode="after")
    def _has_truth(self) -> OutcomeEvent:
        if self.label is None and self.reward is None:
            raise ValueError("an outcome needs a label or a reward")
        return self


JoinStatus = Literal["joined", "defaulted", "expired", "late", "rejected"]
"""How a decision ended in the join. ``joined`` and ``defaulted`` are learned from;
``expired`` (no outcome within the horizon, policy ``drop``) and ``late`` (the
outcome came after the horizon) are recorded for audits and never learned;
``rejected``: its prediction, or an outcome, broke the model's contract (``reason``
says how; the record itself is a dead letter). An outcome rejected leaves its
decision pending: a later record of the decision says how it ended."""

LEARNABLE: frozenset[str] = frozenset({"joined", "defaulted"})


class TrainingExample(Event):
    """A prediction joined with its outcome: what a learner learns from.

    ``features`` are the features logged with the prediction, never looked up again.
    ``status`` is ``joined`` for a real outcome, ``defaulted`` when the wait
    horizon passed and the model's default label/reward was used, and
    ``expired``/``late``/``rejected`` for decisions recorded but not learned from.
    """

    model: Name
    decision_id: Name
    model_version: Name
    features: dict[str, FeatureValue]
    prediction: Label | None = None
    label: Label | None = None
    reward: FiniteFloat | None = None
    status: JoinStatus = "joined"
    predicted_at: EventTime
    outcome_at: EventTime | None = None
    fallback: StrictBool = False  # the prediction was the model's default_prediction
    reason: StrictStr | None = None  # why a ``rejected`` decision was
