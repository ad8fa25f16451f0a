"""``adaptloop worker``: the join, the learner, the archive and AgentOps, one settings object.

Each role runs in its own process so the join and learning use both cores;
several workers started with the same settings share the partitions of their
consumer groups.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any, Literal

import orjson

from adaptloop.learners.store import ModelStore
from adaptloop.localkafka import LocalKafka
from adaptloop.settings import Settings
from adaptloop.snapshots.archive import ParquetArchive
from adaptloop.snapshots.snapshot import ARCHIVED_TOPICS
from adaptloop.streams.admin import ensure_topics
from adaptloop.streams.agentops_agent import AgentOpsAgent
from adaptloop.streams.archive_agent import ArchiveAgent
from adaptloop.streams.join_agent import JoinAgent
from adaptloop.streams.learner_agent import LearnerAgent
from adaptloop.streams.metrics import prepare_multiprocess_dir, read_health, serve

log = logging.getLogger(__name__)

Role = Literal["all", "join", "learn", "archive", "agents"]
ROLES: tuple[str, ...] = ("join", "learn", "archive", "agents")
HASH_SEED = "0"
MAX_RESTARTS, RESTART_WINDOW = 5, 300  # more restarts than this within the window stop the worker


def ensure_reproducible_hashing() -> None:
    """Re-exec with PYTHONHASHSEED=0 so model bytes do not depend on str hashing (see adaptloop.learners.store)."""
    if os.environ.get("PYTHONHASHSEED") != HASH_SEED:
        os.environ["PYTHONHASHSEED"] = HASH_SEED
        os.execv(sys.executable, [sys.executable, "-m", "adaptloop", *sys.argv[1:]])


def run_join(settings: Settings) -> None:
    agent = JoinAgent(
        settings.bootstrap_address,
        specs=settings.specs,
        partitions=settings.partitions,
        prefix=settings.topic_prefix,
        group=f"{settings.group}-join",
        tick_seconds=settings.tick_seconds,
        lateness_seconds=settings.lateness_seconds,
        max_future_seconds=settings.max_future_seconds,
    )
    _ready(
        "join",
        settings,
        ("predictions", "outcomes", "join-clock"),
        f"{settings.group}-join",
        f"training-examples, dead-letters, {agent.changelog}",
    )
    agent.run(_stop_on_signals())


def run_learner(settings: Settings) -> None:
    stop = _stop_on_signals()
    agent = LearnerAgent(
        settings.bootstrap_address,
        specs=settings.specs,
        store=ModelStore(settings.models_dir),
        prefix=settings.topic_prefix,
        group=f"{settings.group}-learner",
        batch_size=settings.learner_batch,
        health_window=settings.health_window,
        max_rejected_share=settings.max_rejected_share,
    )
    _ready(
        "learn",
        settings,
        ("training-examples", "model-commands"),
        f"{settings.group}-learner",
        f"model-updates, drift-alerts, dead-letters; models {', '.join(settings.specs) or '(none)'} in "
        f"{settings.models_dir}",
    )
    agent.run(stop)


def _ready(role: str, settings: Settings, reads: tuple[str, ...], group: str, writes: str) -> None:
    log.info(
        "%s ready: reads %s (group %s) from %s; writes %s",
        role,
        ", ".join(settings.topic_prefix + name for name in reads),
        group,
        settings.bootstrap_address,
        writes,
    )


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    return stop


def run_archiver(settings: Settings) -> None:
    agent = ArchiveAgent(
        settings.bootstrap_address,
        archive=ParquetArchive(settings.archive_dir),
        prefix=settings.topic_prefix,
        group=f"{settings.group}-archive",
        flush_seconds=settings.archive_flush_seconds,
        flush_rows=settings.archive_flush_rows,
        buffer_rows=settings.archive_buffer_rows,
        snapshot_dir=settings.snapshots_dir,
        models_dir=settings.models_dir,
        snapshot_seconds=settings.snapshot_seconds,
        keep_snapshots=settings.keep_snapshots,
    )
    _ready(
        "archive",
        settings,
        tuple(topic.name for topic in ARCHIVED_TOPICS),
        f"{settings.group}-archive",
        f"Parquet files under {settings.archive_dir}, snapshots under {settings.snapshots_dir}",
    )
    agent.run(_stop_on_signals())


def run_agentops(settings: Settings) -> None:
    agent = AgentOpsAgent(
        settings.bootstrap_address,
        limits=settings.guardrails,
        segment_keys=settings.segment_keys,
        prefix=settings.topic_prefix,
        group=f"{settings.group}-agentops",
        publish_seconds=settings.preference_publish_seconds,
    )
    _ready(
        "agents",
        settings,
        ("agent-feedback", "preferences"),
        f"{settings.group}-agentops",
        "preference-store, guardrail-alerts, dead-letters",
    )
    agent.run(_stop_on_signals())


def process_name(role: str) -> str:
    """The name a role's process shows in ``ps`` and ``top`` (Linux keeps 15 characters)."""
    return f"adaptloop-{role}"[:15]


BACKGROUND_ROLES, BACKGROUND_NICENESS = ("archive",), 5
"""The archive may lag (it catches up from Kafka, its files stay exact); the join and the learner decide
how fresh the served models are. When the cores are busy, the archive gives way to them."""

GC_THRESHOLDS = (50_000, 20, 100)
"""Young collections every 50,000 allocations and full ones 100x rarer than Python's default: a role
holds large, long-lived state (the join's table, models), and traversing it again and again costs the
join a third of its throughput (measured with the bench's loop)."""


def tune_gc() -> None:
    """Freeze what start-up made (modules, settings: never garbage) and collect less often."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def _child(role: str) -> None:
    try:
        with open("/proc/self/comm", "w") as comm:  # Linux; elsewhere the roles keep python's name
            comm.write(process_name(role))
    except OSError:
        pass
    settings = Settings()
    logging.basicConfig(
        level=settings.log_level.upper(), format=f"%(asctime)s {role} %(levelname)s %(name)s: %(message)s"
    )
    tune_gc()
    if role in BACKGROUND_ROLES:
        os.nice(BACKGROUND_NICENESS)
    {"join": run_join, "learn": run_learner, "archive": run_archiver, "agents": run_agentops}[role](settings)


def worker_health(children: Sequence[BaseProcess], metrics_dir: Path) -> tuple[bool, dict[str, Any]]:
    """Whether the worker is well, and why not: each role alive, and each model its learner owns not sick.

    >>> worker_health([], Path("/nonexistent"))
    (False, {'roles': {}, 'problems': ['no role runs']})
    """
    roles = {child.name.removeprefix("adaptloop-"): child.is_alive() for child in children}
    problems = [f"role {role} is not running" for role, alive in roles.items() if not alive]
    if not roles:
        problems.append("no role runs")
    models: dict[str, Any] = {}
    for state in read_health(metrics_dir).values():
        for model, health in state.get("models", {}).items():
            models[model] = health
            problems += [f"model {model} is sick: {reason}" for reason in health.get("reasons", [])]
    return not problems, {"roles": roles, "problems": problems, **({"models": models} if models else {})}


def run_worker(settings: Settings, role: Role = "all") -> None:
    """Start the roles (each in its own process), serve metrics and health, block until SIGTERM/SIGINT."""
    if not settings.models:
        log.warning("no learner specs configured (ADAPTLOOP_MODELS): training examples will be dead-lettered")
    if role in ("all", "learn"):
        store = ModelStore(settings.models_dir)
        for spec in settings.specs.values():
            store.check(spec)
    if settings.bootstrap is None:
        LocalKafka.from_settings(settings).up()
    ensure_topics(settings.bootstrap_address, prefix=settings.topic_prefix, partitions=settings.partitions)
    # The roles record metrics and health into files here; this process serves them (adaptloop.streams.metrics).
    metrics_dir = settings.home / "metrics" / str(os.getpid())
    prepare_multiprocess_dir(metrics_dir)
    context = multiprocessing.get_context("spawn")
    roles = ROLES if role == "all" else (role,)
    children = [context.Process(target=_child, args=(name,), name=f"adaptloop-{name}") for name in roles]
    for child in children:
        child.start()
    if settings.metrics_port is not None:
        try:
            serve(settings.metrics_port, lambda: worker_health(children, metrics_dir))
            log.info("metrics on http://localhost:%d/metrics, health on /health", settings.metrics_port)
        except OSError as error:  # another worker on this host has the port: run without the endpoint
            log.warning("no metrics endpoint: port %d: %s", settings.metrics_port, error)
    stopping = threading.Event()

    def _stop(*_: object) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    restarts: list[float] = []
    while not stopping.is_set():
        stopping.wait(0.5)
        for index, child in enumerate(children):
            if child.is_alive() or stopping.is_set():
                continue
            # A role that stops on its own is restarted (its group rebalances, it resumes from its
            # checkpoints); one that keeps dying stops the worker, so a supervisor can see it.
            restarts = [at for at in restarts if time.monotonic() - at < RESTART_WINDOW] + [time.monotonic()]
            if len(restarts) > MAX_RESTARTS:
                log.error(
                    "role %s stopped (exit %s); %d restarts in %ds: giving up",
                    child.name,
                    child.exitcode,
                    MAX_RESTARTS,
                    RESTART_WINDOW,
                )
                stopping.set()
                break
            delay = min(30.0, 2.0 ** (len(restarts) - 1))  # back off: a broker that is down needs time
            log.warning("role %s stopped (exit %s); restarting it in %.0fs", child.name, child.exitcode, delay)
            if stopping.wait(delay):
                break
            children[index] = context.Process(
                target=_child, args=(child.name.removeprefix("adaptloop-"),), name=child.name
            )
            children[index].start()
    failed = [child.name for child in children if not child.is_alive()]
    for child in children:
        if child.is_alive():
            child.terminate()  # SIGTERM: the role finishes its batch and checkpoints
    for child in children:
        child.join(30)
        if child.is_alive():
            child.kill()
    if len(restarts) > MAX_RESTARTS:
        raise SystemExit(f"worker role(s) {', '.join(failed)} kept stopping unexpectedly")


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that gives a child process these exact settings."""
    env = {}
    for name, value in settings.model_dump(mode="json").items():
        env[f"ADAPTLOOP_{name.upper()}"] = (
            value if isinstance(value, str) else orjson.dumps(value).decode()
        )  # None: "null"
    return env


def start_worker_process(settings: Settings, log_file: Path, role: Role = "all") -> subprocess.Popen:
    """``adaptloop worker`` in a child process with ``settings``; its output goes to ``log_file``."""
    env = {**os.environ, **settings_env(settings), "PYTHONHASHSEED": HASH_SEED}
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "adaptloop", "worker", "--role", role],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )  # its own process group: one signal reaches every role


def stop_worker_process(process: subprocess.Popen, timeout: float = 60.0) -> int:
    """SIGTERM, wait (the learner checkpoints on the way out), SIGKILL the group if it hangs."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            return process.wait(timeout)
        except subprocess.TimeoutExpired:
            kill_worker_process(process)
    return process.wait()


def kill_worker_process(process: subprocess.Popen) -> None:
    """SIGKILL the worker and every role it started: a crash, as in a fault test."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()
