"""``adaptloop serve`` under load on 127.0.0.1: its top rate of predictions, and latencies at half that rate.

A worker learns a logistic model from 2,000 decisions; the server serves it (each prediction also logs its
decision to Kafka, as in production). Clients keep their connections open, as a service's HTTP client
would. The top rate is what ``CLIENTS`` clients reach back to back; the latencies are measured with the
same clients paced to half that rate together (an open loop: each request leaves on its schedule, so a
slow answer delays no later request's clock).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx

from adaptloop.learners.spec import LearnerSpec
from adaptloop.schemas import ModelVersion, OutcomeEvent, PredictionEvent
from adaptloop.schemas.topics import MODEL_UPDATES
from adaptloop.settings import Settings
from adaptloop.streams import EventProducer, delete_topics
from adaptloop.streams.versions import read_all
from adaptloop.testing import free_port
from adaptloop.worker import settings_env, start_worker_process, stop_worker_process
from bench.loop import _settings

CLIENTS = 8
SECONDS = 8.0
TRAINING = 2_000


@dataclass
class ServeRun:
    top_rate: float  # predictions per second, back to back
    paced_rate: float  # the rate of the latency run (half the top rate)
    p50_ms: float
    p99_ms: float
    errors: int


def _features(i: int) -> dict[str, float]:
    return {"tenure": float(i % 23), "spend": float(i % 17) * 3.5, "tickets": float(i % 5)}


def _learned_model(settings: Settings) -> None:
    start = datetime.now(UTC)
    with EventProducer(settings.bootstrap_address, topic_prefix=settings.topic_prefix) as producer:
        for i in range(TRAINING):
            at = start + timedelta(milliseconds=i)
            producer.send(
                PredictionEvent(decision_id=f"t{i}", model="s", model_version="v0", features=_features(i), timestamp=at)
            )
            producer.send(OutcomeEvent(decision_id=f"t{i}", label=i % 23 < 7, source="bench", timestamp=at))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        versions = read_all(settings.bootstrap_address, MODEL_UPDATES, settings.topic_prefix)
        if any(isinstance(v, ModelVersion) and v.examples_seen >= TRAINING for v in versions):
            return
        time.sleep(0.5)
    raise TimeoutError("the bench's model was not learned within 120 s")


def _load(base: str, seconds: float, interval: float | None) -> tuple[int, list[float], int]:
    """Requests done, their latencies (s) and errors, from CLIENTS clients for ``seconds`` (paced every
    ``interval`` s each, or back to back)."""
    latencies: list[list[float]] = [[] for _ in range(CLIENTS)]
    errors = [0] * CLIENTS
    stop_at = time.perf_counter() + seconds

    def client(k: int) -> None:
        with httpx.Client(base_url=base, timeout=5) as http:
            due, i = time.perf_counter() + k * (interval or 0) / CLIENTS, 0
            while True:
                now = time.perf_counter()
                if now >= stop_at:
                    return
                if interval is not None and now < due:
                    time.sleep(due - now)
                start = time.perf_counter() if interval is None else due
                response = http.post("/v1/models/s:predict", json={"features": _features(k * 1_000_000 + i)})
                latencies[k].append(time.perf_counter() - start)
                errors[k] += response.status_code != 200
                due += interval or 0
                i += 1

    threads = [threading.Thread(target=client, args=(k,)) for k in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    flat = [value for per_client in latencies for value in per_client]
    return len(flat), flat, sum(errors)


def serve_run(base: Settings) -> ServeRun:
    spec = LearnerSpec(name="s", recipe="logistic", min_examples=1, checkpoint_every=500, checkpoint_seconds=1)
    settings = _settings(base, [spec], partitions=2)
    worker = start_worker_process(settings, settings.home / "worker.log")
    server = None
    try:
        _learned_model(settings)
        port = free_port()
        log = open(settings.home / "serve.log", "wb")  # noqa: SIM115 (kept open for the server's life)
        server = subprocess.Popen(
            [sys.executable, "-m", "adaptloop", "serve", "--port", str(port)],
            env={**os.environ, **settings_env(settings)},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"adaptloop serve did not become healthy; see {settings.home / 'serve.log'}")
            time.sleep(0.2)
        _load(url, 2.0, None)  # warm up (connections, the model's first predictions)
        done, _, _ = _load(url, SECONDS, None)
        top = done / SECONDS
        paced = top / 2
        _, latencies, errors = _load(url, SECONDS, CLIENTS / paced)
        ordered = sorted(latencies)
        return ServeRun(
            top_rate=top,
            paced_rate=paced,
            p50_ms=statistics.median(ordered) * 1000,
            p99_ms=ordered[int(len(ordered) * 0.99)] * 1000,
            errors=errors,
        )
    finally:
        if server is not None:
            server.terminate()
            server.wait(30)
        stop_worker_process(worker)
        delete_topics(settings.bootstrap_address, settings.topic_prefix)
