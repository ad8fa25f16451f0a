"""The compiled core and pydantic agree on every record of the join's inputs: accept or reject, and
the values.

The core (``adaptloop._core``) decodes predictions and outcomes with the JSON Schema their pydantic
contracts export; pydantic's own validator, with the same size limit, is the reference. Each record
below goes through both: the same verdict, and for an accepted one the same fields with the same
Python types (``1`` an int, ``1.0`` a float), the same times with the same offsets, and the same
bytes once encoded. The records: every sample event, the malformed records of the samples, the fuzz
test's strategies (contract-valid extreme decisions and hostile bytes), the fault tests' poison
records, and Hypothesis' JSON objects built near the contracts' edges (names at their length limits
and with control characters, 64-bit integers and beyond, probabilities out of range, times of every
shape and zone, unknown and missing fields). The join's raw path, which keeps an accepted record
as the bytes ``encode`` writes of its event (written by the core, with no Python object between),
agrees too: the same bytes, the same refusals in the same words.
"""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from adaptloop._core import ContractError
from adaptloop.samples import MALFORMED_RECORDS, sample_events
from adaptloop.schemas import OutcomeEvent, PredictionEvent
from adaptloop.schemas.base import Event
from adaptloop.schemas.codec import (
    COMPILED,
    MAX_RECORD_BYTES,
    checked_size,
    classify_compiled,
    compiled_contract,
    decode,
    encode,
)
from adaptloop.schemas.errors import DecodeError
from adaptloop.schemas.topics import OUTCOMES, PREDICTIONS, Topic
from tests.integration.test_fuzz import decisions, hostile_bytes
from tests.integration.test_hostile_input import _hostile

TOPICS = {PREDICTIONS.name: PREDICTIONS, OUTCOMES.name: OUTCOMES}


def by_pydantic(topic: Topic, data: bytes | None) -> Event | None:
    """The reference: the size limit, then the contract's own validator (what codec.decode did
    before)."""
    try:
        return topic.event.__pydantic_validator__.validate_json(checked_size(topic, data))  # type: ignore[no-any-return]
    except (ValidationError, DecodeError):
        return None


def by_core(topic: Topic, data: bytes | None) -> Event | DecodeError:
    try:
        return decode(topic, data)
    except DecodeError as error:
        return error


def typed(value: Any) -> Any:
    """A value with the type of each part: True, 1 and 1.0 differ; a time's offset counts."""
    if isinstance(value, dict):
        return {key: typed(item) for key, item in value.items()}
    if isinstance(value, datetime):
        return ("datetime", value.isoformat(), value.utcoffset())
    return (type(value).__name__, value)


def laxer_in_pydantic(data: bytes | None) -> bool:
    """Where pydantic takes what its own exported schema refuses, and the core (validating with that
    schema) refuses it too: a schema_version of ``true`` or ``1.0`` (pydantic's ``Literal[1]`` reads
    them as 1, as ``True == 1``; the schema says ``const: 1``, ``type: integer``) and a space for
    the ``T`` of a timestamp (the schema's pattern requires the ``T``:
    tests/unit/schemas/test_contracts.py). Services in other languages validate with the schema: the
    core is now as strict as what they were told."""
    try:
        sent = json.loads(data or b"")
    except (ValueError, RecursionError):
        return False
    if not isinstance(sent, dict):
        return False
    timestamp = sent.get("timestamp")
    return isinstance(sent.get("schema_version"), bool | float) or (
        isinstance(timestamp, str) and len(timestamp) > 10 and timestamp[10] == " "
    )


def assert_agree(topic: Topic, data: bytes | None) -> None:
    expected, got = by_pydantic(topic, data), by_core(topic, data)
    if laxer_in_pydantic(data):
        expected = None
    if expected is None:
        assert isinstance(got, DecodeError), (
            f"pydantic refused, the core accepted {data!r:.300}: {got!r}"
        )
        with pytest.raises(ContractError) as refused:
            compiled_contract(topic).encode_valid(data, MAX_RECORD_BYTES, 0.0)
        said = classify_compiled(topic, data, *refused.value.args)
        assert (said.kind, said.reason) == (got.kind, got.reason)
        return
    assert not isinstance(got, DecodeError), (
        f"pydantic accepted, the core refused {data!r:.300}: {got}"
    )
    sent = json.loads(data or b"")
    names = [
        name for name in topic.event.model_fields if name != "timestamp" or "timestamp" in sent
    ]
    assert [typed(getattr(got, name)) for name in names] == [
        typed(getattr(expected, name)) for name in names
    ]
    if "timestamp" in sent:
        assert encode(got) == encode(expected)
    else:  # the default: now, as pydantic makes it
        assert abs((got.timestamp - expected.timestamp).total_seconds()) < 60
    assert_raw_agrees(topic, data, expected, "timestamp" in sent)


def assert_raw_agrees(topic: Topic, data: bytes | None, expected: Event, timed: bool) -> None:
    """The join's raw path (``JoinCore.process_raw``) keeps the bytes ``encode`` writes of the
    event pydantic makes: every field, in order, the defaults filled in (``now`` for a time left
    out)."""
    now = datetime.now(UTC).timestamp()
    raw = compiled_contract(topic).encode_valid(data, MAX_RECORD_BYTES, now)
    if timed:
        assert raw == encode(expected)
        return
    written, reference = orjson.loads(raw), orjson.loads(encode(expected))
    assert datetime.fromisoformat(written.pop("timestamp")).timestamp() == pytest.approx(now)
    del reference["timestamp"]
    assert list(written) == list(reference) and written == reference


def test_the_core_decodes_the_join_inputs():
    assert frozenset(TOPICS) == COMPILED


@pytest.mark.parametrize("event_type", [PredictionEvent, OutcomeEvent], ids=lambda t: t.__name__)
def test_every_sample_event(event_type):
    topic = PREDICTIONS if event_type is PredictionEvent else OUTCOMES
    for event in sample_events(event_type, 500, seed=7):
        data = encode(event)
        assert_agree(topic, data)
        assert decode(topic, data) == event


@pytest.mark.parametrize("kind", list(MALFORMED_RECORDS))
def test_the_malformed_samples_are_refused_with_the_same_kind(kind):
    assert_agree(OUTCOMES, MALFORMED_RECORDS[kind])
    with pytest.raises(DecodeError) as caught:
        decode(OUTCOMES, MALFORMED_RECORDS[kind])
    assert caught.value.kind == kind


def test_the_hostile_input_tests_records():
    """test_hostile_input.py's shapes (random bytes, 1 MB, deep JSON, NaN, 1e999, schema_version 7,
    no key)."""
    rng = random.Random(5)
    for k in range(44):
        name, value, kind = _hostile(rng, k)
        if name in TOPICS:
            assert_agree(TOPICS[name], value)
            with pytest.raises(DecodeError) as caught:
                decode(TOPICS[name], value)
            assert caught.value.kind == kind, (value[:200], caught.value)


def test_the_poison_records():
    """test_poison_records.py's (a time in the year 0 once in UTC, a 998 KB decision) and
    test_poisoned_labels.py's (a string label: valid for the topic, refused by the model's
    contract)."""
    now = datetime.now(UTC)
    big = PredictionEvent(
        decision_id="big", model="m", model_version="v0", features={"note": "x" * 997_800}
    )
    records = [
        (
            PREDICTIONS,
            (
                b'{"decision_id":"year-0","model":"m","model_version":"v0","features":{"x":1.0},'
                b'"timestamp":"0001-01-01T00:00:00+23:59"}'
            ),
        ),
        (PREDICTIONS, encode(big)),
        (PREDICTIONS, encode(big.model_copy(update={"features": {"note": "x" * 1_000_000}}))),
        (OUTCOMES, b'{"decision_id":"big","label":true,"source":"s"}'),
        (
            OUTCOMES,
            orjson.dumps(
                {"decision_id": "d1", "label": "true", "source": "other", "timestamp": now}
            ),
        ),
    ]
    for topic, data in records:
        assert_agree(topic, data)


@settings(
    max_examples=300, derandomize=True, deadline=None, suppress_health_check=list(HealthCheck)
)
@given(decisions())
def test_the_fuzz_tests_decisions(decision):
    _, (prediction, outcome) = decision
    assert_agree(PREDICTIONS, encode(prediction))
    assert_agree(OUTCOMES, encode(outcome))


@settings(
    max_examples=300, derandomize=True, deadline=None, suppress_health_check=list(HealthCheck)
)
@given(st.sampled_from([PREDICTIONS, OUTCOMES]), hostile_bytes)
def test_the_fuzz_tests_hostile_bytes(topic, data):
    assert_agree(topic, data)


# Hypothesis' own records, near the contracts' edges.
names = st.one_of(
    st.text(min_size=0, max_size=3),
    st.text(st.characters(codec="utf-8"), min_size=254, max_size=258),
    st.sampled_from(
        ["d-1", "churn", "v0", "a\x00b", "tab\there", "\x7f", "é", "\u2028", "x" * 256, "x" * 257]
    ),
)
numbers = st.one_of(
    st.integers(-(2**64), 2**64),
    st.sampled_from([2**63 - 1, 2**63, -(2**63), -(2**63) - 1, 10**30, 0, 1]),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(
        [0.0, -0.0, 1.0, 0.5, 1.0000000000000002, -1e-300, 5e-324, 1.7976931348623157e308]
    ),
)
times = st.one_of(
    st.datetimes(datetime(1, 1, 1), datetime(9999, 12, 31), timezones=st.timezones()).map(
        datetime.isoformat
    ),
    st.sampled_from(
        [
            "2026-01-01T00:00:00Z",
            "2026-01-01t00:00:00z",
            "2026-01-01 00:00:00Z",
            "2026-01-01T00:00:00",
            "2026-01-01T00:00:00.123456789+01:00",
            "2026-02-29T00:00:00Z",
            "2024-02-29T00:00:00Z",
            "2026-01-01T24:00:00Z",
            "2026-01-01T23:59:60Z",
            "2026-01-01T00:00:00+24:00",
            "2026-01-01T00:00:00-23:59",
            "1970-01-01T00:00:00Z",
            "1969-12-31T23:59:59.999999Z",
            "1970-01-01T00:30:00+01:00",
            "2199-12-31T23:59:59.999999Z",
            "2200-01-01T00:00:00Z",
            "2200-01-01T00:30:00+01:00",
            "2026-01-01",
            "",
        ]
    ),
)
scalars = st.one_of(st.none(), st.booleans(), numbers, names)
values = st.one_of(
    scalars, times, st.dictionaries(names, scalars, max_size=4), st.lists(scalars, max_size=2)
)
FIELDS = sorted({*PredictionEvent.model_fields, *OutcomeEvent.model_fields})


@st.composite
def near_contract(draw: st.DrawFn) -> dict[str, Any]:
    """A valid event's fields, then a few of them replaced, dropped or added."""
    base: dict[str, Any] = orjson.loads(
        encode(
            draw(st.sampled_from(list(sample_events(PredictionEvent, 20, seed=1))))
            if draw(st.booleans())
            else draw(st.sampled_from(list(sample_events(OutcomeEvent, 20, seed=1))))
        )
    )
    for _ in range(draw(st.integers(0, 3))):
        name = draw(st.sampled_from([*FIELDS, "extra"]))
        action = draw(st.sampled_from(["replace", "drop", "time", "feature"]))
        if action == "drop":
            base.pop(name, None)
        elif action == "time":
            base["timestamp"] = draw(times)
        elif action == "feature":
            base["features"] = draw(st.dictionaries(names, values, max_size=4))
        else:
            base[name] = draw(values)
    return base


@settings(
    max_examples=1500, derandomize=True, deadline=None, suppress_health_check=list(HealthCheck)
)
@given(st.sampled_from([PREDICTIONS, OUTCOMES]), near_contract())
def test_hypothesis_events_near_the_contracts_edges(topic, fields):
    # (orjson has no integers past 64 bits)
    assert_agree(topic, json.dumps(fields, ensure_ascii=False).encode())


@pytest.mark.parametrize("version", [b"true", b"1.0", b"1e0"])
def test_the_core_refuses_a_schema_version_that_is_not_the_integer_1(version):
    data = b'{"schema_version":%s,"decision_id":"d","label":1,"source":"s"}' % version
    assert by_pydantic(OUTCOMES, data) is not None  # pydantic's Literal[1]: True == 1 == 1.0
    with pytest.raises(DecodeError) as caught:
        decode(OUTCOMES, data)
    assert caught.value.kind == "unsupported_schema_version"


@pytest.mark.parametrize("topic", [PREDICTIONS, OUTCOMES], ids=lambda t: t.name)
def test_the_size_limit_is_the_records(topic):
    data = (
        b'{"decision_id":"d","label":1,"source":"s","model":"m","model_version":"v","features":{}}'
    )
    padded = data[:-1] + b" " * (MAX_RECORD_BYTES - len(data)) + b"}"
    assert len(padded) == MAX_RECORD_BYTES
    assert_agree(topic, padded)
    with pytest.raises(DecodeError) as caught:
        decode(topic, padded + b" ")
    assert caught.value.kind == "too_large"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.floats(allow_nan=False, allow_infinity=False), min_size=1, max_size=12))
def test_every_float_is_written_as_orjson_writes_it(values):
    """The raw path writes features' floats itself: the shortest digits, plain or with an exponent
    where orjson (not Python's repr) puts one."""
    features = {f"f{i}": value for i, value in enumerate(values)}
    data = orjson.dumps(
        {
            "timestamp": "2026-01-01T00:00:00.5-05:30",
            "decision_id": "d",
            "model": "m",
            "model_version": "v",
            "features": features,
        }
    )
    assert_agree(PREDICTIONS, data)
