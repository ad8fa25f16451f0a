from __future__ import annotations

import jsonschema
import orjson
import pytest
from pydantic import ValidationError

from adaptloop.samples import SAMPLERS, sample_events
from adaptloop.schemas import (
    AgentFeedbackEvent,
    OutcomeEvent,
    PreferenceEvent,
    decode,
    encode,
    topic_for,
    topic_named,
)
from adaptloop.schemas.errors import ConfigError, DecodeError
from adaptloop.schemas.export import export_json_schemas, json_schemas
from adaptloop.schemas.topics import ALL_TOPICS, OUTCOMES, PREDICTIONS


def test_every_event_type_has_exactly_one_topic_and_a_key_field():
    public = [topic for topic in ALL_TOPICS if topic.repartition_of is None]
    assert len({topic.event for topic in public}) == len(public) == len(SAMPLERS)
    for topic in ALL_TOPICS:
        assert topic.key in topic.event.model_fields
        assert topic_named(topic.full_name("p."), "p.") is topic
        # The join's repartition topics carry an input's events; services send to the input.
        assert topic_for(topic.event) is (
            topic_named(topic.repartition_of) if topic.repartition_of else topic
        )
        assert topic.copartitioned == topic_for(topic.event).copartitioned


def test_predictions_and_outcomes_are_copartitioned_by_decision_id():
    assert PREDICTIONS.copartitioned and OUTCOMES.copartitioned
    assert PREDICTIONS.key == OUTCOMES.key == "decision_id"


def test_unknown_topic_names_the_known_ones():
    with pytest.raises(ConfigError, match="known: agent-feedback"):
        topic_named("nope")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kind": "thumbs", "value": 3.0}, "thumbs"),
        ({"kind": "thumbs", "value": 0.0}, "1 or true"),  # zero is neither up nor down
        ({"kind": "thumbs"}, "1 or true"),
        ({"kind": "rating"}, "needs a number"),
        ({"kind": "rating", "value": True}, "needs a number"),
        ({"kind": "comment"}, "needs a comment"),
        ({"kind": "step", "step": -1}, "greater than or equal"),
        ({"kind": "step", "cost": -0.5}, "greater than or equal"),
        ({"kind": "step", "tokens": 2**63}, "less than or equal to 9223372036854775807"),
    ],
)
def test_agent_feedback_rejects_out_of_range_values(kwargs, message):
    base = {
        "trace_id": "t",
        "run_id": "r",
        "session_id": "s",
        "agent": "a",
        "variant": "v",
        "step": 0,
    }
    with pytest.raises(ValidationError, match=message):
        AgentFeedbackEvent(**{**base, **kwargs})


def test_integers_are_64_bit_so_every_reader_can_hold_them():
    """JSON allows any number of digits; orjson and Parquet's int64 do not (a larger one crashed the
    join)."""

    def prediction(x: int) -> bytes:
        return (
            b'{"decision_id": "d", "model": "m", "model_version": "v", "features": {"x": '
            b'%d}, "prediction": %d}'
        ) % (
            x,
            x,
        )

    for x in (2**63 - 1, -(2**63)):
        assert decode(PREDICTIONS, prediction(x)).features == {"x": x}
        assert orjson.loads(encode(decode(PREDICTIONS, prediction(x))))["prediction"] == x
    for x in (2**63, -(2**63) - 1):  # a number, read as a float (as JavaScript reads it)
        assert decode(PREDICTIONS, prediction(x)).features == {"x": float(x)}
        assert orjson.loads(encode(decode(PREDICTIONS, prediction(x))))["features"]["x"] == float(x)
    with pytest.raises(DecodeError, match="invalid"):  # beyond any float
        decode(PREDICTIONS, prediction(10**400))


def test_preference_needs_two_different_variants():
    with pytest.raises(ValidationError, match="must differ"):
        PreferenceEvent(context={}, chosen="a", rejected="a", annotator="u")


def test_events_are_immutable_facts():
    event = next(sample_events(PreferenceEvent, 1))
    with pytest.raises(ValidationError):
        event.chosen = "z"


@pytest.mark.parametrize("event_type", list(SAMPLERS), ids=lambda t: t.__name__)
def test_encoded_events_validate_against_the_exported_json_schema(event_type):
    schema = json_schemas()[topic_for(event_type).name]
    validator = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())
    for event in sample_events(event_type, 50):
        validator.validate(orjson.loads(encode(event)))


def test_json_schema_rejects_what_the_decoder_rejects():
    schema = json_schemas()["outcomes"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(
            {"decision_id": "d", "label": True, "source": "s", "schema_version": 2}, schema
        )
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"label": True, "source": "s"}, schema)


def test_export_writes_one_file_per_topic_and_a_manifest_with_keys_and_partitioner(tmp_path):
    paths = export_json_schemas(tmp_path)
    public = [t for t in ALL_TOPICS if t.repartition_of is None]
    assert sorted(p.name for p in paths) == sorted(
        [*(f"{t.name}.schema.json" for t in public), "topics.json"]
    )
    outcomes = orjson.loads((tmp_path / "outcomes.schema.json").read_bytes())
    assert outcomes["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert (
        "decision_id" in outcomes["required"]
        and "key: the UTF-8 bytes of `decision_id`" in outcomes["description"]
    )
    manifest = {
        entry["topic"]: entry for entry in orjson.loads((tmp_path / "topics.json").read_bytes())
    }
    assert manifest["predictions"] == {
        "topic": "predictions",
        "schema": "predictions.schema.json",
        "key": "decision_id",
        "key_encoding": "UTF-8",
        "partitioner": "murmur2",
        "compacted": False,
        "doc": PREDICTIONS.doc,
    }


def test_schemas_hold_standard_keywords_and_descriptions_without_doctests():
    text = orjson.dumps(json_schemas()).decode()
    assert "x-kafka" not in text and ">>>" not in text and "``" not in text


@pytest.mark.parametrize(
    ("timestamp", "valid"),
    [
        ("2026-11-24T08:00:00Z", True),
        ("2026-11-24T08:00:00.25+01:00", True),
        # no zone: the contract refuses it, and so does the schema's pattern
        ("2026-11-24T08:00:00", False),
        ("2026-11-24 08:00:00Z", False),
    ],
)
def test_a_timestamp_without_a_zone_is_refused_by_the_schema_alone(timestamp, valid):
    record = {"decision_id": "d", "label": True, "source": "s", "timestamp": timestamp}
    schema = json_schemas()["outcomes"]
    # No format checker: the pattern alone decides, as in a validator that does not check formats.
    assert jsonschema.Draft202012Validator(schema).is_valid(record) is valid
    try:
        OutcomeEvent.model_validate_json(orjson.dumps(record))
        accepted = True
    except ValidationError:
        accepted = False
    assert accepted or not valid  # the schema never takes what the contract refuses
    # of these, the contract refuses the one without a zone
    assert accepted is (timestamp != "2026-11-24T08:00:00")


def test_each_models_schema_refuses_what_its_contract_refuses(tmp_path):
    import jsonschema

    from adaptloop.learners.spec import LearnerSpec

    contracts = [
        LearnerSpec(name="churn", recipe="logistic").contract(),
        LearnerSpec(
            name="plan",
            task="multiclass",
            label_type="str",
            recipe="hoeffding",
            features={"age": "number", "tier": "category"},
        ).contract(),
    ]
    paths = {path.name: path for path in export_json_schemas(tmp_path, contracts)}
    churn_outcomes = orjson.loads(paths["churn.outcomes.schema.json"].read_bytes())
    jsonschema.validate({"decision_id": "d", "label": True, "source": "s"}, churn_outcomes)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"decision_id": "d", "label": "true", "source": "s"}, churn_outcomes)
    churn_predictions = orjson.loads(paths["churn.predictions.schema.json"].read_bytes())
    with pytest.raises(jsonschema.ValidationError):  # a numbers-only model
        jsonschema.validate(
            {
                "decision_id": "d",
                "model": "churn",
                "model_version": "v",
                "features": {"plan": "pro"},
            },
            churn_predictions,
        )
    plan_predictions = orjson.loads(paths["plan.predictions.schema.json"].read_bytes())
    jsonschema.validate(
        {
            "decision_id": "d",
            "model": "plan",
            "model_version": "v",
            "features": {"age": 41, "tier": "gold"},
        },
        plan_predictions,
    )
    with pytest.raises(jsonschema.ValidationError):  # a feature the contract does not declare
        jsonschema.validate(
            {
                "decision_id": "d",
                "model": "plan",
                "model_version": "v",
                "features": {"age": 41, "city": "Lyon"},
            },
            plan_predictions,
        )
