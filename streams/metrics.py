"""Prometheus metrics of the worker's roles, and the one HTTP endpoint that serves them with health.

The roles run in separate processes; they record into prometheus-client's
multiprocess files (``PROMETHEUS_MULTIPROC_DIR``, set by the worker before it
starts them), and the worker's parent process serves ``/metrics`` (all roles
summed) and ``/health`` (200 while every role is alive, 503 otherwise) on
``ADAPTLOOP_METRICS_PORT``.
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Callable, Container
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

EVENTS_IN = Counter(
    "adaptloop_events_in_total", "Records read, per role and topic.", ["role", "topic"]
)
WEBHOOK_DELIVERIES = Counter(
    "adaptloop_webhook_deliveries_total",
    "Alerts offered to webhooks, by result: delivered, summary, retried (one retry), "
    "failed, duplicate (not "
    "posted again within dedup_seconds), rate_limited (held for the next summary).",
    ["result"],
)
REPARTITIONED = Counter(
    "adaptloop_join_repartitioned_total",
    "Predictions and outcomes the join read on another partition than murmur2 of their "
    "decision_id gives "
    "(a producer with another partitioner) and sent on to their own partition, per topic.",
    ["topic"],
)
EVENTS_OUT = Counter(
    "adaptloop_events_out_total", "Records written, per role and topic.", ["role", "topic"]
)
DEAD_LETTERS = Counter(
    "adaptloop_dead_letters_total", "Records dead-lettered, per role and kind.", ["role", "kind"]
)
RECLAIMED = Counter(
    "adaptloop_slots_reclaimed_total",
    "Undeclared agents or variants whose preference-store slot went to a newcomer (each "
    "also a guardrail alert).",
    ["kind"],
)
JOINS = Counter(
    "adaptloop_join_results_total",
    "Decisions ended by the join, per model and status "
    "(models without a learner spec counted together as '(unregistered)').",
    ["model", "status"],
)
LEARNED = Counter("adaptloop_examples_learned_total", "Examples learned, per model.", ["model"])
VERSIONS = Counter(
    "adaptloop_model_versions_total",
    "Model versions published, per model and reason.",
    ["model", "reason"],
)
MODEL_METRIC = Gauge(
    "adaptloop_model_metric",
    "Metrics of each model's current version (shadow.*, production.*).",
    ["model", "metric"],
    multiprocess_mode="mostrecent",
)
DRIFT_ALERTS = Counter(
    "adaptloop_drift_alerts_total", "Drift alerts, per model and signal.", ["model", "signal"]
)
CONSUMER_LAG = Gauge(
    "adaptloop_consumer_lag",
    "Records behind the end of each input partition, per role.",
    ["role", "topic", "partition"],
    multiprocess_mode="mostrecent",
)
ARCHIVED = Counter(
    "adaptloop_archived_rows_total", "Rows written to the Parquet archive, per topic.", ["topic"]
)
REFRESH_LAG = Histogram(
    "adaptloop_refresh_lag_seconds",
    "Version published -> served by a ModelClient.",
    ["model"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10),
)

REJECTED = Counter(
    "adaptloop_examples_rejected_total",
    "Training examples a model refused before learning, per model and what broke its "
    "contract (label, features, "
    "unknown_model).",
    ["model", "reason"],
)
MODEL_ERRORS = Counter(
    "adaptloop_model_errors_total",
    "Times a model raised while it predicted or learned, and was restored without the "
    "example to blame.",
    ["model", "stage"],
)
NOT_PRODUCTION = Counter(
    "adaptloop_decisions_not_production_total",
    "Joined decisions not scored as a version's production: answered by the model's default "
    "(fallback) or by a "
    "version the loop never published (external).",
    ["model", "kind"],
)
SERVING_FALLBACKS = Counter(
    "adaptloop_serving_fallbacks_total",
    "Predictions a ModelClient answered with an earlier version (or the model's default) "
    "because the current "
    "one raised.",
    ["model"],
)

UNREGISTERED = "(unregistered)"


def model_label(model: str, registered: Container[str]) -> str:
    """The ``model`` label of a metric counted from input: a model name any producer can write is
    only a label if a spec registers it, so a typo or a hostile producer cannot add label values
    (each one a time series kept by the worker and by Prometheus) without bound.

    >>> model_label("churn", {"churn"}), model_label("churn-typo-1234", {"churn"})
    ('churn', '(unregistered)')
    """
    return model if model in registered else UNREGISTERED


def prepare_multiprocess_dir(directory: Path) -> None:
    """Empty ``directory`` and point prometheus-client at it (before the role processes start)."""
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)


def write_health(role: str, state: dict[str, Any]) -> None:
    """Leave a role's health (its models, its broker) where the worker's ``/health`` reads it: a
    file in the worker's metrics directory, replaced atomically. Outside a worker (no directory),
    nothing."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not directory:
        return
    path = Path(directory) / f"health-{role}.json"
    temp = path.with_name(f".{path.name}.tmp")
    temp.write_bytes(orjson.dumps(state))
    os.replace(temp, path)


def read_health(directory: Path) -> dict[str, dict[str, Any]]:
    """Each role's health as it last wrote it."""
    found = {}
    for path in sorted(directory.glob("health-*.json")):
        try:
            found[path.stem.removeprefix("health-")] = orjson.loads(path.read_bytes())
        except (OSError, orjson.JSONDecodeError):
            continue  # being replaced: the next request reads it
    return found


def serve(
    port: int, health: Callable[[], tuple[bool, dict[str, Any]]], host: str = "127.0.0.1"
) -> ThreadingHTTPServer:
    """Serve ``/metrics`` (the roles' multiprocess metrics), ``/health`` (200 while the worker is
    well, 503 and why while it is not) and ``/live`` (200 while the process answers) in a daemon
    thread."""
    from prometheus_client import multiprocess

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.startswith("/metrics"):
                registry = CollectorRegistry()
                multiprocess.MultiProcessCollector(registry)
                body, status, kind = generate_latest(registry), 200, CONTENT_TYPE_LATEST
            elif self.path.startswith("/health"):
                ok, state = health()
                body = orjson.dumps({"status": "ok" if ok else "degraded", **state})
                status, kind = (200 if ok else 503), "application/json"
            elif self.path.startswith("/live"):
                body, status, kind = b'{"status":"alive"}', 200, "application/json"
            else:
                body, status, kind = b"try /metrics, /health or /live\n", 404, "text/plain"
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer((host, port), Handler)
    threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True).start()
    return server


def record_lag(role: str, consumer: object) -> None:
    """Set the lag gauge of every partition assigned to a confluent-kafka ``consumer``.

    The high watermarks are those of the last fetch responses (``cached``): asking the broker
    for each partition would block the role's loop, for seconds under load.
    """
    assignment = consumer.assignment()  # type: ignore[attr-defined]
    if not assignment:
        return
    for tp in consumer.position(assignment):  # type: ignore[attr-defined]
        if tp.offset < 0:
            continue
        _, high = consumer.get_watermark_offsets(tp, cached=True)  # type: ignore[attr-defined]
        if high < 0:  # nothing fetched from this partition yet
            continue
        CONSUMER_LAG.labels(role, tp.topic, str(tp.partition)).set(max(0, high - tp.offset))
