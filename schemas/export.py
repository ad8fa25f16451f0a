"""JSON Schema files for every topic, so services in any language can produce valid events."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from adaptloop.schemas.topics import ALL_TOPICS


def json_schemas() -> dict[str, dict[str, Any]]:
    """The JSON Schema of each topic's event, keyed by topic name, annotated with the Kafka key."""
    schemas: dict[str, dict[str, Any]] = {}
    for topic in ALL_TOPICS:
        schema = topic.event.model_json_schema(mode="validation")
        schema["x-kafka-topic"] = topic.name
        schema["x-kafka-key"] = topic.key
        schema["x-kafka-compacted"] = topic.compacted
        schemas[topic.name] = schema
    return schemas


def export_json_schemas(directory: Path) -> list[Path]:
    """Write ``<topic>.schema.json`` for every topic into ``directory``; return the paths."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, schema in json_schemas().items():
        path = directory / f"{name}.schema.json"
        path.write_bytes(orjson.dumps(schema, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))
        written.append(path)
    return written
