"""The common base of every event contract: strict, immutable, versioned."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import Annotated, Literal, Union

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr

SCHEMA_VERSION = 1

FiniteFloat = Annotated[StrictFloat, Field(allow_inf_nan=False)]
"""A float that is neither NaN nor infinite (JSON cannot carry those either)."""

# Floats first: the common case is checked first (smart unions still pick the exact type, so 1 stays int).
FeatureValue = Union[FiniteFloat, StrictBool, StrictInt, StrictStr, None]
"""One feature as served: a number, a category, a flag, or missing."""

Label = Union[StrictBool, StrictInt, FiniteFloat, StrictStr]  # booleans are the common labels
"""A ground-truth label: a class (bool, int, str) or a regression target (float)."""

NonEmptyStr = Annotated[StrictStr, Field(min_length=1, max_length=512)]


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def new_id() -> str:
    return uuid.uuid4().hex


class Event(BaseModel):
    """Base of all adaptloop events.

    Strict (no silent coercion of ``"1"`` to ``1``), frozen (an event is a fact),
    closed (unknown fields are an error, so a typo never passes unnoticed) and
    versioned by ``schema_version``.
    """

    model_config = ConfigDict(strict=True, frozen=True, extra="forbid", val_json_bytes="base64", ser_json_bytes="base64")

    schema_version: Literal[1] = SCHEMA_VERSION
    timestamp: AwareDatetime = Field(default_factory=utc_now)
