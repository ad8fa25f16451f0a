"""JSON Schema files for every topic, and for each model's predictions and outcomes, so services in any
language can check what they send before they send it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from adaptloop.schemas.contract import ModelContract
from adaptloop.schemas.topics import ALL_TOPICS, OUTCOMES, PREDICTIONS


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


def model_json_schemas(contract: ModelContract) -> dict[str, dict[str, Any]]:
    """The schemas of one model's predictions and outcomes (``<model>.predictions``, ``<model>.outcomes``): the
    topic's schema, narrowed to the model's features and label type (an outcome is refused by the join if
    its label breaks them; a prediction with other features, likewise).

    >>> schemas = model_json_schemas(ModelContract(model="churn", task="binary"))
    >>> schemas["churn.outcomes"]["properties"]["label"]
    {'type': 'boolean'}
    """
    topics = json_schemas()
    prediction = dict(topics[PREDICTIONS.name])
    prediction["properties"] = {
        **prediction["properties"],
        "model": {"const": contract.model},
        "features": contract.features_json_schema(),
    }
    outcome = dict(topics[OUTCOMES.name])
    label = contract.label_json_schema()
    outcome["properties"] = {**outcome["properties"], "label": label}
    outcome["required"] = (
        sorted({*outcome.get("required", []), "label"})
        if contract.task != "regression"
        else (outcome.get("required", []))
    )
    return {f"{contract.model}.{PREDICTIONS.name}": prediction, f"{contract.model}.{OUTCOMES.name}": outcome}


def export_json_schemas(directory: Path, contracts: list[ModelContract] | None = None) -> list[Path]:
    """Write ``<topic>.schema.json`` for every topic into ``directory``, and ``models/<model>.<topic>.schema.json``
    for each model's predictions and outcomes; return the paths."""
    directory.mkdir(parents=True, exist_ok=True)
    schemas = json_schemas()
    for contract in contracts or []:
        schemas.update({f"models/{name}": schema for name, schema in model_json_schemas(contract).items()})
    written = []
    for name, schema in schemas.items():
        path = directory / f"{name}.schema.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(orjson.dumps(schema, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))
        written.append(path)
    return written
