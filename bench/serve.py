"""``adaptloop serve`` under load on 127.0.0.1: its top rate of predictions, and latencies at half
that rate.

A worker learns a logistic model from 2,000 decisions; the server serves it (each prediction also
logs its decision to Kafka, as in production). Clients keep their connections open, as a service's
HTTP client would, each in a process of its own. The top rate is what ``CLIENTS`` clients reach back
to back; the latencies are measured with the same clients paced to half that rate together (an open
loop: each request leaves on its schedule, so a slow answer delays no later request's clock).
"""

from __future__ import annotations

import http.client
import multiprocessing
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from multiprocessing.connection import Connection

import httpx
import orjson

from adaptloop.learners.spec import LearnerSpec
from adaptloop.schemas import ModelVersion, OutcomeEvent, PredictionEvent
from adaptloop.schemas.topics import MODEL_UPDATES
from adaptloop.settings import Settings
from adaptloop.streams import EventProducer, delete_topics
from adaptloop.streams.versions import read_all
from adaptloop.testing import free_port
from adaptloop.worker import settings_env, start_worker_process, stop_worker_process
from bench.learning import WATCH_AND_ALERT
from bench.loop import _settings

CLIENTS = 8
SECONDS = 8.0
PACED_ROUNDS = 3
TRAINING = 2_000


@dataclass
class ServeRun:
    top_rate: float  # predictions per second, back to back
    paced_rate: float  # the rate of the latency run (half the top rate)
    p50_ms: float  # medians over the paced rounds
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
                PredictionEvent(
                    decision_id=f"t{i}",
                    model="s",
                    model_version="v0",
                    features=_features(i),
                    timestamp=at,
                )
            )
            producer.send(
                OutcomeEvent(decision_id=f"t{i}", label=i % 23 < 7, source="bench", timestamp=at)
            )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        versions = read_all(settings.bootstrap_address, MODEL_UPDATES, settings.topic_prefix)
        if any(isinstance(v, ModelVersion) and v.examples_seen >= TRAINING for v in versions):
            return
        time.sleep(0.5)
    raise TimeoutError("the bench's model was not learned within 120 s")


def _client(port: int, k: int, seconds: float, interval: float | None, control: Connection) -> None:
    """One client process on one keep-alive connection (stdlib ``http.client``: a lighter client
    than the server it measures): connects, says it is ready, starts at the time it is sent, then
    sends requests back to back or one every ``interval`` s on its schedule for ``seconds``; sends
    back its latencies and errors."""
    connection = http.client.HTTPConnection("127.0.0.1", port)
    connection.connect()
    control.send("ready")
    start_at: float = control.recv()
    stop_at = start_at + seconds
    latencies, errors = [], 0
    time.sleep(max(0.0, start_at - time.perf_counter()))
    due, i = start_at + k * (interval or 0) / CLIENTS, 0
    while True:
        now = time.perf_counter()
        if now >= stop_at:
            break
        if interval is not None and now < due:
            time.sleep(due - now)
        start = time.perf_counter() if interval is None else due
        body = orjson.dumps({"features": _features(k * 1_000_000 + i)})
        connection.request(
            "POST", "/v1/models/s:predict", body, {"Content-Type": "application/json"}
        )
        response = connection.getresponse()
        response.read()
        latencies.append(time.perf_counter() - start)
        errors += response.status != 200
        due += interval or 0
        i += 1
    connection.close()
    control.send((latencies, errors))
    control.close()


def _load(port: int, seconds: float, interval: float | None) -> tuple[int, list[float], int]:
    """Requests done, their latencies (s) and errors, from CLIENTS client processes for ``seconds``
    (paced every ``interval`` s each, or back to back). Processes, not threads: threads of one
    interpreter would queue for its lock, and that wait would be measured as the server's
    latency."""
    context = multiprocessing.get_context("spawn")
    controls, processes = [], []
    for k in range(CLIENTS):
        ours, theirs = context.Pipe()
        process = context.Process(target=_client, args=(port, k, seconds, interval, theirs))
        process.start()
        controls.append(ours)
        processes.append(process)
    for control in controls:
        assert control.recv() == "ready"
    start_at = time.perf_counter() + 0.2  # CLOCK_MONOTONIC: the same clock in every process
    for control in controls:
        control.send(start_at)
    flat: list[float] = []
    errors = 0
    for control, process in zip(controls, processes, strict=True):
        latencies, failed = control.recv()
        process.join()
        flat += latencies
        errors += failed
    return len(flat), flat, errors


def serve_run(base: Settings) -> ServeRun:
    spec = LearnerSpec(
        name="s",
        recipe="logistic",
        min_examples=1,
        checkpoint_every=500,
        checkpoint_seconds=1,
        drift=WATCH_AND_ALERT,
    )
    settings = _settings(base, [spec], partitions=2)
    worker = start_worker_process(settings, settings.home / "worker.log")
    server = None
    try:
        _learned_model(settings)
        # Serving is measured alone: in production the worker runs on other hosts, and here it would
        # take the cores the server and its clients are measured on. The version it published serves
        # on.
        stop_worker_process(worker)
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
                raise TimeoutError(
                    f"adaptloop serve did not become healthy; see {settings.home / 'serve.log'}"
                )
            time.sleep(0.2)
        _load(port, 2.0, None)  # warm up (connections, the model's first predictions)
        done, _, _ = _load(port, SECONDS, None)
        top = done / SECONDS
        paced = top / 2
        p50s, p99s, errors = [], [], 0
        # this shared machine's slow spells fall on one round, not the median
        for _ in range(PACED_ROUNDS):
            _, latencies, failed = _load(port, SECONDS, CLIENTS / paced)
            ordered = sorted(latencies)
            p50s.append(statistics.median(ordered) * 1000)
            p99s.append(ordered[int(len(ordered) * 0.99)] * 1000)
            errors += failed
        return ServeRun(
            top_rate=top,
            paced_rate=paced,
            p50_ms=statistics.median(p50s),
            p99_ms=statistics.median(p99s),
            errors=errors,
        )
    finally:
        if server is not None:
            server.terminate()
            server.wait(30)
        stop_worker_process(worker)
        delete_topics(settings.bootstrap_address, settings.topic_prefix)
