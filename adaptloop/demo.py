"""The demo: a drifting River stream served, answered late (or never), learned, and served again.

Decisions go through :class:`ModelClient.predict` (which logs them); outcomes
arrive after random delays, 10% never, a few twice; a worker process joins,
learns and publishes versions; the client picks each one up by itself.
"""

from __future__ import annotations

import heapq
import random
import statistics
import subprocess
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text
from river import metrics
from river.datasets import synth

from adaptloop.learners.spec import DriftSpec, LearnerSpec
from adaptloop.localkafka import LocalKafka
from adaptloop.progress import Steps
from adaptloop.schemas import DeadLetter, DriftAlert, ModelVersion, OutcomeEvent, TrainingExample
from adaptloop.schemas.errors import AdaptloopError
from adaptloop.schemas.topics import (
    DEAD_LETTERS,
    DRIFT_ALERTS,
    MODEL_UPDATES,
    OUTCOMES,
    PREDICTIONS,
    TRAINING_EXAMPLES,
    Topic,
)
from adaptloop.settings import Settings
from adaptloop.snapshots.archive import count_archived
from adaptloop.snapshots.snapshot import create_snapshot, snapshot_name
from adaptloop.streams import DeadLetters, EventConsumer, EventProducer, ensure_topics
from adaptloop.streams.model_client import ModelClient
from adaptloop.worker import start_worker_process, stop_worker_process

MODEL = "sine"


@dataclass
class Scenario:
    decisions: int = 12_000
    rate: float = 400.0  # decisions per second
    horizon: float = 3.0  # seconds the join waits for an outcome
    mean_delay: float = 0.8  # seconds; some outcomes come after the horizon (late)
    missing: float = 0.10
    duplicates: float = 0.02
    malformed: int = 20
    seed: int = 7
    # the drift policy (the spec's default)
    policy: Literal["alert", "challenger", "rollback"] = "challenger"


@dataclass
class Watcher:
    """Reads what the worker produced, in the background, for live progress and the final table."""

    statuses: Counter = field(default_factory=Counter)
    versions: list[ModelVersion] = field(default_factory=list)
    dead: Counter = field(default_factory=Counter)
    alerts: list[DriftAlert] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self, settings: Settings) -> None:
        sink = DeadLetters(
            EventProducer(settings.connection(), topic_prefix=settings.topic_prefix), "demo"
        )
        with EventConsumer(
            settings.connection(),
            f"demo-watch-{uuid.uuid4().hex}",
            [TRAINING_EXAMPLES, MODEL_UPDATES, DEAD_LETTERS, DRIFT_ALERTS],
            dead_letters=sink,
            prefix=settings.topic_prefix,
        ) as consumer:
            while not self.stop.is_set():
                for record in consumer.poll(5000, 0.2):
                    event = record.event
                    if isinstance(event, TrainingExample):
                        self.statuses[event.status] += 1
                    elif isinstance(event, ModelVersion):
                        self.versions.append(event)
                    elif isinstance(event, DeadLetter):
                        self.dead[event.kind] += 1
                    elif isinstance(event, DriftAlert):
                        self.alerts.append(event)


def demo_settings(settings: Settings, scenario: Scenario) -> Settings:
    run = uuid.uuid4().hex[:6]
    spec = LearnerSpec(
        name=MODEL,
        recipe="logistic",
        metrics=["Accuracy"],
        checkpoint_every=1000,
        checkpoint_seconds=2.0,
        horizon_seconds=scenario.horizon,
        # answered (flagged) until a version has learned min_examples (100)
        default_prediction=False,
        drift=DriftSpec(policy=scenario.policy),
    )
    return settings.model_copy(
        update={
            # the worker uses this broker, it does not start its own
            "bootstrap": settings.bootstrap_address,
            "topic_prefix": f"{settings.topic_prefix}demo-{run}.",
            "home": settings.home / "demo" / run,
            "models": [spec],
            "group": f"demo-{run}",
            "archive_flush_seconds": 1.0,
        }
    )


def run_demo(base: Settings, console: Console, scenario: Scenario | None = None) -> dict[str, Any]:
    scenario = scenario or Scenario()
    if base.bootstrap is None:
        console.print("starting the local Kafka broker (adaptloop kafka up)", markup=False)
        status = LocalKafka.from_settings(base).up_for_plaintext_clients()
        console.print(
            f"local Kafka at [bold]{escape(status.bootstrap)}[/] "
            + escape(
                f"({'already running' if status.already_running else 'started'}, log "
                f"{status.log_file})"
            )
        )
    settings = demo_settings(base, scenario)
    ensure_topics(
        settings.connection(),
        prefix=settings.topic_prefix,
        partitions=settings.partitions,
        replication=settings.replication,
    )
    log_file = settings.home / "worker.log"
    worker = start_worker_process(settings, log_file)
    watcher = Watcher()
    watch = threading.Thread(target=watcher.run, args=(settings,), daemon=True)
    watch.start()
    console.print(
        f"worker started (pid {worker.pid}, log {log_file}); topics prefixed "
        f"{settings.topic_prefix!r}"
        + (
            f"; metrics on http://localhost:{settings.metrics_port}/metrics"
            if settings.metrics_port
            else ""
        ),
        markup=False,
    )
    try:
        with Steps(console, "waiting for the worker to publish the first model version") as steps:
            deadline = time.monotonic() + 120
            while not watcher.versions and time.monotonic() < deadline:
                _check_worker(worker, log_file)
                steps.update()
                time.sleep(0.2)
        with ModelClient(
            MODEL,
            bootstrap=settings.connection(),
            store=settings.model_store(),
            prefix=settings.topic_prefix,
            wait=120,
        ) as client:
            served = _serve(settings, scenario, client, watcher, console)
            _settle(scenario, watcher, served["predictions"], console, worker, log_file)
            report = _report(scenario, watcher, client, served)
        report["policy"] = scenario.policy
        report["snapshot"] = _snapshot(settings, watcher, served["predictions"], console)
    finally:
        watcher.stop.set()
        stop_worker_process(worker)
    _print(console, report)
    return report


def _stream(scenario: Scenario):
    # River's Sine concepts with an abrupt drift halfway: the concept reverses, so a model that
    # does not keep learning goes from ~98% to worse than a coin.
    stream = synth.ConceptDriftStream(
        stream=synth.Sine(classification_function=0, seed=scenario.seed),
        drift_stream=synth.Sine(classification_function=1, seed=scenario.seed),
        position=scenario.decisions // 2,
        width=max(1, scenario.decisions // 200),
        seed=scenario.seed,
    )
    for x, y in stream.take(scenario.decisions):
        yield {f"x{k}": float(v) for k, v in x.items()}, bool(y)


def _serve(
    settings: Settings, scenario: Scenario, client: ModelClient, watcher: Watcher, console: Console
) -> dict[str, Any]:
    rng = random.Random(scenario.seed)
    pending: list[tuple[float, int, OutcomeEvent]] = []
    windows: list[dict[str, Any]] = []
    window_size = max(1, scenario.decisions // 12)
    accuracy, versions_used = metrics.Accuracy(), Counter[str]()
    sent_outcomes = 0
    started = time.monotonic()
    with (
        EventProducer(settings.connection(), topic_prefix=settings.topic_prefix) as producer,
        Steps(console, "serving", total=scenario.decisions) as progress,
    ):
        for i, (x, y) in enumerate(_stream(scenario)):
            due = started + i / scenario.rate
            while (now := time.monotonic()) < due or (pending and pending[0][0] <= now):
                if pending and pending[0][0] <= now:
                    _, _, outcome = heapq.heappop(pending)
                    producer.send(outcome.model_copy(update={"timestamp": datetime.now(UTC)}))
                    sent_outcomes += 1
                else:
                    time.sleep(min(0.002, max(0.0, due - now)))
            result = client.predict(x, decision_id=f"{settings.topic_prefix}{i}")
            accuracy.update(y, result.prediction)
            versions_used[result.model_version] += 1
            if rng.random() >= scenario.missing:
                outcome = OutcomeEvent(decision_id=result.decision_id, label=y, source="demo")
                delay = rng.expovariate(1 / scenario.mean_delay)
                heapq.heappush(pending, (time.monotonic() + delay, i, outcome))
                if rng.random() < scenario.duplicates:
                    heapq.heappush(pending, (time.monotonic() + delay + 0.1, -i, outcome))
            if (i + 1) % window_size == 0:
                windows.append(
                    {
                        "decisions": f"{i + 2 - window_size}-{i + 1}",
                        "production": accuracy.get(),
                        "versions": len(versions_used),
                        "shadow": _latest_shadow(watcher),
                    }
                )
                accuracy, versions_used = metrics.Accuracy(), Counter()
            if i % 200 == 0:
                progress.update(
                    completed=i + 1,
                    status=f"version {result.model_version[:8]} "
                    f"({len(watcher.versions)} published), joined {watcher.statuses['joined']}",
                )
        while pending:
            _, _, outcome = heapq.heappop(pending)
            time.sleep(max(0.0, pending[0][0] - time.monotonic()) if pending else 0)
            producer.send(outcome.model_copy(update={"timestamp": datetime.now(UTC)}))
            sent_outcomes += 1
        for n in range(scenario.malformed):
            producer.send_bytes(
                OUTCOMES.full_name(settings.topic_prefix), f"bad-{n}".encode(), b'{"decision_id": '
            )
        progress.update(completed=scenario.decisions)
    return {
        "predictions": scenario.decisions,
        "outcomes": sent_outcomes,
        "windows": windows,
        "seconds": time.monotonic() - started,
    }


def _latest_shadow(watcher: Watcher) -> float | None:
    return watcher.versions[-1].metrics.get("shadow.Accuracy") if watcher.versions else None


def _check_worker(worker: subprocess.Popen, log_file: Path) -> None:
    if worker.poll() is not None:
        tail = "\n".join(log_file.read_text(errors="replace").splitlines()[-15:])
        raise AdaptloopError(
            f"the worker stopped (exit code {worker.returncode}); the end of {log_file}:\n{tail}"
        )


def _settle(
    scenario: Scenario,
    watcher: Watcher,
    predictions: int,
    console: Console,
    worker: subprocess.Popen,
    log_file: Path,
) -> None:
    """Wait until every decision has ended (joined or expired) and the learner has published all it
    learned."""
    deadline = time.monotonic() + 120
    with Steps(
        console, "waiting for the last outcomes to join or expire and the last version to publish"
    ) as steps:
        while time.monotonic() < deadline:
            steps.update(
                status=f"joined {watcher.statuses['joined']:,}, expired "
                f"{watcher.statuses['expired']:,}"
            )
            done = watcher.statuses["joined"] + watcher.statuses["expired"] == predictions
            learned = (
                bool(watcher.versions)
                and watcher.versions[-1].examples_seen == watcher.statuses["joined"]
            )
            if done and learned and sum(watcher.dead.values()) >= scenario.malformed:
                return
            _check_worker(worker, log_file)
            time.sleep(0.2)
    console.print("[yellow]the loop did not settle within 120 s; the table shows where it stood[/]")


def archived_rows(settings: Settings, topic: Topic) -> int:
    """How many records of ``topic`` the archive holds."""
    return count_archived(settings.archive_location, topic.full_name(settings.topic_prefix))


def _snapshot(settings: Settings, watcher: Watcher, predictions: int, console: Console) -> Path:
    """Once the archive holds everything the demo saw, a snapshot for the analysts (taken while the
    worker runs)."""
    expected = {
        PREDICTIONS: predictions,
        TRAINING_EXAMPLES: sum(watcher.statuses.values()),
        MODEL_UPDATES: len(watcher.versions),
        DEAD_LETTERS: sum(watcher.dead.values()),
    }
    deadline = time.monotonic() + 60
    with Steps(
        console, "waiting for the archive to catch up, then writing a DuckDB snapshot"
    ) as steps:
        while any(archived_rows(settings, topic) < count for topic, count in expected.items()):
            steps.update()
            if time.monotonic() > deadline:
                console.print(
                    "[yellow]the archive did not catch up within 60 s; the snapshot "
                    "shows where it stood[/]"
                )
                break
            time.sleep(0.5)
        return take_snapshot(settings)


def take_snapshot(settings: Settings) -> Path:
    """A snapshot of the archive now, among the worker's (both demos end with one)."""
    return create_snapshot(
        settings.archive_location,
        settings.models_location,
        settings.snapshots_dir / snapshot_name(datetime.now(UTC)),
        prefix=settings.topic_prefix,
    ).path


def _report(
    scenario: Scenario, watcher: Watcher, client: ModelClient, served: dict[str, Any]
) -> dict[str, Any]:
    lags = sorted(client.refresh_lags)
    joined, expired, late = (watcher.statuses[s] for s in ("joined", "expired", "late"))
    return {
        **served,
        "joined": joined,
        "expired": expired - late,
        "late": late,
        "versions": len({v.version for v in watcher.versions}),
        "learned": watcher.versions[-1].examples_seen,
        "shadow": watcher.versions[-1].metrics.get("shadow.Accuracy"),
        "dead_letters": dict(watcher.dead),
        "refresh_p50": statistics.median(lags) if lags else None,
        "refresh_max": lags[-1] if lags else None,
        "swaps": client.swaps,
        "alerts": Counter(alert.signal for alert in watcher.alerts),
        "actions": Counter(
            v.reason for v in watcher.versions if v.reason in ("promotion", "rollback")
        ),
    }


def _print(console: Console, report: dict[str, Any]) -> None:
    summary = Table(title="adaptloop demo: the loop, end to end", show_header=False)
    summary.add_column(style="bold")
    summary.add_column(justify="right")
    rows = [
        ("decisions served (predictions)", report["predictions"]),
        ("outcomes sent (late, duplicated included)", report["outcomes"]),
        ("joined", report["joined"]),
        ("expired (no outcome)", report["expired"]),
        ("late (outcome after the horizon)", report["late"]),
        ("joined + expired + late", report["joined"] + report["expired"] + report["late"]),
        ("examples learned", report["learned"]),
        ("model versions published", report["versions"]),
        ("versions picked up by serving", report["swaps"]),
        (
            "refresh lag p50 / max (s)",
            _fmt(report["refresh_p50"]) + " / " + _fmt(report["refresh_max"]),
        ),
        ("dead letters", ", ".join(f"{k}: {v}" for k, v in report["dead_letters"].items()) or "0"),
        (
            "drift alerts",
            ", ".join(f"{k}: {v}" for k, v in sorted(report["alerts"].items())) or "0",
        ),
        (
            f"drift policy ({report['policy']}) actions",
            ", ".join(f"{k}: {v}" for k, v in report["actions"].items()) or "none",
        ),
        ("final shadow accuracy", _fmt(report["shadow"])),
        ("serving time (s)", _fmt(report["seconds"])),
    ]
    for name, value in rows:
        summary.add_row(name, Text(str(value)))  # counts by kind and signal: data, never markup
    console.print(summary)
    over_time = Table(title="metric over the stream (concept drift at the middle)")
    for column in (
        "decisions",
        "production accuracy",
        "versions served",
        "shadow accuracy (cumulative)",
    ):
        over_time.add_column(column, justify="right")
    for window in report["windows"]:
        over_time.add_row(
            window["decisions"],
            _fmt(window["production"]),
            str(window["versions"]),
            _fmt(window["shadow"]),
        )
    console.print(over_time)
    console.print(
        f"snapshot for audits: [bold]{escape(str(report['snapshot']))}[/] "
        + escape(
            f"(e.g. `adaptloop audit versions --snapshot {report['snapshot']}`, "
            f"or `duckdb -readonly {report['snapshot']}`)"
        )
    )


def _fmt(value: object) -> str:
    return f"{value:.3f}" if isinstance(value, float) else "-" if value is None else str(value)
