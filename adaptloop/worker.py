"""``adaptloop worker``: the join (faust), the learner and the archive (consumer helper) from one settings object.

Each role runs in its own process so the join and learning use both cores;
several workers started with the same settings share the partitions of their
consumer groups.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Literal

import orjson

from adaptloop.localkafka import LocalKafka
from adaptloop.settings import Settings
from learners.store import ModelStore
from snapshots.archive import ParquetArchive
from streams.archive_agent import ArchiveAgent
from streams.admin import ensure_topics
from streams.join_agent import create_join_app, run_join_worker
from streams.learner_agent import LearnerAgent

log = logging.getLogger(__name__)

Role = Literal["all", "join", "learn", "archive"]
ROLES: tuple[str, ...] = ("join", "learn", "archive")
HASH_SEED = "0"


def ensure_reproducible_hashing() -> None:
    """Re-exec with PYTHONHASHSEED=0 so model bytes do not depend on str hashing (see learners.store)."""
    if os.environ.get("PYTHONHASHSEED") != HASH_SEED:
        os.environ["PYTHONHASHSEED"] = HASH_SEED
        os.execv(sys.executable, [sys.executable, "-m", "adaptloop", *sys.argv[1:]])


def run_join(settings: Settings) -> None:
    app = create_join_app(
        bootstrap=settings.bootstrap_address, prefix=settings.topic_prefix, partitions=settings.partitions,
        specs=settings.specs, data_dir=settings.home / "faust", tick_seconds=settings.tick_seconds,
        lateness_seconds=settings.lateness_seconds, group=f"{settings.group}-join",
    )
    run_join_worker(app, loglevel={"warning": "warn"}.get(settings.log_level, settings.log_level))


def run_learner(settings: Settings) -> None:
    stop = _stop_on_signals()
    agent = LearnerAgent(
        settings.bootstrap_address, specs=settings.specs, store=ModelStore(settings.models_dir),
        prefix=settings.topic_prefix, group=f"{settings.group}-learner", batch_size=settings.learner_batch,
    )
    agent.run(stop)


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    return stop


def run_archiver(settings: Settings) -> None:
    agent = ArchiveAgent(
        settings.bootstrap_address, archive=ParquetArchive(settings.archive_dir), prefix=settings.topic_prefix,
        group=f"{settings.group}-archive", flush_seconds=settings.archive_flush_seconds,
        flush_rows=settings.archive_flush_rows, snapshot_dir=settings.snapshots_dir, models_dir=settings.models_dir,
        snapshot_seconds=settings.snapshot_seconds,
    )
    agent.run(_stop_on_signals())


def _child(role: str) -> None:
    settings = Settings()
    logging.basicConfig(level=settings.log_level.upper(), format=f"%(asctime)s {role} %(levelname)s %(name)s: %(message)s")
    {"join": run_join, "learn": run_learner, "archive": run_archiver}[role](settings)


def run_worker(settings: Settings, role: Role = "all") -> None:
    """Start the roles and block until SIGTERM/SIGINT (or a role dies)."""
    if not settings.models:
        log.warning("no learner specs configured (ADAPTLOOP_MODELS): training examples will be dead-lettered")
    if settings.bootstrap is None:
        LocalKafka.from_settings(settings).up()
    ensure_topics(settings.bootstrap_address, prefix=settings.topic_prefix, partitions=settings.partitions)
    if role != "all":
        _child(role)
        return
    context = multiprocessing.get_context("spawn")
    children = [context.Process(target=_child, args=(name,), name=f"adaptloop-{name}") for name in ROLES]
    for child in children:
        child.start()
    stopping = threading.Event()

    def _stop(*_: object) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    while not stopping.is_set() and all(child.is_alive() for child in children):
        stopping.wait(0.5)
    for child in children:
        if child.is_alive():
            os.kill(child.pid, signal.SIGTERM)
    for child in children:
        child.join(30)
        if child.is_alive():
            child.kill()
    failed = [child.name for child in children if child.exitcode not in (0, -signal.SIGTERM)]
    if failed and not stopping.is_set():
        raise SystemExit(f"worker role(s) {', '.join(failed)} stopped unexpectedly")


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that gives a child process these exact settings."""
    env = {}
    for name, value in settings.model_dump(mode="json").items():
        if value is None:
            continue
        env[f"ADAPTLOOP_{name.upper()}"] = value if isinstance(value, str) else orjson.dumps(value).decode()
    return env


def start_worker_process(settings: Settings, log_file: Path, role: Role = "all") -> subprocess.Popen:
    """``adaptloop worker`` in a child process with ``settings``; its output goes to ``log_file``."""
    env = {**os.environ, **settings_env(settings), "PYTHONHASHSEED": HASH_SEED}
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "ab") as out:
        return subprocess.Popen([sys.executable, "-m", "adaptloop", "worker", "--role", role], env=env,
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)  # its own process group: one signal reaches every role


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
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()
