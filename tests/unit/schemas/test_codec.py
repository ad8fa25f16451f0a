from __future__ import annotations

import math

import orjson
import pytest

from adaptloop.samples import MALFORMED_RECORDS, SAMPLERS, sample_events
from adaptloop.schemas import OutcomeEvent, PredictionEvent, decode, encode, topic_for
from adaptloop.schemas.codec import MAX_RECORD_BYTES
from adaptloop.schemas.errors import DecodeError
from adaptloop.schemas.topics import OUTCOMES, PREDICTIONS


@pytest.mark.parametrize("event_type", list(SAMPLERS), ids=lambda t: t.__name__)
def test_every_event_type_round_trips_field_for_field(event_type):
    for event in sample_events(event_type, 200, seed=3):
        assert decode(topic_for(event), encode(event)) == event


@pytest.mark.parametrize("event_type", list(SAMPLERS), ids=lambda t: t.__name__)
def test_encode_gives_the_bytes_of_pydantic_model_dump(event_type):
    """encode() reads the instance's fields directly; it must write what model_dump() would."""
    from adaptloop.schemas.codec import _default

    for event in sample_events(event_type, 200, seed=4):
        assert encode(event) == orjson.dumps(event.model_dump(), default=_default)


@pytest.mark.parametrize("kind", list(MALFORMED_RECORDS))
def test_each_bad_record_is_classified(kind):
    with pytest.raises(DecodeError) as caught:
        decode(OUTCOMES, MALFORMED_RECORDS[kind])
    assert caught.value.kind == kind


def test_missing_value_and_oversized_records_are_rejected_before_parsing():
    with pytest.raises(DecodeError, match="has no value") as empty:
        decode(OUTCOMES, None)
    assert empty.value.kind == "empty"
    with pytest.raises(DecodeError) as huge:
        decode(OUTCOMES, b" " * (MAX_RECORD_BYTES + 1))
    assert huge.value.kind == "too_large"


@pytest.mark.parametrize("bad", [b"NaN", b"Infinity", b"1e999"])
def test_non_finite_features_are_invalid(bad):
    record = b'{"decision_id":"d","model":"m","model_version":"v","features":{"x":' + bad + b"}}"
    with pytest.raises(DecodeError) as caught:
        decode(PREDICTIONS, record)
    assert caught.value.kind in {"invalid", "malformed"}


def test_strict_contract_does_not_coerce_or_accept_unknown_fields():
    with pytest.raises(DecodeError, match="label"):
        decode(OUTCOMES, b'{"decision_id": "d", "label": {"a": 1}, "source": "s"}')
    with pytest.raises(DecodeError, match="lable"):
        decode(OUTCOMES, b'{"decision_id": "d", "lable": true, "source": "s"}')
    with pytest.raises(DecodeError, match="needs a label or a reward"):
        decode(OUTCOMES, b'{"decision_id": "d", "source": "s"}')
    with pytest.raises(DecodeError, match="timezone"):
        decode(
            OUTCOMES,
            b'{"decision_id": "d", "label": 1, "source": "s", "timestamp": "2026-01-01T00:00:00"}',
        )


def test_deep_json_is_a_dead_letter_not_a_crash():
    deep = b"[" * 100_000 + b"]" * 100_000
    with pytest.raises(DecodeError) as caught:
        decode(OUTCOMES, deep)
    assert caught.value.kind == "malformed"


def test_feature_types_survive_the_wire_exactly():
    event = PredictionEvent(
        decision_id="d",
        model="m",
        model_version="v",
        features={"i": 1, "f": 1.0, "b": True, "s": "1", "n": None, "tiny": 5e-324},
    )
    back = decode(PREDICTIONS, encode(event))
    assert [type(v) for v in back.features.values()] == [int, float, bool, str, type(None), float]
    assert back.features["tiny"] == 5e-324 and not math.isnan(back.features["f"])


def test_encode_writes_plain_json_other_languages_can_read():
    event = OutcomeEvent(decision_id="d-1", reward=0.5, source="s")
    data = orjson.loads(encode(event))
    assert data["decision_id"] == "d-1" and data["reward"] == 0.5 and data["schema_version"] == 1
