"""Model specs as events: checked into learner specs, refused in one line, and what each change
does."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from adaptloop.learners.catalog import (
    as_learned,
    catalogue,
    change_of,
    refuse_recipe_change,
    spec_of,
)
from adaptloop.learners.spec import DriftSpec, LearnerSpec
from adaptloop.learners.watch import ModelWatch
from adaptloop.schemas.codec import decode, encode
from adaptloop.schemas.errors import ConfigError
from adaptloop.schemas.system import ModelSpecRecord
from adaptloop.schemas.topics import MODEL_SPECS, topic_for
from tests.unit.learners.test_promotion import Says, block, feed


def record(model: str = "churn", status: str = "active", **spec: Any) -> ModelSpecRecord:
    return ModelSpecRecord(model=model, status=status, spec={"name": model, **spec}, actor="ops")  # type: ignore[arg-type]


def test_a_spec_record_round_trips_on_its_compacted_topic_keyed_by_model():
    declared = record(
        recipe="hoeffding", params={"grace_period": 50}, drift={"policy": "challenger"}
    )
    assert topic_for(declared) is MODEL_SPECS and MODEL_SPECS.compacted
    assert MODEL_SPECS.key_of(declared) == b"churn"
    assert decode(MODEL_SPECS, encode(declared)) == declared
    spec = spec_of(declared)
    assert (spec.recipe, spec.params, spec.drift.policy) == (
        "hoeffding",
        {"grace_period": 50},
        "challenger",
    )


def test_a_record_with_a_bad_model_name_or_status_is_refused_by_its_contract():
    with pytest.raises(ValidationError, match="model"):
        ModelSpecRecord(model="churn model", actor="ops")
    with pytest.raises(ValidationError, match="status"):
        ModelSpecRecord(model="churn", status="gone", actor="ops")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            {"recipe": "logisitc"},
            "model 'churn': recipe 'logisitc' is unknown; choices: logistic, hoeffding",
        ),
        (
            {"checkpoint_evry": 10},
            "model 'churn': checkpoint_evry = 10: Extra inputs are not permitted",
        ),
        (
            {"drift": {"policy": "rollbak"}},
            "model 'churn': drift.policy = 'rollbak': Input should be 'alert'",
        ),
        (
            {"checkpoint_every": 0},
            "model 'churn': checkpoint_every = 0: Input should be greater than or equal to 1",
        ),
        (
            {"name": "other"},
            "the spec of model 'churn' is named 'other': a record declares its own model",
        ),
        (
            {"metrics": ["Acuracy"]},
            "model 'churn': metrics has 'Acuracy', not a River metric; choices: Accuracy",
        ),
    ],
)
def test_a_bad_spec_is_refused_in_one_line_naming_the_field(fields: dict[str, Any], message: str):
    with pytest.raises(ConfigError) as raised:
        spec_of(ModelSpecRecord(model="churn", spec=fields, actor="ops"))
    assert str(raised.value).startswith(message)
    assert "\n" not in str(raised.value)


def test_the_join_checks_the_fields_without_building_the_model():
    assert spec_of(record(recipe="logisitc"), buildable=False).recipe == "logisitc"
    with pytest.raises(ConfigError, match="checkpoint_evry"):
        spec_of(record(checkpoint_evry=10), buildable=False)


def test_each_change_is_named_by_what_it_does_to_the_running_model():
    old = spec_of(record())
    assert change_of(None, record(), old) == "added"
    assert change_of(old, record(), spec_of(record())) == "unchanged"
    assert change_of(old, record(), spec_of(record(checkpoint_every=10))) == "updated"
    assert change_of(old, record(), spec_of(record(drift={"policy": "rollback"}))) == "updated"
    assert change_of(old, record(), spec_of(record(recipe="hoeffding"))) == "recipe"
    assert change_of(old, record(), spec_of(record(params={"l2": 0.1}))) == "recipe"
    assert change_of(old, record(status="retired"), None) == "retired"
    assert change_of(None, record(status="retired"), None) == "unchanged"


def test_a_recipe_change_keeps_the_learned_model_under_the_new_settings():
    new = spec_of(record(recipe="hoeffding", checkpoint_every=10))
    effective = as_learned(new, LearnerSpec(name="churn"))
    assert (effective.recipe, effective.checkpoint_every) == ("logistic", 10)
    assert refuse_recipe_change(LearnerSpec(name="churn"), new) is None
    assert "is a binary model; a regression one is no challenger" in (
        refuse_recipe_change(
            LearnerSpec(name="churn"), spec_of(record(task="regression", recipe="linear"))
        )
        or ""
    )


def test_the_catalogue_is_the_latest_valid_record_over_the_seeds():
    seeds = {"a": LearnerSpec(name="a"), "b": LearnerSpec(name="b")}
    records = [
        record("a", checkpoint_every=10),
        record("c", recipe="hoeffding"),
        record("a", recipe="logisitc"),  # an operator's typo: "a" keeps the spec before it
        record("b", status="retired"),
    ]
    specs, retired = catalogue(seeds, records)
    assert sorted(specs) == ["a", "c"] and retired == {"b"}
    assert specs["a"].checkpoint_every == 10 and specs["c"].recipe == "hoeffding"
    specs, retired = catalogue(seeds, [*records, record("b", checkpoint_every=7)])
    assert specs["b"].checkpoint_every == 7 and retired == set()


def spec_challenger(**drift: Any) -> tuple[ModelWatch, LearnerSpec]:
    new = LearnerSpec(name="m", recipe="hoeffding", drift=DriftSpec(data=False, **drift))
    watch = ModelWatch(as_learned(new, LearnerSpec(name="m")))
    # the same spec: the same challenger
    assert watch.challenge_with(new) and not watch.challenge_with(new)
    assert watch.challenger is not None
    watch.challenger.model = Says(True)  # type: ignore[assignment]
    return watch, new


def test_a_spec_challenger_that_wins_is_promoted_with_its_spec_and_no_challenger_is_kept():
    watch, new = spec_challenger(challenger_window=10, challenger_confidence=0.999)
    promotions = feed(watch, Says(True), [(True, False)] * 20)
    assert [index for index, _ in promotions] == [12]  # the 13th example, as for a drift challenger
    assert [(a.kind, a.spec) for a in watch.actions] == [("promotion", new)]
    assert watch.actions[0].note.startswith(
        "the spec's new model promoted: paired sign test over 13 examples"
    )
    assert watch.challenger is None


def test_a_spec_challenger_not_found_worse_is_promoted_after_challenger_examples():
    watch, new = spec_challenger(challenger_examples=400)
    promotions = feed(watch, Says(True), block(wins=6, losses=6) * 10)
    assert [index for index, _ in promotions] == [399]
    assert watch.actions[0].spec == new
    assert watch.actions[0].note.startswith(
        "the spec's new model promoted, not found worse after 400 examples"
    )


def test_a_spec_challenger_found_worse_is_never_promoted_nor_dropped():
    watch, _ = spec_challenger(challenger_examples=400)
    assert feed(watch, Says(True), block(wins=0, losses=12) * 20) == []
    assert (
        watch.actions == []
        and watch.challenger is not None
        and watch.challenger.test.compared == 800
    )


def test_a_spec_challenger_survives_a_policy_without_challengers():
    watch, new = spec_challenger()
    watch.follow(new.model_copy(update={"recipe": "logistic", "checkpoint_every": 5}))
    assert watch.challenger is not None and watch.challenger.origin == "spec"
