"""Events as Arrow columns: one typed column per field, plus where each row came from in Kafka.

Scalar fields keep their type (string, int64, double, bool, UTC timestamp, binary);
fields that are maps, lists or mixed types (``features``, ``label``, ``offsets``...)
are stored as JSON text, which DuckDB reads with ``->>`` or ``json_extract``.
Every row also keeps the record's own bytes (``_value``), so an archived event
decodes to exactly what a consumer saw, and an undecodable record keeps its
reason (``_error``) instead of being dropped. The one change: comments of agent
feedback are scrubbed of obvious PII (emails, phone and card numbers), in the
column and in ``_value``.

>>> from adaptloop.schemas.topics import OUTCOMES
>>> schema = arrow_schema(OUTCOMES)
>>> for field in schema:
...     if not field.name.startswith("_"):
...         print(field.name, field.type)
schema_version int64
timestamp timestamp[us, tz=UTC]
decision_id string
label string
reward double
source string
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from functools import cache
from typing import NamedTuple

import orjson
import pyarrow as pa

from adaptloop.learners.guardrails import scrub_pii
from adaptloop.schemas.agents import AgentFeedbackEvent
from adaptloop.schemas.base import Event
from adaptloop.schemas.codec import _default, decode, encode
from adaptloop.schemas.errors import DecodeError
from adaptloop.schemas.topics import Topic

TIMESTAMP = pa.timestamp("us", tz="UTC")

META_FIELDS = [
    pa.field("_topic", pa.string(), nullable=False),
    pa.field("_partition", pa.int32(), nullable=False),
    pa.field("_offset", pa.int64(), nullable=False),
    pa.field("_kafka_timestamp", TIMESTAMP),
    pa.field("_key", pa.binary()),
    pa.field("_value", pa.binary()),
    pa.field("_error", pa.string()),
]
"""Where a row came from (topic, partition, offset, broker timestamp), its raw bytes and, if unusable, why."""

_SCALARS = {"string": pa.string(), "integer": pa.int64(), "number": pa.float64(), "boolean": pa.bool_()}


def _arrow_type(prop: dict) -> tuple[pa.DataType, bool]:
    """(type, is_json) of one JSON-Schema property."""
    options = [option for option in prop.get("anyOf", [prop]) if option.get("type") != "null"]
    if len(options) == 1:
        option = options[0]
        kind = option.get("type")
        if kind == "string" and option.get("format") == "date-time":
            return TIMESTAMP, False
        if kind == "string" and option.get("format") in ("base64url", "binary"):
            return pa.binary(), False
        if kind in _SCALARS:
            return _SCALARS[kind], False
    return pa.string(), True


@cache
def _layout(topic: Topic) -> tuple[pa.Schema, frozenset[str]]:
    properties = topic.event.model_json_schema(mode="serialization")["properties"]
    fields, json_fields = [], set()
    for name, prop in properties.items():
        arrow_type, is_json = _arrow_type(prop)
        fields.append(pa.field(name, arrow_type))
        if is_json:
            json_fields.add(name)
    return pa.schema(fields + META_FIELDS), frozenset(json_fields)


def arrow_schema(topic: Topic) -> pa.Schema:
    """The Arrow schema of ``topic``'s archive: its event's fields, then the ``_`` metadata."""
    return _layout(topic)[0]


def json_fields(topic: Topic) -> frozenset[str]:
    """The fields of ``topic``'s event stored as JSON text."""
    return _layout(topic)[1]


class RawRecord(NamedTuple):
    """A Kafka record as read, before decoding (a tuple: cheap to make, one per archived record)."""

    partition: int
    offset: int
    timestamp_ms: int | None
    key: bytes | None
    value: bytes | None


def event_row(topic: Topic, event: Event, json_names: frozenset[str] | None = None) -> dict:
    """The typed columns of one event (JSON fields as text).

    Read from the instance's fields, like :func:`adaptloop.schemas.codec.encode`: the values of ``model_dump()``
    for these plain models, at a fraction of the cost.
    """
    row = dict(event.__dict__)
    for name in json_fields(topic) if json_names is None else json_names:
        if row[name] is not None:
            row[name] = orjson.dumps(row[name], default=_default).decode()
    return row


def to_table(topic: Topic, topic_name: str, records: Sequence[RawRecord]) -> pa.Table:
    """Decode ``records`` of ``topic`` into one Arrow table; undecodable ones keep ``_error``.

    >>> from adaptloop.schemas.topics import OUTCOMES
    >>> table = to_table(OUTCOMES, "outcomes", [
    ...     RawRecord(0, 5, None, b"d1", b'{"decision_id": "d1", "label": true, "source": "s"}'),
    ...     RawRecord(0, 6, None, None, b'{oops')])
    >>> table.column("label").to_pylist(), table.column("_error").to_pylist()[1][:9]
    (['true', None], 'malformed')
    """
    rows = []
    json_names = json_fields(topic)
    for record in records:
        value = record.value
        try:
            event = decode(topic, value)
            if isinstance(event, AgentFeedbackEvent) and event.comment:
                # Free text may carry PII: archive it scrubbed, in the column and in the raw bytes.
                event = event.model_copy(update={"comment": scrub_pii(event.comment)})
                value = encode(event)
            row = event_row(topic, event, json_names)
            error = None
        except DecodeError as failure:
            row, error = {}, f"{failure.kind}: {failure.reason}"
        except (TypeError, ValueError, OverflowError) as failure:  # valid, yet no column holds it: keep the bytes
            row, error = {}, f"unarchivable: {type(failure).__name__}: {failure}"
        row.update(
            _topic=topic_name,
            _partition=record.partition,
            _offset=record.offset,
            _kafka_timestamp=None
            if record.timestamp_ms is None
            else datetime.fromtimestamp(record.timestamp_ms / 1000, tz=UTC),
            _key=record.key,
            _value=value,
            _error=error,
        )
        rows.append(row)
    return pa.Table.from_pylist(rows, schema=arrow_schema(topic))
