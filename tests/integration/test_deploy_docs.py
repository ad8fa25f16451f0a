"""The README's "Deploying to your cluster", followed word for word against the test broker's
secured listener (SASL_SSL, SCRAM, ACLs): only the example's host, secret paths and home are
replaced by the test's."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from adaptloop.schemas import ModelVersion, OutcomeEvent, PredictionEvent
from adaptloop.schemas.topics import MODEL_UPDATES
from adaptloop.settings import Settings
from adaptloop.streams import EventProducer
from adaptloop.streams.versions import read_all
from adaptloop.worker import stop_worker_process

pytestmark = pytest.mark.kafka

README = Path(__file__).resolve().parents[2] / "README.md"


def deployment_commands() -> list[str]:
    section = README.read_text().split("## Deploying to your cluster", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block, "the README's deployment section has a bash block"
    return [line for line in block.group(1).splitlines() if line.strip()]


def test_the_readme_deployment_runs_as_written_on_a_secured_cluster(secure_kafka, tmp_path):
    files = secure_kafka.security
    replaced = {
        "kafka-1.example.com:9094": secure_kafka.secure_bootstrap,
        "/run/secrets/kafka-worker-password": str(files.password_file("worker")),
        "/run/secrets/kafka-admin-password": str(files.password_file("admin")),
        "/etc/ssl/kafka-ca.pem": str(files.ca),
        "/var/lib/adaptloop": str(tmp_path / "home"),
    }
    commands = []
    for line in deployment_commands():
        for example, actual in replaced.items():
            line = line.replace(example, actual)
        commands.append(line)
    run = uuid.uuid4().hex[:6]
    env = {
        **os.environ,
        # `adaptloop` as in an activated venv
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        # This test's own topics and groups on the shared broker, and no metrics port:
        "ADAPTLOOP_TOPIC_PREFIX": f"deploy{run}.",
        "ADAPTLOOP_GROUP": f"deploy{run}",
        "ADAPTLOOP_METRICS_PORT": "null",
        "ADAPTLOOP_SNAPSHOT_SECONDS": "null",
    }
    assert commands[-1] == "adaptloop worker"
    for line in commands[:-1]:
        if line.startswith("export "):
            name, value = line.removeprefix("export ").split("=", 1)
            env[name] = value.strip("'")
            continue
        result = subprocess.run(
            ["bash", "-c", line], env=env, capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 0, f"{line}\n{result.stdout}\n{result.stderr}"
    with open(tmp_path / "worker.log", "wb") as log:
        worker = subprocess.Popen(
            ["bash", "-c", f"exec {commands[-1]}"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        # A service, as User:service, sends decisions; the worker learns them.
        service = Settings(
            bootstrap=secure_kafka.secure_bootstrap,
            kafka=secure_kafka.client_properties("service"),
            topic_prefix=env["ADAPTLOOP_TOPIC_PREFIX"],
        )
        start = datetime.now(UTC)
        with EventProducer.from_settings(service) as producer:
            for i in range(300):
                at = start + timedelta(milliseconds=i)
                features = {"tenure": float(i % 13)}
                producer.send(
                    PredictionEvent(
                        decision_id=f"d{i}",
                        model="churn",
                        model_version="v0",
                        features=features,
                        timestamp=at,
                    )
                )
                producer.send(
                    OutcomeEvent(
                        decision_id=f"d{i}", label=i % 13 < 4, source="billing", timestamp=at
                    )
                )
        deadline, learned = time.monotonic() + 120, 0
        while learned < 300 and time.monotonic() < deadline and worker.poll() is None:
            versions = read_all(service.connection(), MODEL_UPDATES, service.topic_prefix)
            learned = max(
                (v.examples_seen for v in versions if isinstance(v, ModelVersion)), default=0
            )
            time.sleep(0.5)
        assert learned == 300, (tmp_path / "worker.log").read_text()[-3000:]
        assert (tmp_path / "home" / "keys" / "model-signing.pub").exists()
    finally:
        stop_worker_process(worker)
