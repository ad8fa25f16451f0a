"""The fast reader of training examples agrees with the contract: every kind of example round-trips
exactly, and a record in another shape is a dead letter's DecodeError, never a crash."""

from __future__ import annotations

import json
import pickle
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adaptloop.schemas.codec import decode, encode
from adaptloop.schemas.errors import DecodeError
from adaptloop.schemas.inference import TrainingExample
from adaptloop.schemas.topics import TRAINING_EXAMPLES
from adaptloop.schemas.trusted import TrainingRecord, as_event, decode_training

names = st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=40)
finite = st.floats(allow_nan=False, allow_infinity=False)
int64 = st.integers(-(2**63), 2**63 - 1)
labels = st.one_of(st.booleans(), int64, finite, st.text(max_size=20))
times = st.datetimes(
    min_value=datetime(1971, 1, 1),
    max_value=datetime(2199, 1, 1),
    timezones=st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30))]),
)
features = st.dictionaries(
    st.text(max_size=12),
    st.one_of(finite, st.booleans(), int64, st.text(max_size=12), st.none()),
    max_size=8,
)


@st.composite
def training_examples(draw: st.DrawFn) -> TrainingExample:
    status = draw(st.sampled_from(["joined", "defaulted", "expired", "late", "rejected"]))
    return TrainingExample(
        model=draw(names),
        decision_id=draw(names),
        model_version=draw(names),
        features=draw(features),
        prediction=draw(st.none() | labels),
        label=draw(st.none() | labels),
        reward=draw(st.none() | finite),
        status=status,
        predicted_at=draw(times),
        outcome_at=draw(st.none() | times),
        timestamp=draw(times),
        fallback=draw(st.booleans()),
        reason=draw(st.none() | st.text(max_size=30)),
    )


def _typed(value: Any) -> Any:
    """A value with its exact type (True, 1 and 1.0 are equal in Python, not here)."""
    if isinstance(value, dict):
        return {key: _typed(item) for key, item in value.items()}
    if isinstance(value, datetime):
        return (value.isoformat(), type(value))
    return (value, type(value))


@settings(max_examples=300, deadline=None)
@given(training_examples())
def test_every_kind_of_example_round_trips_exactly(example: TrainingExample) -> None:
    data = encode(example)
    record = decode_training(data)
    contract = decode(TRAINING_EXAMPLES, data)
    for field in TrainingExample.model_fields:
        assert _typed(getattr(record, field)) == _typed(getattr(contract, field)), field
    assert as_event(record) == contract == example
    assert encode(as_event(record)) == data  # the same bytes again: nothing lost, nothing reordered
    assert pickle.loads(pickle.dumps(record)) == record  # a pending mini-batch is checkpointed


def _example(raw: str | None = None, **changes: Any) -> bytes:
    """A valid example's JSON with ``changes``; ``raw``: JSON text written where a change says
    ``"RAW"``."""
    fields = TrainingExample(
        model="m",
        decision_id="d",
        model_version="v",
        features={"x": 1.0},
        label=True,
        predicted_at=datetime(2026, 1, 1, tzinfo=UTC),
    ).model_dump(mode="json")
    fields.update(changes)
    text = json.dumps(fields)
    return (text.replace('"RAW"', raw) if raw is not None else text).encode()


@pytest.mark.parametrize(
    ("data", "kind", "words"),
    [
        (None, "empty", "no value"),
        (b"{not json", "malformed", "not valid JSON"),
        (b"[1, 2]", "invalid", "Expected `object`"),
        (_example(features=[1, 2]), "invalid", "$.features"),
        (_example(features={"x": [1]}), "invalid", "$.features[...]"),
        # an infinity: never reaches a model
        (_example("1e999", features={"x": "RAW"}), "invalid", "$.features[...]"),
        (_example(str(2**64), features={"x": "RAW"}), "invalid", "$.features[...]"),
        (_example(label={"a": 1}), "invalid", "$.label"),
        (_example(status="learned"), "invalid", "$.status"),
        (_example(predicted_at="2026-01-01T00:00:00"), "invalid", "$.predicted_at"),  # no time zone
        (_example(decision_id=""), "invalid", "$.decision_id"),
        (_example(decision_id="x" * 257), "invalid", "$.decision_id"),
        (_example(fallback="yes"), "invalid", "$.fallback"),
        (_example(extra=1), "invalid", "unknown field `extra`"),
        (_example(schema_version=2), "unsupported_schema_version", "schema_version"),
        (b" " * 1_000_001, "too_large", "1000001 bytes"),
    ],
)
def test_a_record_in_another_shape_is_a_decode_error(
    data: bytes | None, kind: str, words: str
) -> None:
    with pytest.raises(DecodeError) as error:
        decode_training(data)
    assert error.value.kind == kind
    assert words in error.value.reason


def test_the_struct_has_the_contracts_fields_and_defaults() -> None:
    import msgspec

    fields = {field.name: field for field in msgspec.structs.fields(TrainingRecord)}
    assert list(fields) == list(TrainingExample.model_fields)
    for name, info in TrainingExample.model_fields.items():
        if not info.is_required() and info.default_factory is None:
            assert fields[name].default == info.default, name
