"""The fast reader of topics only the worker writes: typed structs derived from the contracts.

(The one codec of this layer built on msgspec rather than pydantic: nothing imports it but the
readers of these topics, the learner and the archive.)

``training-examples`` is written by the join's transactional producer alone (with ACLs, nobody
else may write it), from events it validated itself. Reading it back through pydantic validated
each example a second time: 5.7 µs of the learner's core per example, half of River's own
predict + learn for logistic regression. Here the same JSON bytes decode with msgspec into a
struct of the same fields and types, with the constraints msgspec checks in C (lengths, finite
floats, 64-bit integers, time zones): 2.0 µs. A record that someone else wrote in another shape
is still a dead letter, never a crash. What the writer checked and the learner never relies on
is not checked again: the names' patterns (a regex each cost as much again as all the rest)
and the times' range (the learner does no arithmetic on them).

The wire format stays the contract's JSON: analysts' consumers and services in other languages
read the topic with the exported JSON Schema, and records written before this
reader existed read the same. (MessagePack into the same struct decoded in 0.9 µs: not worth a
second format for every other reader of the topic.)

The struct is derived from the pydantic model at import (:func:`struct_of`), so the contract
stays the single source of truth: a field added to :class:`TrainingExample` is read here too,
and a type this module cannot translate fails at import, never silently.

>>> from adaptloop.schemas.codec import encode
>>> from adaptloop.schemas.inference import TrainingExample
>>> from datetime import UTC, datetime
>>> example = TrainingExample(model="churn", decision_id="d1", model_version="v1", features={"age": 42},
...                           label=True, predicted_at=datetime(2026, 1, 1, tzinfo=UTC))
>>> record = decode_training(encode(example))
>>> record.decision_id, record.features, record.label, as_event(record) == example
('d1', {'age': 42}, True, True)
"""

from __future__ import annotations

import sys
import types
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import annotated_types
import msgspec
from pydantic import AwareDatetime, BaseModel
from pydantic.fields import FieldInfo
from pydantic.types import AllowInfNan, Strict

from adaptloop.schemas.base import Event
from adaptloop.schemas.codec import MAX_RECORD_BYTES, checked_size
from adaptloop.schemas.errors import DecodeError
from adaptloop.schemas.inference import TrainingExample
from adaptloop.schemas.topics import TRAINING_EXAMPLES, Topic

_FLOAT_MAX = sys.float_info.max
_BOUNDS = {
    annotated_types.Ge: "ge",
    annotated_types.Le: "le",
    annotated_types.Gt: "gt",
    annotated_types.Lt: "lt",
    annotated_types.MinLen: "min_length",
    annotated_types.MaxLen: "max_length",
}  # pydantic's constraint -> msgspec.Meta's keyword of the same name


def _constraints(metadata: tuple[Any, ...]) -> dict[str, Any]:
    """msgspec.Meta keywords for pydantic's constraint metadata (strictness is msgspec's
    default)."""
    meta: dict[str, Any] = {}
    for item in metadata:
        if type(item) in _BOUNDS:
            meta[_BOUNDS[type(item)]] = getattr(item, _BOUNDS[type(item)])
        elif isinstance(item, FieldInfo):  # Annotated[T, Field(...)]: its own metadata
            meta.update(_constraints(tuple(item.metadata)))
        elif isinstance(item, AllowInfNan):
            if not item.allow_inf_nan:  # NaN fails any bound, and the infinities these
                meta.update(ge=-_FLOAT_MAX, le=_FLOAT_MAX)
        elif getattr(item, "pattern", None) is not None:
            # the writer checked it: a regex per name cost as much again as the rest of the decoding
            pass
        elif not isinstance(item, Strict):
            raise TypeError(f"no msgspec translation for the constraint {item!r}")
    return meta


def _translate(annotation: Any, metadata: tuple[Any, ...] = ()) -> Any:
    """The msgspec type of a pydantic field's annotation (with its constraints)."""
    origin = get_origin(annotation)
    if origin is Annotated:
        inner, *extra = get_args(annotation)
        return _translate(inner, (*extra, *metadata))
    # with its time zone; its range is the writer's (msgspec bounds numbers only)
    if annotation is AwareDatetime:
        return Annotated[datetime, msgspec.Meta(tz=True)]
    meta = _constraints(metadata)
    if origin in (Union, types.UnionType):
        annotation = Union[tuple(_translate(arg) for arg in get_args(annotation))]  # noqa: UP007 (built at run time)
    elif origin is dict:
        key, value = get_args(annotation)
        annotation = dict[_translate(key), _translate(value)]  # type: ignore[misc]
    elif origin is not Literal and annotation not in (str, int, float, bool, type(None)):
        raise TypeError(f"no msgspec translation for {annotation!r}")
    return Annotated[annotation, msgspec.Meta(**meta)] if meta else annotation


def struct_of(model: type[BaseModel], name: str) -> type[msgspec.Struct]:
    """A frozen msgspec struct with ``model``'s fields, types, constraints and defaults, closed to
    unknown fields as the contract is. It lives in this module under ``name`` (so it pickles, in a
    checkpoint's pending mini-batch)."""
    fields: list[Any] = []
    for field_name, info in model.model_fields.items():
        kind = _translate(info.annotation, tuple(info.metadata))
        if info.is_required():
            fields.append((field_name, kind))
        elif info.default_factory is not None:
            fields.append((field_name, kind, msgspec.field(default_factory=info.default_factory)))  # type: ignore[arg-type]
        else:
            fields.append((field_name, kind, info.default))

    return msgspec.defstruct(
        name,
        fields,
        module=__name__,
        frozen=True,
        forbid_unknown_fields=True,
        kw_only=True,
        gc=False,
    )


TrainingRecord = struct_of(TrainingExample, "TrainingRecord")
"""A training example as the learner reads it: the fields of :class:`TrainingExample`, decoded
without pydantic."""

_decoder = msgspec.json.Decoder(TrainingRecord)


def decode_training(data: bytes | None, *, max_bytes: int = MAX_RECORD_BYTES) -> Any:
    """One ``training-examples`` record as a :data:`TrainingRecord`, or :class:`DecodeError` (a dead
    letter).

    >>> decode_training(b'{"model": "churn"}')
    Traceback (most recent call last):
    ...
    adaptloop.schemas.errors.DecodeError: invalid: TrainingExample: Object missing required field `decision_id`
    """
    data = checked_size(TRAINING_EXAMPLES, data, max_bytes)
    try:
        return _decoder.decode(data)
    except msgspec.ValidationError as error:
        message = str(error)
        if "schema_version" in message:
            raise DecodeError(
                "unsupported_schema_version",
                f"TrainingExample supports schema_version 1: {message}",
            ) from None
        raise DecodeError("invalid", f"TrainingExample: {message}") from None
    except msgspec.DecodeError as error:
        raise DecodeError("malformed", f"not valid JSON: {error}") from None


TRUSTED_READERS: dict[Topic, Callable[..., Any]] = {TRAINING_EXAMPLES: decode_training}
"""The fast reader of each topic only the worker writes (what ``EventConsumer(..., trusted=True)``
uses)."""


def record_fields(record: Any) -> dict[str, Any]:
    """A decoded record's fields by name, in the contract's order: what ``event.__dict__`` holds for
    the pydantic event (the archive's columns)."""
    return msgspec.structs.asdict(record)


def as_event(record: Any) -> Event:
    """The pydantic event of a decoded record (for what is not on the hot path: dead letters,
    tools)."""
    if isinstance(record, Event):
        return record
    return TrainingExample.model_construct(**msgspec.structs.asdict(record))
