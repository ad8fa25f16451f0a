"""docs/operating.md's "Scaling out", run word for word: the deployment's key made once, two worker
hosts (their own homes) sharing an S3 store (a real S3 API server) and the key, one SIGKILLed and
the other taking over, and a service host serving the newest version with the public key only. Only
the example's bucket, secret paths, homes and port are replaced by the test's."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest

from adaptloop.schemas import ModelVersion
from adaptloop.schemas.topics import MODEL_UPDATES
from adaptloop.streams import EventProducer, ensure_topics
from adaptloop.streams.versions import read_all
from adaptloop.testing import free_port

from .loop_helpers import send_decisions

pytestmark = pytest.mark.kafka

OPERATING = Path(__file__).resolve().parents[2] / "docs" / "operating.md"


def scale_out_blocks() -> list[list[str]]:
    """The bash blocks of the "Scaling out" section: the key, a worker host, a service host."""
    section = OPERATING.read_text().split("## Scaling out", 1)[1].split("\n## ", 1)[0]
    blocks = [
        [line for line in block.splitlines() if line.strip()]
        for block in re.findall(r"```bash\n(.*?)```", section, re.S)
    ]
    assert len(blocks) == 3, (
        "the scale-out section has three bash blocks: the key, a worker host, a service host"
    )
    return blocks


def _run(
    lines: list[str], env: dict[str, str], replaced: dict[str, str], log: Path
) -> subprocess.Popen[bytes] | None:
    """Run a block as a shell would: ``export`` lines set ``env``; the last line starts a
    long-running command (returned) when it is ``adaptloop worker`` or ``adaptloop serve``; any
    other line must succeed."""
    for line in lines:
        for example, actual in replaced.items():
            line = line.replace(example, actual)
        if line.startswith("export "):
            name, value = line.removeprefix("export ").split("=", 1)
            env[name] = value.strip("'")
        elif line.startswith(("adaptloop worker", "adaptloop serve")):
            with open(log, "wb") as out:
                return subprocess.Popen(
                    ["bash", "-c", f"exec {line}"],
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
        else:
            result = subprocess.run(
                ["bash", "-c", line], env=env, capture_output=True, text=True, timeout=120
            )
            assert result.returncode == 0, f"{line}\n{result.stdout}\n{result.stderr}"
    return None


def test_the_documented_scale_out_runs_as_written(kafka_bootstrap, s3_bucket, tmp_path):
    keys, worker_host, service_host = scale_out_blocks()
    run = uuid.uuid4().hex[:6]
    prefix = f"scale{run}."
    ensure_topics(kafka_bootstrap, prefix=prefix, partitions=2)
    port = free_port()
    replaced = {
        "s3://bucket/models": s3_bucket,
        "s3://bucket/archive": s3_bucket.replace("/models?", "/archive?"),
        "/run/secrets/adaptloop-signing.key": str(tmp_path / "secrets" / "adaptloop-signing.key"),
        "/etc/adaptloop/model-signing.pub": str(tmp_path / "etc" / "model-signing.pub"),
        "--port 8000": f"--port {port}",
    }
    env = {
        **os.environ,
        # `adaptloop` as in an activated venv
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "ADAPTLOOP_BOOTSTRAP": kafka_bootstrap,
        "ADAPTLOOP_TOPIC_PREFIX": prefix,
        "ADAPTLOOP_GROUP": f"scale{run}",
        "ADAPTLOOP_PARTITIONS": "2",
        "ADAPTLOOP_METRICS_PORT": "null",
        "ADAPTLOOP_SNAPSHOT_SECONDS": "null",
        "ADAPTLOOP_MODELS": '[{"name": "churn", "recipe": "logistic", "checkpoint_every": 100, '
        '"checkpoint_seconds": 1}]',
    }
    assert _run(keys, dict(env), replaced, tmp_path / "keys.log") is None
    processes = []
    try:
        for host in ("a", "b"):
            home = {"/var/lib/adaptloop": str(tmp_path / f"host-{host}")}
            worker = _run(
                worker_host, dict(env), {**replaced, **home}, tmp_path / f"worker-{host}.log"
            )
            assert worker is not None
            processes.append(worker)
        with EventProducer(kafka_bootstrap, topic_prefix=prefix) as producer:
            send_decisions(
                producer,
                [({"tenure": float(i % 13)}, i % 13 < 4) for i in range(300)],
                model="churn",
            )
        _wait_for_versions(kafka_bootstrap, prefix, 300, processes)
        os.killpg(processes[0].pid, signal.SIGKILL)  # one worker host dies
        processes[0].wait()
        with EventProducer(kafka_bootstrap, topic_prefix=prefix) as producer:
            rows = [({"tenure": float(i % 13)}, i % 13 < 4) for i in range(300, 600)]
            send_decisions(producer, rows, first=300, model="churn")
        newest = _wait_for_versions(kafka_bootstrap, prefix, 600, processes[1:], timeout=300)

        service = _run(service_host, dict(env), replaced, tmp_path / "serve.log")
        assert service is not None
        processes.append(service)
        deadline, answer = time.monotonic() + 120, None
        while time.monotonic() < deadline and service.poll() is None:
            try:
                answer = httpx.get(f"http://127.0.0.1:{port}/v1/models/churn", timeout=5).json()
                if answer.get("version") == newest.version:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        assert answer is not None and answer.get("version") == newest.version, (
            answer,
            (tmp_path / "serve.log").read_text()[-3000:],
        )
    finally:
        for process in processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(60)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()
    for host in ("a", "b"):
        assert not (tmp_path / f"host-{host}" / "keys").exists(), (
            f"worker host {host} made a key of its own"
        )


def _wait_for_versions(
    bootstrap: str,
    prefix: str,
    examples: int,
    workers: list[subprocess.Popen[bytes]],
    timeout: float = 180,
) -> ModelVersion:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert all(worker.poll() is None for worker in workers), "a worker host stopped"
        versions = [
            v for v in read_all(bootstrap, MODEL_UPDATES, prefix) if isinstance(v, ModelVersion)
        ]
        done = [v for v in versions if v.examples_seen == examples]
        if done:
            return max(done, key=lambda v: v.sequence or 0)
        time.sleep(0.5)
    raise AssertionError(f"no version learned {examples} examples within {timeout:.0f}s")
