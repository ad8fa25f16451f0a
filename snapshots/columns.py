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
from adaptloop.schemas.trusted import TRUSTED_READERS, record_fields

TIMESTAMP = pa.timestamp("us", tz="UTC")
# a record's broker time: milliseconds since the epoch
KAFKA_TIMESTAMP = pa.timestamp("ms", tz="UTC")

META_FIELDS = [
    pa.field("_topic", pa.string(), nullable=False),
    pa.field("_partition", pa.int32(), nullable=False),
    pa.field("_offset", pa.int64(), nullable=False),
    pa.field("_kafka_timestamp", TIMESTAMP),
    pa.field("_key", pa.binary()),
    pa.field("_value", pa.binary()),
    pa.field("_error", pa.string()),
]
"""Where a row came from (topic, partition, offset, broker timestamp), its raw bytes and, if
unusable, why."""

_SCALARS = {
    "string": pa.string(),
    "integer": pa.int64(),
    "number": pa.float64(),
    "boolean": pa.bool_(),
}


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

    Read from the instance's fields, like :func:`adaptloop.schemas.codec.encode`: the values of
    ``model_dump()`` for these plain models, at a fraction of the cost.
    """
    return _json_as_text(
        dict(event.__dict__), json_fields(topic) if json_names is None else json_names
    )


def _json_as_text(row: dict, json_names: frozenset[str]) -> dict:
    for name in json_names:
        if row[name] is not None:
            row[name] = orjson.dumps(row[name], default=_default).decode()
    return row


def _decoded_row(
    topic: Topic, value: bytes | None, json_names: frozenset[str]
) -> tuple[dict, bytes | None]:
    """One record's typed columns, and the bytes to archive (raises :class:`DecodeError` if it is
    not valid)."""
    read = TRUSTED_READERS.get(topic)
    # written by the worker alone: read as the learner reads it, with the same verdict
    if read is not None:
        return _json_as_text(record_fields(read(value)), json_names), value
    event = decode(topic, value)
    if isinstance(event, AgentFeedbackEvent) and event.comment:
        # Free text may carry PII: archive it scrubbed, in the column and in the raw bytes.
        event = event.model_copy(update={"comment": scrub_pii(event.comment)})
        value = encode(event)
    return event_row(topic, event, json_names), value


def to_table(topic: Topic, topic_name: str, records: Sequence[RawRecord]) -> pa.Table:
    """Decode ``records`` of ``topic`` into one Arrow table; undecodable ones keep ``_error``.

    Each record is decoded once: by the contract, or, on a topic only the worker writes, by the
    learner's fast reader (:mod:`adaptloop.schemas.trusted`: no pydantic object per record, 30% less
    CPU per training example). The table is then built column by column, each column converted by
    Arrow at once.

    >>> from adaptloop.schemas.topics import OUTCOMES
    >>> table = to_table(OUTCOMES, "outcomes", [
    ...     RawRecord(0, 5, None, b"d1", b'{"decision_id": "d1", "label": true, "source": "s"}'),
    ...     RawRecord(0, 6, None, None, b'{oops')])
    >>> table.column("label").to_pylist(), table.column("_error").to_pylist()[1][:9]
    (['true', None], 'malformed')
    """
    schema = arrow_schema(topic)
    json_names = json_fields(topic)
    rows, values, errors = [], [], []
    for record in records:
        value = record.value
        try:
            row, value = _decoded_row(topic, value, json_names)
            error = None
        except DecodeError as failure:
            row, error = {}, f"{failure.kind}: {failure.reason}"
        # valid, yet no column holds it: keep the bytes
        except (TypeError, ValueError, OverflowError) as failure:
            row, error = {}, f"unarchivable: {type(failure).__name__}: {failure}"
        rows.append(row)
        values.append(value)
        errors.append(error)
    event_fields = list(schema)[: -len(META_FIELDS)]
    columns = [
        pa.array([row.get(field.name) for row in rows], field.type) for field in event_fields
    ]
    columns += [
        pa.array([topic_name] * len(records), pa.string()),
        pa.array([record.partition for record in records], pa.int32()),
        pa.array([record.offset for record in records], pa.int64()),
        pa.array([record.timestamp_ms for record in records], KAFKA_TIMESTAMP).cast(TIMESTAMP),
        pa.array([record.key for record in records], pa.binary()),
        pa.array(values, pa.binary()),
        pa.array(errors, pa.string()),
    ]
    return pa.Table.from_arrays(columns, schema=schema)
