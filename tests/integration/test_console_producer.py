"""A non-Python producer (Kafka's own console producer) writing JSON that matches the exported schema."""

from __future__ import annotations

import subprocess
import time
import uuid

import jsonschema
import orjson
import pytest

from adaptloop.localkafka import LocalKafka
from adaptloop.schemas import OutcomeEvent, PredictionEvent
from adaptloop.schemas.export import export_json_schemas
from adaptloop.schemas.topics import OUTCOMES, PREDICTIONS
from adaptloop.settings import Settings
from adaptloop.streams import DeadLetters, EventConsumer, EventProducer

pytestmark = pytest.mark.kafka

# What a service in another language would write, from the JSON Schema alone.
PREDICTION = {
    "schema_version": 1,
    "decision_id": "java-1",
    "model": "churn",
    "model_version": "v7",
    "features": {"age": 41, "spend": 12.5, "plan": "pro", "trial": False, "referrer": None},
    "prediction": True,
    "probabilities": {"True": 0.75, "False": 0.25},
    "timestamp": "2026-11-24T08:00:00.250000+00:00",
}
OUTCOME = {"decision_id": "java-1", "label": False, "source": "billing-service", "timestamp": "2026-11-24T09:00:00Z"}


def test_console_producer_json_is_accepted_by_the_consumer_helper(kafka_bootstrap, topic_prefix, tmp_path):
    schemas_dir = tmp_path / "schemas"
    export_json_schemas(schemas_dir)
    for topic, record in ((PREDICTIONS, PREDICTION), (OUTCOMES, OUTCOME)):
        schema = orjson.loads((schemas_dir / f"{topic.name}.schema.json").read_bytes())
        jsonschema.validate(record, schema, format_checker=jsonschema.FormatChecker())

    kafka = LocalKafka(tmp_path / "tools", Settings().cache_dir)
    for topic, record in ((PREDICTIONS, PREDICTION), (OUTCOMES, OUTCOME)):
        line = record["decision_id"] + "|" + orjson.dumps(record).decode() + "\n"
        subprocess.run(
            kafka.java_command(
                "org.apache.kafka.tools.ConsoleProducer",
                "--bootstrap-server",
                kafka_bootstrap,
                "--topic",
                topic.full_name(topic_prefix),
                "--property",
                "parse.key=true",
                "--property",
                "key.separator=|",
            ),
            input=line.encode(),
            check=True,
            capture_output=True,
            timeout=120,
        )

    dead = DeadLetters(EventProducer(kafka_bootstrap, topic_prefix=topic_prefix), consumer="console")
    got = []
    with EventConsumer(
        kafka_bootstrap, f"console-{uuid.uuid4().hex}", [PREDICTIONS, OUTCOMES], dead_letters=dead, prefix=topic_prefix
    ) as consumer:
        deadline = time.monotonic() + 60
        while len(got) < 2 and time.monotonic() < deadline:
            got.extend(consumer.poll(10, 0.5))
    assert not dead.counts
    events = {type(record.event): record for record in got}
    prediction, outcome = events[PredictionEvent], events[OutcomeEvent]
    assert prediction.key == outcome.key == b"java-1"
    served = prediction.event.model_dump(mode="json")
    assert {k: served[k] for k in PREDICTION if k != "timestamp"} == {
        k: v for k, v in PREDICTION.items() if k != "timestamp"
    }
    assert prediction.event.timestamp.isoformat() == PREDICTION["timestamp"]
    assert prediction.event.features == PREDICTION["features"]
    assert outcome.event.label is False and outcome.event.source == "billing-service"
