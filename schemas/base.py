"""The common base of every event contract: strict, immutable, versioned."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, Self

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
)

SCHEMA_VERSION: Literal[1] = 1

FiniteFloat = Annotated[StrictFloat, Field(allow_inf_nan=False)]
"""A float that is neither NaN nor infinite (JSON cannot carry those either)."""

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
Int64 = Annotated[StrictInt, Field(ge=INT64_MIN, le=INT64_MAX)]
"""An integer of 64 bits. JSON allows any number of digits; orjson, Parquet's int64 columns and
other languages' readers do not. Where a float is also allowed (features, labels) a larger integer
is read as a float, as JavaScript reads it; elsewhere, and beyond any float, the event is invalid:
never a crash downstream."""

Count = Annotated[StrictInt, Field(ge=0, le=INT64_MAX)]
"""A non-negative 64-bit integer: steps, tokens, offsets, counts."""

# Floats first: the common case is checked first (smart unions still pick the exact type, so 1 stays
# int).
FeatureValue = FiniteFloat | StrictBool | Int64 | StrictStr | None
"""One feature as served: a number, a category, a flag, or missing."""

Label = StrictBool | Int64 | FiniteFloat | StrictStr  # booleans are the common labels
"""A ground-truth label: a class (bool, int, str) or a regression target (float)."""

NonEmptyStr = Annotated[StrictStr, Field(min_length=1, max_length=512)]

Name = Annotated[StrictStr, Field(min_length=1, max_length=256, pattern=r"^[^\x00-\x1f\x7f]+$")]
"""An identifier or a name (a decision, session, model, agent, variant, user): up to 256 characters,
no control characters. It becomes a Kafka key, a dict key in a role's state, a label, a file name: a
NUL byte or a 300-character id would break one of those downstream."""

ModelName = Annotated[StrictStr, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.-]+$")]
"""A model's name as its spec declares it (letters, digits, ``_ . -``): it names a folder of the
model store."""

VersionId = Annotated[StrictStr, Field(pattern=r"^[0-9a-f]{16}$")]
"""A model version's id: the first 16 hex digits of the SHA-256 of its bytes."""

EARLIEST, LATEST = datetime(1970, 1, 1, tzinfo=UTC), datetime(2200, 1, 1, tzinfo=UTC)

EventTime = Annotated[AwareDatetime, Field(ge=EARLIEST, lt=LATEST)]
"""A moment with its time zone, between 1970 and 2200 once in UTC: ``0001-01-01T00:00:00+23:59`` is
a valid ISO 8601 time whose UTC falls in the year 0, which no Python datetime can hold (a join
expiring it would crash), and times near year 9999 overflow once a horizon is added."""


def utc_now() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    return uuid.uuid4().hex


class Event(BaseModel):
    """Base of all adaptloop events.

    Strict (no silent coercion of ``"1"`` to ``1``), frozen (an event is a fact),
    closed (unknown fields are an error, so a typo never passes unnoticed) and
    versioned by ``schema_version``.
    """

    model_config = ConfigDict(
        strict=True, frozen=True, extra="forbid", val_json_bytes="base64", ser_json_bytes="base64"
    )

    schema_version: Literal[1] = SCHEMA_VERSION
    timestamp: EventTime = Field(default_factory=utc_now)

    @classmethod
    def from_valid(cls, fields: dict[str, Any]) -> Self:
        """The event of ``fields``, each taken from events validated already: not validated again.

        ``fields`` names every field, in the order the class declares them (the order they are
        encoded in). The join builds each training example this way: 1.5 µs where validating the
        same fields again (or pydantic's ``model_construct``) cost 4.4-4.7 µs.

        >>> from adaptloop.schemas import OutcomeEvent
        >>> event = OutcomeEvent(decision_id="d1", label=True, source="s")
        >>> OutcomeEvent.from_valid(dict(event)) == event
        True
        """
        event = _new(cls)
        _set(event, "__dict__", fields)
        _set(event, "__pydantic_fields_set__", set(fields))
        _set(event, "__pydantic_extra__", None)
        _set(event, "__pydantic_private__", None)
        return event


_new, _set = object.__new__, object.__setattr__
