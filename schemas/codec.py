"""Bytes <-> events: orjson on the way out; on the way in, the compiled core for the join's inputs
(predictions and outcomes) and pydantic's strict JSON parser for every other topic.

The core (``adaptloop._core``, the Rust crate in ``core/``) validates with the JSON Schema the
pydantic contract exports (:func:`~adaptloop.schemas.export.core_schema`), compiled once per topic
at first use: the contract stays the one source of the rules, and
tests/unit/schemas/test_core_contract.py checks that the core and pydantic agree, record for record.
Decoding never raises anything but :class:`DecodeError`, whose ``kind`` and ``reason`` go straight
into a dead letter.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

import orjson
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from adaptloop._core import Contract, ContractError
from adaptloop.schemas.base import Event, utc_now
from adaptloop.schemas.errors import DecodeError
from adaptloop.schemas.export import core_schema
from adaptloop.schemas.topics import OUTCOMES, PREDICTIONS, Topic

MAX_RECORD_BYTES = 1_000_000


def _default(value: object) -> object:
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, BaseModel):  # a nested model: its fields, like model_dump
        return value.__dict__
    raise TypeError(f"cannot serialise {type(value).__name__}")


def encode(event: Event) -> bytes:
    """Serialise an event to JSON bytes.

    >>> from adaptloop.schemas import OutcomeEvent
    >>> from datetime import UTC, datetime
    >>> encode(OutcomeEvent(decision_id="d1", label=1, source="s",
    ...                     timestamp=datetime(2026, 1, 1, tzinfo=UTC)))
    b'{"schema_version":1,"timestamp":"2026-01-01T00:00:00+00:00","decision_id":"d1","label":1,"reward":null,"source":"s"}'
    """
    # The fields straight from the instance: the same bytes as orjson.dumps(event.model_dump()) for
    # these plain models (no custom serialisers), at a third of the cost.
    return orjson.dumps(event.__dict__, default=_default)


def decode(topic: Topic, data: bytes | None, *, max_bytes: int = MAX_RECORD_BYTES) -> Event:
    """Parse and validate one record of ``topic``, or raise :class:`DecodeError`.

    >>> from adaptloop.schemas.topics import OUTCOMES
    >>> decode(OUTCOMES, b'{"decision_id": "d1", "label": true, "source": "s"}').label
    True
    >>> decode(OUTCOMES, b'{"schema_version": 9, "decision_id": "d1", "label": true, "source": "s"}')
    Traceback (most recent call last):
    ...
    adaptloop.schemas.errors.DecodeError: unsupported_schema_version: OutcomeEvent supports schema_version 1, got 9
    """
    compiled = _COMPILED_DECODERS.get(topic.name)  # a str's hash is cached; a Topic's is not
    if compiled is not None or topic.name in COMPILED:
        return (compiled or _compiled_decoder(topic))(data, max_bytes)
    data = checked_size(topic, data, max_bytes)
    try:
        # The validator itself: model_validate_json adds keyword handling that costs a third as
        # much.
        event: Event = topic.event.__pydantic_validator__.validate_json(data)
        return event
    except ValidationError as error:
        raise _classify(topic, error, data) from None


def checked_size(topic: Topic, data: bytes | None, max_bytes: int = MAX_RECORD_BYTES) -> bytes:
    """``data``, if a record of ``topic`` may be decoded at all: it has a value, of at most
    ``max_bytes``."""
    if data is None:
        raise DecodeError("empty", f"{topic.name} record has no value")
    if len(data) > max_bytes:
        raise DecodeError("too_large", f"{len(data)} bytes exceeds the {max_bytes}-byte limit")
    return data


def _classify(topic: Topic, error: ValidationError, data: bytes) -> DecodeError:
    errors = error.errors(include_url=False)
    name = topic.event.__name__
    first = errors[0]
    if first["type"] == "json_invalid":
        return DecodeError("malformed", f"not valid JSON: {first['msg']}")
    for item in errors:
        if item["loc"] == ("schema_version",):
            supported = topic.event.model_fields["schema_version"].default
            return DecodeError(
                "unsupported_schema_version",
                f"{name} supports schema_version {supported}, got {item.get('input')!r}",
            )
        if item["loc"] == (topic.key,) and item["type"] == "missing":
            return DecodeError("missing_key", f"{name} has no {topic.key}")
    details = "; ".join(
        f"{'.'.join(map(str, item['loc'])) or '<root>'}: {item['msg']}" for item in errors[:5]
    )
    more = f" (+{len(errors) - 5} more)" if len(errors) > 5 else ""
    return DecodeError("invalid", f"{name}: {details}{more}")


COMPILED = frozenset({PREDICTIONS.name, OUTCOMES.name})
"""The topics the compiled core decodes: the join's inputs, one record per decision each."""


_COMPILED_DECODERS: dict[str, Callable[[bytes | None, int], Event]] = {}
"""Each compiled topic's decoder, by topic name, made at first use (:func:`_compiled_decoder`)."""


def _compiled_decoder(topic: Topic) -> Callable[[bytes | None, int], Event]:
    """The decoder of ``topic``'s records by the core: its contract compiled from the exported
    schema, which makes the event of the fields it read as :meth:`Event.from_valid` does (in
    declared order, the defaults of those absent added by ``complete``)."""
    decode_event = compiled_contract(topic).decode_event

    def decode_compiled(data: bytes | None, max_bytes: int) -> Event:
        try:
            event: Event = decode_event(data, max_bytes)
            return event
        except ContractError as error:
            raise classify_compiled(topic, data, *error.args) from None

    _COMPILED_DECODERS[topic.name] = decode_compiled
    return decode_compiled


_CONTRACTS: dict[str, Contract] = {}


def compiled_contract(topic: Topic) -> Contract:
    """The core's contract of ``topic`` (one of :data:`COMPILED`), compiled once from the exported
    schema: it decodes events (``decode_event``, as :func:`decode` uses it) and, for the join, writes
    the JSON :func:`encode` would write of the event, every default filled in, with no Python object
    in between (``JoinCore.process_raw``)."""
    contract = _CONTRACTS.get(topic.name)
    if contract is not None:
        return contract
    model = topic.event
    defaults = {name: info for name, info in model.model_fields.items() if not info.is_required()}
    names = tuple(model.model_fields)

    # some left to their defaults (a timestamp's: now)
    def complete(fields: dict[str, Any]) -> dict[str, Any]:
        return {
            name: fields[name]
            if name in fields
            else defaults[name].get_default(call_default_factory=True)
            for name in names
        }

    contract = Contract(
        orjson.dumps(core_schema(topic)).decode(),
        model,
        complete,
        [(name, _default_json(topic, name, info)) for name, info in defaults.items()],
    )
    _CONTRACTS[topic.name] = contract
    return contract


def _default_json(topic: Topic, name: str, info: FieldInfo) -> bytes | None:
    """A field's default as :func:`encode` writes it; None for the time now (``utc_now``, the one
    default factory events have: any other is refused here, so the core never writes a wrong one)."""
    if info.default_factory is None:
        return orjson.dumps(info.default, default=_default)
    if info.default_factory is utc_now:
        return None
    raise TypeError(f"{topic.event.__name__}.{name}: the core cannot fill this default factory")


def classify_compiled(
    topic: Topic, data: bytes | None, kind: str, path: tuple[str, ...], message: str
) -> DecodeError:
    """The core's failure as a dead letter's kind and reason (as :func:`_classify` says
    pydantic's)."""
    name = topic.event.__name__
    if kind == "empty":
        return DecodeError("empty", f"{topic.name} record has no value")
    if kind in ("too_large", "malformed"):
        return DecodeError(kind, message)  # type: ignore[arg-type]
    if path == ("schema_version",):
        supported = topic.event.model_fields["schema_version"].default
        sent = orjson.loads(data or b"{}").get("schema_version")  # valid JSON: the core parsed it
        return DecodeError(
            "unsupported_schema_version",
            f"{name} supports schema_version {supported}, got {sent!r}",
        )
    if kind == "missing" and path == (topic.key,):
        return DecodeError("missing_key", f"{name} has no {topic.key}")
    return DecodeError("invalid", f"{name}: {'.'.join(path) or '<root>'}: {message}")
