"""Every model spec is checked before a worker starts a role: one line naming the model, field,
value, choices."""

from __future__ import annotations

import pytest

from adaptloop.learners.recipes import check_spec
from adaptloop.learners.spec import DriftSpec, LearnerSpec
from adaptloop.schemas.errors import ConfigError


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            LearnerSpec(name="churn", recipe="logisitc"),
            (
                "model 'churn': recipe 'logisitc' is unknown; choices: logistic, hoeffding, "
                "linear, "
                "hoeffding_regressor, "
                "or 'module:function' returning a River estimator"
            ),
        ),
        (
            LearnerSpec(name="churn", recipe="linear"),
            (
                "model 'churn': recipe 'linear' is not a classifier, which task 'binary' "
                "needs; choices: logistic, "
                "hoeffding"
            ),
        ),
        (
            LearnerSpec(name="price", task="regression", recipe="hoeffding"),
            (
                "model 'price': recipe 'hoeffding' is not a regressor, which task "
                "'regression' needs; choices: linear, "
                "hoeffding_regressor"
            ),
        ),
        (
            LearnerSpec(name="churn", params={"lrr": 0.1}),
            (
                "model 'churn': params {'lrr': 0.1} do not fit recipe 'logistic': "
                "LogisticRegression.__init__() got an "
                "unexpected keyword argument 'lrr'"
            ),
        ),
        (
            LearnerSpec(name="churn", drift=DriftSpec(detector="ADWN")),
            (
                "model 'churn': drift.detector 'ADWN' is unknown; choices: ADWIN, DDM, "
                "DummyDriftDetector, EDDM, "
                "FHDDM, "
                "HDDMA, HDDMW, KSWIN, NoDrift, PageHinkley"
            ),
        ),
        (
            LearnerSpec(name="churn", drift=DriftSpec(detector_params={"delt": 0.1})),
            (
                "model 'churn': drift.detector_params {'delt': 0.1} do not fit detector "
                "'ADWIN': ADWIN.__init__() "
                "got an "
                "unexpected keyword argument 'delt'"
            ),
        ),
    ],
)
def test_a_spec_that_cannot_be_built_is_one_line_naming_the_field_the_value_and_the_choices(
    spec, message
):
    with pytest.raises(ConfigError) as raised:
        check_spec(spec)
    assert str(raised.value) == message


def test_a_misspelt_metric_names_the_river_metrics():
    with pytest.raises(ConfigError) as raised:
        check_spec(LearnerSpec(name="churn", metrics=["Accuracy", "Acuracy"]))
    message = str(raised.value)
    assert message.startswith(
        "model 'churn': metrics has 'Acuracy', not a River metric; choices: Accuracy, "
    )
    assert {"LogLoss", "ROCAUC", "MAE"} <= set(message.partition("choices: ")[2].split(", "))
    assert "\n" not in message


def test_a_recipe_that_cannot_be_imported_is_named():
    with pytest.raises(
        ConfigError,
        match=r"^recipe 'no_such_module:build' of model 'churn' "
        r"cannot be imported: ",
    ):
        check_spec(LearnerSpec(name="churn", recipe="no_such_module:build"))


@pytest.mark.parametrize(
    "spec",
    [
        LearnerSpec(name="a"),
        LearnerSpec(
            name="b",
            recipe="hoeffding",
            metrics=["Accuracy", "F1"],
            drift=DriftSpec(detector="DDM"),
        ),
        LearnerSpec(name="c", task="multiclass", recipe="hoeffding"),
        LearnerSpec(
            name="d", task="regression", recipe="linear", metrics=["MAE"], params={"l2": 0.1}
        ),
        LearnerSpec(name="e", recipe="tests.recipes:forest"),
    ],
)
def test_specs_that_can_be_built_pass(spec):
    check_spec(spec)
