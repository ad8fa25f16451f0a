"""JSON Schema (2020-12) files for every topic services write or read, and for each model's
predictions and outcomes, so services in any language can check what they send before they send it.

The schemas hold only standard keywords, so strict validators (Ajv's default strict mode among them)
take them as they are; how each topic is keyed and partitioned is in each schema's description and
in ``topics.json`` beside them. Timestamps carry a ``pattern`` that requires a time zone, so a
validator that does not check ``format`` still refuses a time without one (the contract does).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import annotated_types
import orjson

from adaptloop.schemas.contract import ModelContract
from adaptloop.schemas.topics import ALL_TOPICS, OUTCOMES, PREDICTIONS, Topic

DIALECT = "https://json-schema.org/draft/2020-12/schema"
DATE_TIME_WITH_ZONE = r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$"
BASE64 = r"^[A-Za-z0-9+/_-]*={0,2}$"
KEY_ENCODING = "UTF-8"
PARTITIONER = "murmur2"
PARTITIONING = (
    "Produce with Java's default partitioner (murmur2; librdkafka: "
    "partitioner=murmur2_random), as the Java "
    "client, kafkajs and adaptloop's SDK do. A record on another partition (librdkafka's default "
    "consistent_random) is still joined: the join sends it on to its key's partition, at "
    "the cost of a hop."
)


def _clean(text: str) -> str:
    """A docstring as a description: without its doctest examples, with Markdown code spans."""
    paragraphs = [p for p in re.split(r"\n\s*\n", text.strip()) if not p.lstrip().startswith(">>>")]
    return "\n\n".join(paragraphs).replace("``", "`")


def _standardise(node: Any) -> None:
    """Clean descriptions, require a zone in every date-time and say bytes in standard keywords,
    throughout a schema (in place)."""
    if isinstance(node, dict):
        if isinstance(node.get("description"), str):
            node["description"] = _clean(node["description"])
        if node.get("format") == "date-time" and "pattern" not in node:
            node["pattern"] = DATE_TIME_WITH_ZONE
        # pydantic's name; the standard says it with contentEncoding
        if node.get("format") == "base64url":
            del node["format"]
            # as adaptloop writes it; the URL-safe alphabet is read too
            node["contentEncoding"] = "base64"
            node["pattern"] = BASE64
        for value in node.values():
            _standardise(value)
    elif isinstance(node, list):
        for value in node:
            _standardise(value)


def _kafka_note(topic: Topic) -> str:
    note = (
        f"Kafka: topic `{topic.name}` (after the deployment's topic_prefix), key: the "
        f"{KEY_ENCODING} bytes of "
        f"`{topic.key}`"
    )
    if topic.copartitioned == "decisions":
        note += f". {PARTITIONING.rstrip('.')}"
    if topic.compacted:
        note += ". Compacted: the latest record per key is kept"
    return note + "."


def topic_schema(topic: Topic) -> dict[str, Any]:
    """The JSON Schema of one topic's event."""
    schema: dict[str, Any] = {"$schema": DIALECT, "$id": f"urn:adaptloop:schema:{topic.name}"}
    schema.update(topic.event.model_json_schema(mode="validation"))
    _standardise(schema)
    described = schema.get("description", "")
    schema["description"] = f"{described}\n\n{_kafka_note(topic)}".strip()
    return schema


def core_schema(topic: Topic) -> dict[str, Any]:
    """The schema the compiled core (``adaptloop._core``) validates ``topic``'s records with: the
    topic's exported schema, with the bounds of its times (the contract's ``ge``/``lt`` on a
    datetime, which no standard keyword says) as ``formatMinimum``/``formatExclusiveMaximum``,
    ajv-formats' names for them.

    >>> from adaptloop.schemas.topics import OUTCOMES
    >>> timestamp = core_schema(OUTCOMES)["properties"]["timestamp"]
    >>> timestamp["formatMinimum"], timestamp["formatExclusiveMaximum"]
    ('1970-01-01T00:00:00+00:00', '2200-01-01T00:00:00+00:00')
    """
    schema = topic_schema(topic)
    for name, info in topic.event.model_fields.items():
        node = schema["properties"][name]
        for branch in [node, *node.get("anyOf", [])]:
            if branch.get("format") != "date-time":
                continue
            for bound in info.metadata:
                if isinstance(bound, annotated_types.Ge):
                    branch["formatMinimum"] = bound.ge.isoformat()  # type: ignore[attr-defined]
                elif isinstance(bound, annotated_types.Lt):
                    branch["formatExclusiveMaximum"] = bound.lt.isoformat()  # type: ignore[attr-defined]
                elif isinstance(bound, annotated_types.BaseMetadata):
                    raise TypeError(
                        f"{topic.event.__name__}.{name}: the core has no keyword for {bound!r}"
                    )
    return schema


def json_schemas() -> dict[str, dict[str, Any]]:
    """The JSON Schema of each topic's event, keyed by topic name (not the join's own repartition
    topics)."""
    return {topic.name: topic_schema(topic) for topic in ALL_TOPICS if topic.repartition_of is None}


def topics_manifest() -> list[dict[str, Any]]:
    """How each topic is keyed and kept, for producers in any language (``topics.json``)."""
    return [
        {
            "topic": topic.name,
            "schema": f"{topic.name}.schema.json",
            "key": topic.key,
            "key_encoding": KEY_ENCODING,
            "partitioner": PARTITIONER,
            "compacted": topic.compacted,
            "doc": topic.doc,
        }
        for topic in ALL_TOPICS
        if topic.repartition_of is None
    ]


def model_json_schemas(contract: ModelContract) -> dict[str, dict[str, Any]]:
    """The schemas of one model's predictions and outcomes (``<model>.predictions``,
    ``<model>.outcomes``): the topic's schema, narrowed to the model's features and label type (an
    outcome is refused by the join if its label breaks them; a prediction with other features,
    likewise).

    >>> schemas = model_json_schemas(ModelContract(model="churn", task="binary"))
    >>> schemas["churn.outcomes"]["properties"]["label"]
    {'type': 'boolean'}
    """
    topics = json_schemas()
    prediction = dict(topics[PREDICTIONS.name])
    prediction["$id"] = f"urn:adaptloop:schema:models:{contract.model}.{PREDICTIONS.name}"
    prediction["properties"] = {
        **prediction["properties"],
        "model": {"const": contract.model},
        "features": contract.features_json_schema(),
    }
    outcome = dict(topics[OUTCOMES.name])
    outcome["$id"] = f"urn:adaptloop:schema:models:{contract.model}.{OUTCOMES.name}"
    label = contract.label_json_schema()
    outcome["properties"] = {**outcome["properties"], "label": label}
    outcome["required"] = (
        sorted({*outcome.get("required", []), "label"})
        if contract.task != "regression"
        else (outcome.get("required", []))
    )
    return {
        f"{contract.model}.{PREDICTIONS.name}": prediction,
        f"{contract.model}.{OUTCOMES.name}": outcome,
    }


def export_json_schemas(
    directory: Path, contracts: list[ModelContract] | None = None
) -> list[Path]:
    """Write ``<topic>.schema.json`` for every topic into ``directory``,
    ``models/<model>.<topic>.schema.json`` for each model's predictions and outcomes, and
    ``topics.json`` (keys, partitioner); return the paths."""
    directory.mkdir(parents=True, exist_ok=True)
    schemas = json_schemas()
    for contract in contracts or []:
        schemas.update(
            {f"models/{name}": schema for name, schema in model_json_schemas(contract).items()}
        )
    written = []
    for name, schema in schemas.items():
        path = directory / f"{name}.schema.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(orjson.dumps(schema, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))
        written.append(path)
    manifest = directory / "topics.json"
    manifest.write_bytes(orjson.dumps(topics_manifest(), option=orjson.OPT_INDENT_2))
    return [*written, manifest]
