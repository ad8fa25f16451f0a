from __future__ import annotations

import pickle

import pytest
from river import datasets

from adaptloop.learners.recipes import RECIPES, build_model
from adaptloop.learners.serving import read_only
from adaptloop.learners.spec import LearnerSpec
from adaptloop.learners.store import model_bytes

ROWS = list(datasets.Phishing())[:400]


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_read_only_model_predicts_identically_and_never_changes(recipe):
    task = "regression" if recipe in ("linear", "hoeffding_regressor") else "binary"
    model = build_model(LearnerSpec(name="m", recipe=recipe, task=task))
    for x, y in ROWS[:300]:
        model.learn_one(x, float(y) if task == "regression" else y)
    original = pickle.loads(model_bytes(model))
    served = read_only(pickle.loads(model_bytes(model)))
    before = model_bytes(served)
    queries = [{**x, "never_seen": 1.5} for x, _ in ROWS[300:]] + [x for x, _ in ROWS[300:]]
    if task == "regression":
        assert [served.predict_one(x) for x in queries] == [
            original.predict_one(x) for x in queries
        ]
    else:
        assert [served.predict_proba_one(x) for x in queries] == [
            original.predict_proba_one(x) for x in queries
        ]
    assert model_bytes(served) == before
