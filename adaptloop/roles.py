"""The worker's roles, each the body of a process of its own: the join, the learner, the archive, AgentOps.

:func:`run_role` is what a role process runs: it names itself (``adaptloop-<role>`` in ``ps`` and ``top``),
tunes the garbage collector, waits for Kafka as long as it takes, then runs its agent until SIGTERM. A role
that meets a Kafka outage exits with :data:`~adaptloop.streams.outage.OUTAGE_EXIT`, which the worker
(:mod:`adaptloop.worker`) restarts without counting it as a crash; one that is refused (a login, an ACL, a
setting) exits with :data:`~adaptloop.streams.outage.REFUSED_EXIT` after one line saying why, and is not
started again (:func:`~adaptloop.streams.outage.classify` tells them apart).
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable

from adaptloop.settings import Settings
from adaptloop.streams.metrics import write_health
from adaptloop.streams.outage import OUTAGE_EXIT, REFUSED_EXIT, classify, raised_kafka_error, wait_patiently

# Each role imports its agent when it starts: a join process never loads River, pandas, SciPy, pyarrow or
# DuckDB (1.5 s of start-up, measured), and the archive never loads River.

log = logging.getLogger(__name__)

ROLES: tuple[str, ...] = ("join", "learn", "archive", "agents", "notify")

BACKGROUND_ROLES, BACKGROUND_NICENESS = ("archive",), 5
"""The archive may lag (it catches up from Kafka, its files stay exact); the join and the learner decide
how fresh the served models are. When the cores are busy, the archive gives way to them."""

GC_THRESHOLDS = (50_000, 20, 100)
"""Young collections every 50,000 allocations and full ones 100x rarer than Python's default: a role
holds large, long-lived state (the join's table, models), and traversing it again and again costs the
join a third of its throughput (measured with the bench's loop)."""


def process_name(role: str) -> str:
    """The name a role's process shows in ``ps`` and ``top`` (Linux keeps 15 characters)."""
    return f"adaptloop-{role}"[:15]


def tune_gc() -> None:
    """Freeze what start-up made (modules, settings: never garbage) and collect less often."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def run_role(role: str) -> None:
    """The body of one role's process (the worker starts it with ``multiprocessing``)."""
    with contextlib.suppress(OSError), open("/proc/self/comm", "w") as comm:  # Linux; elsewhere python's name
        comm.write(process_name(role))
    settings = Settings()
    logging.basicConfig(
        level=settings.log_level.upper(), format=f"%(asctime)s {role} %(levelname)s %(name)s: %(message)s"
    )
    tune_gc()
    if role in BACKGROUND_ROLES:
        os.nice(BACKGROUND_NICENESS)

    def waiting(since: float, why: str) -> None:
        write_health(role, {"broker": {"unreachable_since": since, "why": why}})

    try:
        wait_patiently(settings.connection(), on_wait=waiting)
        write_health(role, {"broker": {"reachable": True}})
        AGENTS[role](settings, _stop_on_signals())
    except Exception as error:
        _stop_for(role, error)
    except:  # noqa: E722 (a KafkaError raised by Consumer.close(): no clause with a class catches it)
        closing = raised_kafka_error()
        if closing is None:
            raise
        _stop_for(role, closing)


def _stop_for(role: str, error: Exception) -> None:
    """Exit as :func:`classify` says of ``error``: the outage or refusal status, or raise it again (a crash)."""
    verdict = classify(error)
    if verdict == "crash":
        raise error
    if verdict == "refused":
        log.error("%s stops: %s", role, error)
        sys.exit(REFUSED_EXIT)
    write_health(role, {"broker": {"unreachable_since": time.time(), "why": str(error)}})
    log.warning("%s stops: Kafka does not answer (%s); the worker starts it again, and it waits for Kafka", role, error)
    sys.exit(OUTAGE_EXIT)


def _join(settings: Settings, stop: threading.Event) -> None:
    from adaptloop.streams.join_agent import JoinAgent

    agent = JoinAgent(
        settings.connection(),
        specs=settings.specs,
        partitions=settings.partitions,
        prefix=settings.topic_prefix,
        group=f"{settings.group}-join",
        tick_seconds=settings.tick_seconds,
        lateness_seconds=settings.lateness_seconds,
        max_future_seconds=settings.max_future_seconds,
        replication=settings.replication,
    )
    _ready(
        "join",
        settings,
        ("predictions", "outcomes", "join-clock"),
        f"{settings.group}-join",
        f"training-examples, dead-letters, {agent.changelog}",
    )
    agent.run(stop)


def _learn(settings: Settings, stop: threading.Event) -> None:
    from adaptloop.streams.learner_agent import LearnerAgent

    agent = LearnerAgent(
        settings.connection(),
        specs=settings.specs,
        store=settings.worker_model_store(),
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
        f"{settings.models_location}",
    )
    agent.run(stop)


def _archive(settings: Settings, stop: threading.Event) -> None:
    from adaptloop.snapshots.archive import ParquetArchive
    from adaptloop.snapshots.snapshot import ARCHIVED_TOPICS
    from adaptloop.streams.archive_agent import ArchiveAgent

    archive = ParquetArchive(settings.archive_location)
    snapshot_seconds = settings.snapshot_seconds
    if archive.storage.remote and snapshot_seconds is not None:
        log.info(
            "the archive is in an object store: this worker takes no periodic snapshots (each would copy every "
            "archived row); take one where it is needed with `adaptloop snapshot create`"
        )
        snapshot_seconds = None
    agent = ArchiveAgent(
        settings.connection(),
        archive=archive,
        prefix=settings.topic_prefix,
        group=f"{settings.group}-archive",
        flush_seconds=settings.archive_flush_seconds,
        flush_rows=settings.archive_flush_rows,
        buffer_rows=settings.archive_buffer_rows,
        snapshot_dir=settings.snapshots_dir,
        models_dir=settings.models_location,
        snapshot_seconds=snapshot_seconds,
        keep_snapshots=settings.keep_snapshots,
    )
    _ready(
        "archive",
        settings,
        tuple(topic.name for topic in ARCHIVED_TOPICS),
        f"{settings.group}-archive",
        f"Parquet files under {settings.archive_location}, snapshots under {settings.snapshots_dir}",
    )
    agent.run(stop)


def _agents(settings: Settings, stop: threading.Event) -> None:
    from adaptloop.streams.agentops_agent import AgentOpsAgent

    agent = AgentOpsAgent(
        settings.connection(),
        limits=settings.guardrails,
        segment_keys=settings.segment_keys,
        prefix=settings.topic_prefix,
        group=f"{settings.group}-agentops",
        publish_seconds=settings.preference_publish_seconds,
        max_future_seconds=settings.max_future_seconds,
        # Stable while the worker runs: a restarted role fences the one it replaces at once.
        transactional_id=f"{settings.topic_prefix}{settings.group}-agentops-{socket.gethostname()}-{os.getppid()}",
        replication=settings.replication,
    )
    _ready(
        "agents",
        settings,
        ("agent-feedback", "preferences"),
        f"{settings.group}-agentops",
        f"preference-store, guardrail-alerts, dead-letters, {agent.state_topic}",
    )
    agent.run(stop)


def _notify(settings: Settings, stop: threading.Event) -> None:
    from adaptloop.streams.notify import AlertNotifier

    notifier = AlertNotifier(
        settings.connection(), settings.webhooks, prefix=settings.topic_prefix, group=f"{settings.group}-notify"
    )
    _ready(
        "notify",
        settings,
        ("guardrail-alerts", "drift-alerts"),
        f"{settings.group}-notify",
        f"{len(settings.webhooks)} webhook(s)",
    )
    notifier.run(stop)


def roles_of(settings: Settings) -> tuple[str, ...]:
    """The roles a worker with ``--role all`` runs: notify only when a webhook is set."""
    return tuple(role for role in ROLES if role != "notify" or settings.webhooks)


AGENTS: dict[str, Callable[[Settings, threading.Event], None]] = {
    "join": _join,
    "learn": _learn,
    "archive": _archive,
    "agents": _agents,
    "notify": _notify,
}


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
