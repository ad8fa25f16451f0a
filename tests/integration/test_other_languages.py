"""Services in other languages: the exported schemas pass a strict validator of another language
(Ajv, in Node.js) and agree with the contracts, and a non-Python producer (Kafka's Java console
producer) feeds the whole loop: its records land where the join expects them, and the model learns
every decision."""

from __future__ import annotations

import subprocess
import time
import uuid
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from pydantic import ValidationError

from adaptloop.learners.spec import LearnerSpec
from adaptloop.localkafka import LocalKafka
from adaptloop.samples import SAMPLERS, sample_events
from adaptloop.schemas import ModelVersion, OutcomeEvent, PredictionEvent
from adaptloop.schemas.codec import encode
from adaptloop.schemas.export import export_json_schemas
from adaptloop.schemas.topics import (
    DEAD_LETTERS,
    MODEL_UPDATES,
    OUTCOMES,
    PREDICTIONS,
    PREDICTIONS_REPARTITION,
    partition_for,
    topic_for,
    topic_named,
)
from adaptloop.settings import Settings
from adaptloop.streams.reader import watermarks
from adaptloop.streams.versions import read_all

from .loop_helpers import committed_offsets, loop_settings, running_worker

pytestmark = pytest.mark.kafka

CHURN = LearnerSpec(name="churn", recipe="logistic", features={"age": "number", "spend": "number"})


def _ajv(node_tools, schemas, cases: list[dict]) -> dict:
    cases_file = schemas / "cases.json"
    cases_file.write_bytes(orjson.dumps(cases))
    done = subprocess.run(
        ["node", str(node_tools / "validate.mjs"), str(schemas), str(cases_file)],
        capture_output=True,
        check=False,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr.decode()
    return orjson.loads(done.stdout)


def _contract_takes(schema: str, record: dict) -> bool:
    """Whether the contracts take ``record``: the topic's event, and for a model's schema, the
    model's contract."""
    model, _, topic = schema.removeprefix("models/").rpartition(".")
    try:
        event = topic_named(topic).event.model_validate_json(orjson.dumps(record))
    except ValidationError:
        return False
    if not model:
        return True
    contract = CHURN.contract()
    if isinstance(event, OutcomeEvent):
        return contract.label_problem(event.label, event.reward) is None
    assert isinstance(event, PredictionEvent)
    return contract.feature_problem(event.features) is None


def test_ajv_strict_compiles_every_schema_and_agrees_with_the_contracts(node_tools, tmp_path):
    schemas = tmp_path / "schemas"
    export_json_schemas(schemas, [CHURN.contract()])
    cases = [
        {"schema": topic_for(event_type).name, "record": orjson.loads(encode(event))}
        for event_type in SAMPLERS
        for event in sample_events(event_type, 5)
    ]
    outcome = {
        "decision_id": "d-1",
        "label": True,
        "source": "billing",
        "timestamp": "2026-11-24T09:00:00Z",
    }
    prediction = {
        "decision_id": "d-1",
        "model": "churn",
        "model_version": "external",
        "features": {"age": 41, "spend": 12.5},
        "timestamp": "2026-11-24T08:00:00.25+01:00",
    }
    bad = [
        ("outcomes", {**outcome, "timestamp": "2026-11-24T09:00:00"}),  # no zone
        ("outcomes", {**outcome, "labels": True}),  # a typo: unknown field
        ("outcomes", {**outcome, "schema_version": 2}),
        ("outcomes", {k: v for k, v in outcome.items() if k != "source"}),
        ("predictions", {**prediction, "decision_id": "a\u0001b"}),  # a control character
        ("predictions", {**prediction, "decision_id": "x" * 257}),
        ("predictions", {**prediction, "probabilities": {"True": 1.5}}),
        # a string label for a binary model
        ("models/churn.outcomes", {**outcome, "label": "true"}),
        # numbers only
        ("models/churn.predictions", {**prediction, "features": {"age": 41, "spend": "high"}}),
    ]
    good = [
        ("models/churn.outcomes", outcome),
        ("models/churn.predictions", prediction),
        ("predictions", prediction),
    ]
    cases += [{"schema": schema, "record": record} for schema, record in bad + good]
    answer = _ajv(node_tools, schemas, cases)

    assert {"predictions", "outcomes", "models/churn.outcomes", "models/churn.predictions"} <= set(
        answer["compiled"]
    )
    for case, result in zip(cases, answer["results"], strict=True):
        assert result["valid"] == _contract_takes(case["schema"], case["record"]), (
            case,
            result["errors"],
        )
    refused = [
        case for case, result in zip(cases, answer["results"], strict=True) if not result["valid"]
    ]
    assert refused == [{"schema": schema, "record": record} for schema, record in bad], refused


def test_the_java_console_producer_feeds_the_loop_and_lands_where_the_join_expects(
    kafka_bootstrap, tmp_path
):
    n, partitions = 200, 3
    settings = loop_settings(kafka_bootstrap, tmp_path / "home", [CHURN], partitions=partitions)
    prefix = settings.topic_prefix
    start = datetime.now(UTC).replace(microsecond=0)
    lines: dict[str, list[str]] = {PREDICTIONS.name: [], OUTCOMES.name: []}
    for i in range(n):
        decision = f"java-{i}"
        at = (start + timedelta(milliseconds=10 * i)).isoformat().replace("+00:00", "Z")
        prediction = {
            "decision_id": decision,
            "model": "churn",
            "model_version": "java-service-rules",
            "features": {"age": 20 + i % 40, "spend": float(i % 13)},
            "prediction": i % 3 == 0,
            "timestamp": at,
        }
        outcome = {
            "decision_id": decision,
            "label": i % 13 < 5,
            "source": "billing",
            "timestamp": at,
        }
        lines[PREDICTIONS.name].append(f"{decision}|{orjson.dumps(prediction).decode()}")
        lines[OUTCOMES.name].append(f"{decision}|{orjson.dumps(outcome).decode()}")

    kafka = LocalKafka(tmp_path / "tools", Settings().cache_dir)
    with running_worker(settings, tmp_path / "worker.log") as worker:
        for topic in (PREDICTIONS, OUTCOMES):
            subprocess.run(
                kafka.java_command(
                    "org.apache.kafka.tools.ConsoleProducer",
                    "--bootstrap-server",
                    kafka_bootstrap,
                    "--topic",
                    topic.full_name(prefix),
                    "--property",
                    "parse.key=true",
                    "--property",
                    "key.separator=|",
                ),
                input=("\n".join(lines[topic.name]) + "\n").encode(),
                check=True,
                capture_output=True,
                timeout=120,
            )
        deadline = time.monotonic() + 180
        while (learned := _examples_seen(settings)) < n and time.monotonic() < deadline:
            worker.check_alive()
            time.sleep(1)
    assert learned == n

    # Java's default partitioner put every record where murmur2 of its key says: nothing was sent
    # on.
    for topic in (PREDICTIONS, OUTCOMES):
        placed = _keys_by_partition(kafka_bootstrap, topic.full_name(prefix))
        assert len(placed) == n
        assert all(partition == partition_for(key, partitions) for key, partition in placed.items())
        assert len(set(placed.values())) == partitions
    assert not committed_offsets(kafka_bootstrap, PREDICTIONS_REPARTITION.full_name(prefix))
    assert not committed_offsets(kafka_bootstrap, DEAD_LETTERS.full_name(prefix))


def _examples_seen(settings) -> int:
    versions = read_all(settings.bootstrap_address, MODEL_UPDATES, settings.topic_prefix)
    return max((v.examples_seen for v in versions if isinstance(v, ModelVersion)), default=0)


def _keys_by_partition(bootstrap: str, topic: str) -> dict[bytes, int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"keys-{uuid.uuid4().hex}"})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        ends = {p: high for p, (_, high) in watermarks(consumer, topic, partitions, 10).items()}
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        placed: dict[bytes, int] = {}
        deadline = time.monotonic() + 120
        while len(placed) < sum(ends.values()) and time.monotonic() < deadline:
            for message in consumer.consume(1000, 0.5):
                if message.error() is None:
                    placed[message.key()] = message.partition()
        return placed
    finally:
        consumer.close()
