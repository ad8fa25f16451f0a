"""``adaptloop worker``: start the roles (:mod:`adaptloop.roles`), each in a process of its own,
keep them running, and serve their metrics and health.

Each role runs in its own process, so the join and learning use both cores; several workers started
with the same settings share the partitions of their consumer groups. A role that stops is started
again:

- after a Kafka outage (exit status :data:`~adaptloop.streams.outage.OUTAGE_EXIT`), always, with a
  backoff capped at 30 s: the new process waits for Kafka as long as it takes, so the worker
  outlasts any outage;
- after a crash, with the same backoff, unless the same role crashed more than :data:`MAX_RESTARTS`
  times in :data:`RESTART_WINDOW` seconds: then the worker stops, so that its own supervisor
  (systemd, Kubernetes) sees it. Each role has its budget of its own;
- never after a refusal (exit status :data:`~adaptloop.streams.outage.REFUSED_EXIT`: the broker
  refused the login or an ACL denied a topic, or a setting is wrong): the worker stops at once, its
  role having said why.

Before any role starts, the worker checks every model spec
(:func:`adaptloop.learners.recipes.check_spec`): a misspelt recipe, metric or drift detector stops
it with one line naming the model, the field, the value and the choices.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any, Literal

import orjson

from adaptloop.localkafka import LocalKafka
from adaptloop.roles import roles_of, run_role
from adaptloop.schemas.errors import SpecChanged
from adaptloop.settings import Settings
from adaptloop.streams.admin import ensure_topics
from adaptloop.streams.metrics import prepare_multiprocess_dir, read_health, serve
from adaptloop.streams.outage import OUTAGE_EXIT, REFUSED_EXIT, wait_patiently
from adaptloop.streams.specs import seed

log = logging.getLogger(__name__)

Role = Literal["all", "join", "learn", "archive", "agents", "notify"]
HASH_SEED = "0"
# more crashes of one role than this within the window stop the worker
MAX_RESTARTS, RESTART_WINDOW = 5, 300
BACKOFF_CAP_SECONDS = 30.0
# a role that ran this long before it stopped for an outage starts a new series of backoffs
STEADY_SECONDS = 60.0


def ensure_reproducible_hashing() -> None:
    """Re-exec with PYTHONHASHSEED=0 so model bytes do not depend on str hashing (see
    adaptloop.learners.store).

    ``-P``: the working directory is not put first on ``sys.path`` (``-m`` would), so a folder named
    ``adaptloop`` where the worker starts (a checkout, an image's build folder) is never imported
    instead of the installed package.
    """
    if os.environ.get("PYTHONHASHSEED") != HASH_SEED:
        os.environ["PYTHONHASHSEED"] = HASH_SEED
        os.execv(sys.executable, [sys.executable, "-P", "-m", "adaptloop", *sys.argv[1:]])


@dataclass
class RoleProcess:
    """One role's process, and when it stopped before (to back off, and to count crashes)."""

    role: str
    process: BaseProcess
    crashes: list[float] = field(default_factory=list)  # monotonic times, within the window
    outages: int = 0  # stops in a row for an outage (for the backoff)
    started: float = field(default_factory=time.monotonic)  # when its process was started


def worker_health(roles: Sequence[RoleProcess], metrics_dir: Path) -> tuple[bool, dict[str, Any]]:
    """Whether the worker is well, and why not: each role running, Kafka answering, no model sick.

    >>> worker_health([], Path("/nonexistent"))
    (False, {'roles': {}, 'problems': ['no role runs']})
    """
    alive = {role.role: role.process.is_alive() for role in roles}
    problems = [f"role {name} is not running" for name, running in alive.items() if not running]
    if not alive:
        problems.append("no role runs")
    models: dict[str, Any] = {}
    since: list[float] = []
    for state in read_health(metrics_dir).values():
        broker = state.get("broker", {})
        if "unreachable_since" in broker:
            since.append(broker["unreachable_since"])
        for model, health in state.get("models", {}).items():
            models[model] = health
            problems += [f"model {model} is sick: {reason}" for reason in health.get("reasons", [])]
    if since:
        first = min(since)
        problems.insert(
            0,
            "broker unreachable since "
            f"{datetime.fromtimestamp(first, UTC).isoformat(timespec='seconds')}"
            f" ({time.time() - first:,.0f}s)",
        )
    return not problems, {
        "roles": alive,
        "problems": problems,
        **({"models": models} if models else {}),
    }


def run_worker(settings: Settings, role: Role = "all") -> None:
    """Start the roles (each in its own process), serve metrics and health, block until
    SIGTERM/SIGINT."""
    # River: a second of start-up, once the settings are read
    from adaptloop.learners.recipes import check_spec

    # a wrong spec is one line, before anything else is said or started
    for spec in settings.models:
        check_spec(spec)
    # One line that says where models, keys and the archive are: services and commands read the same
    # setting.
    log.info("home %s (ADAPTLOOP_HOME)", settings.home.absolute())
    if not settings.models:
        log.warning(
            "no learner specs configured (ADAPTLOOP_MODELS): training examples will be "
            "dead-lettered"
        )
    if role in ("all", "learn"):
        store = settings.worker_model_store()
        for spec in settings.specs.values():
            try:
                store.check(spec)
            # (a live change is on model-specs, which the settings only seed)
            except SpecChanged as error:
                raise SpecChanged(
                    f"{error} (if `adaptloop models update` changed it, make "
                    "ADAPTLOOP_MODELS say the same, or "
                    "leave the model out of it)"
                ) from None
    if settings.bootstrap is None:
        LocalKafka.from_settings(settings).up_for_plaintext_clients()
    wait_patiently(settings.connection())
    ensure_topics(
        settings.connection(),
        prefix=settings.topic_prefix,
        partitions=settings.partitions,
        replication=settings.replication,
    )
    # the models model-specs lacks
    seed(settings.connection(), settings.specs, settings.topic_prefix)
    # The roles record metrics and health into files here; this process serves them
    # (adaptloop.streams.metrics).
    metrics_dir = settings.home / "metrics" / str(os.getpid())
    prepare_multiprocess_dir(metrics_dir)
    context = multiprocessing.get_context("spawn")

    def start(name: str) -> BaseProcess:
        process = context.Process(target=run_role, args=(name,), name=f"adaptloop-{name}")
        process.start()
        return process

    roles = [
        RoleProcess(name, start(name))
        for name in (roles_of(settings) if role == "all" else (role,))
    ]
    if settings.metrics_port is not None:
        try:
            serve(
                settings.metrics_port,
                lambda: worker_health(roles, metrics_dir),
                host=settings.metrics_host,
            )
            log.info(
                "metrics on http://%s:%d/metrics, health on /health",
                settings.metrics_host,
                settings.metrics_port,
            )
        # another worker on this host has the port: run without the endpoint
        except OSError as error:
            log.warning("no metrics endpoint: port %d: %s", settings.metrics_port, error)
    stopping = threading.Event()

    def _stop(*_: object) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    gave_up: list[str] = []
    while not stopping.is_set() and not gave_up:
        stopping.wait(0.5)
        for item in roles:
            if item.process.is_alive() or stopping.is_set():
                continue
            if item.process.exitcode == REFUSED_EXIT:
                log.error("role %s was refused (its log says why); the worker stops", item.role)
                gave_up.append(item.role)
                break
            delay = _restart_delay(item)
            if delay is None:
                log.error(
                    "role %s stopped (exit %s): %d crashes in %ds; giving up",
                    item.role,
                    item.process.exitcode,
                    MAX_RESTARTS,
                    RESTART_WINDOW,
                )
                gave_up.append(item.role)
                break
            why = "Kafka did not answer" if item.process.exitcode == OUTAGE_EXIT else "a crash"
            log.warning(
                "role %s stopped (exit %s: %s); starting it again in %.0fs",
                item.role,
                item.process.exitcode,
                why,
                delay,
            )
            if stopping.wait(delay):
                break
            item.process, item.started = start(item.role), time.monotonic()
    for item in roles:
        if item.process.is_alive():
            item.process.terminate()  # SIGTERM: the role finishes its batch and checkpoints
    for item in roles:
        item.process.join(30)
        if item.process.is_alive():
            item.process.kill()
    if gave_up:
        refused = all(
            item.process.exitcode == REFUSED_EXIT for item in roles if item.role in gave_up
        )
        why = "was refused (see its log line above)" if refused else "kept stopping unexpectedly"
        raise SystemExit(f"worker role(s) {', '.join(gave_up)} {why}")


def _restart_delay(item: RoleProcess, now: float | None = None) -> float | None:
    """How long to wait before starting a stopped role again; None if it crashed too often.

    Outages are never given up on: the wait doubles with each stop in a row, up to 30 s. A role that
    ran :data:`STEADY_SECONDS` or more before it stopped had got through the last outage: its next
    one starts again from 1 s, so a worker that rode out outages weeks ago does not wait the longest
    backoff on every later one.

    >>> item = RoleProcess("join", process=None, started=0.0)  # type: ignore[arg-type]
    >>> class Stopped:
    ...     exitcode = 75
    >>> item.process = Stopped()  # type: ignore[assignment]
    >>> [_restart_delay(item, now=1.0) for _ in range(8)]  # stopped at once, again and again
    [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]
    >>> _restart_delay(item, now=STEADY_SECONDS)  # after a steady run: a new outage
    1.0
    """
    now = time.monotonic() if now is None else now
    if item.process.exitcode == OUTAGE_EXIT:
        if now - item.started >= STEADY_SECONDS:
            item.outages = 0
        item.outages += 1
        return min(BACKOFF_CAP_SECONDS, 2.0 ** (item.outages - 1))
    item.outages = 0
    item.crashes = [at for at in item.crashes if now - at < RESTART_WINDOW] + [now]
    if len(item.crashes) > MAX_RESTARTS:
        return None
    return min(BACKOFF_CAP_SECONDS, 2.0 ** (len(item.crashes) - 1))


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that gives a child process these exact settings."""
    env = {}
    for name, value in settings.model_dump(mode="json").items():
        env[f"ADAPTLOOP_{name.upper()}"] = (
            value if isinstance(value, str) else orjson.dumps(value).decode()
        )
    return env


def start_worker_process(
    settings: Settings, log_file: Path, role: Role = "all"
) -> subprocess.Popen[bytes]:
    """``adaptloop worker`` in a child process with ``settings``; its output goes to
    ``log_file``."""
    env = {**os.environ, **settings_env(settings), "PYTHONHASHSEED": HASH_SEED}
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-P", "-m", "adaptloop", "worker", "--role", role],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: one signal reaches every role
        )


def stop_worker_process(process: subprocess.Popen[bytes], timeout: float = 60.0) -> int:
    """SIGTERM, wait (the learner checkpoints on the way out), SIGKILL the group if it hangs."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            return process.wait(timeout)
        except subprocess.TimeoutExpired:
            kill_worker_process(process)
    return process.wait()


def kill_worker_process(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL the worker and every role it started: a crash, as in a fault test."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()
