"""The worker's roles, each the body of a process of its own: the join, the learner, the archive,
AgentOps.

:func:`run_role` is what a role process runs: it names itself (``adaptloop-<role>`` in ``ps`` and
``top``), tunes the garbage collector, waits for Kafka as long as it takes, then runs its agent
until SIGTERM. A role that meets a Kafka outage exits with
:data:`~adaptloop.streams.outage.OUTAGE_EXIT`, which the worker (:mod:`adaptloop.worker`) restarts
without counting it as a crash; one that is refused (a login, an ACL, a setting) exits with
:data:`~adaptloop.streams.outage.REFUSED_EXIT` after one line saying why, and is not started again
(:func:`~adaptloop.streams.outage.classify` tells them apart).
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from adaptloop.settings import Settings
from adaptloop.streams.connection import forget_frames
from adaptloop.streams.metrics import write_health
from adaptloop.streams.outage import (
    OUTAGE_EXIT,
    REFUSED_EXIT,
    classify,
    raised_kafka_error,
    wait_patiently,
)

log = logging.getLogger(__name__)

ROLES: tuple[str, ...] = ("join", "learn", "archive", "agents", "notify")

BACKGROUND_ROLES, BACKGROUND_NICENESS = ("archive",), 5
"""The archive may lag (it catches up from Kafka, its files stay exact); the join and the learner
decide how fresh the served models are. When the cores are busy, the archive gives way to them."""

GC_THRESHOLDS = (50_000, 20, 100)
"""Young collections every 50,000 allocations and full ones 100x rarer than Python's default: a role
holds large, long-lived state (the join's table, models), and traversing it again and again costs
the join a third of its throughput (measured with the bench's loop)."""


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
    # Linux; elsewhere python's name
    with contextlib.suppress(OSError), open("/proc/self/comm", "w") as comm:
        comm.write(process_name(role))
    settings = Settings()
    logging.basicConfig(
        level=settings.log_level.upper(),
        format=f"%(asctime)s {role} %(levelname)s %(name)s: %(message)s",
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
    """Exit as :func:`classify` says of ``error``: the outage or refusal status, or raise it again
    (a crash)."""
    verdict = classify(error)
    if verdict == "crash":
        raise error
    forget_frames(error)  # the role's clients stop now, not at its exit (see forget_frames)
    if verdict == "refused":
        log.error("%s stops: %s", role, error)
        sys.exit(REFUSED_EXIT)
    write_health(role, {"broker": {"unreachable_since": time.time(), "why": str(error)}})
    log.warning(
        "%s stops: Kafka does not answer (%s); the worker starts it again, and it waits for Kafka",
        role,
        error,
    )
    sys.exit(OUTAGE_EXIT)


@dataclass(frozen=True)
class Role:
    """A role of the worker: the agent that runs it (imported when its process starts: a join
    process never loads River, pandas, SciPy, pyarrow or DuckDB, 1.5 s of start-up, measured; the
    archive never loads River), the topics it reads (None: those its agent's ``topics`` name), and
    what it writes (for the line it logs when ready)."""

    name: str
    module: str
    agent: str
    reads: tuple[str, ...] | None
    writes: Callable[[Settings, Any], str]

    @property
    def group(self) -> str:
        """The suffix of its consumer group (after the settings' ``group``)."""
        return {"learn": "learner", "agents": "agentops"}.get(self.name, self.name)

    def run(self, settings: Settings, stop: threading.Event) -> None:
        """Make the agent from ``settings``, say what it does, and run it until ``stop``."""
        agent_class = getattr(importlib.import_module(self.module), self.agent)
        agent = agent_class.from_settings(settings, settings.connection())
        reads = (
            list(agent.topics)
            if self.reads is None
            else [settings.topic_prefix + n for n in self.reads]
        )
        _ready(
            self.name,
            settings,
            reads,
            f"{settings.group}-{self.group}",
            self.writes(settings, agent),
        )
        agent.run(stop)


TABLE = (
    Role(
        "join",
        "adaptloop.streams.join_agent",
        "JoinAgent",
        ("predictions", "outcomes", "join-clock"),
        lambda settings, agent: f"training-examples, dead-letters, {agent.changelog}",
    ),
    Role(
        "learn",
        "adaptloop.streams.learner_agent",
        "LearnerAgent",
        ("training-examples", "model-commands"),
        lambda settings, agent: (
            f"model-updates, drift-alerts, dead-letters; models "
            f"{', '.join(settings.specs) or '(none)'} in {settings.models_location}"
        ),
    ),
    Role(
        "archive",
        "adaptloop.streams.archive_agent",
        "ArchiveAgent",
        None,
        lambda settings, agent: (
            f"Parquet files under {settings.archive_location}, snapshots under "
            f"{settings.snapshots_dir}"
        ),
    ),
    Role(
        "agents",
        "adaptloop.streams.agentops_agent",
        "AgentOpsAgent",
        ("agent-feedback", "preferences"),
        lambda settings, agent: (
            f"preference-store, guardrail-alerts, dead-letters, {agent.state_topic}"
        ),
    ),
    Role(
        "notify",
        "adaptloop.streams.notify",
        "AlertNotifier",
        ("guardrail-alerts", "drift-alerts"),
        lambda settings, agent: f"{len(settings.webhooks)} webhook(s)",
    ),
)
"""Every role, in the order a worker starts them."""


def roles_of(settings: Settings) -> tuple[str, ...]:
    """The roles a worker with ``--role all`` runs: notify only when a webhook is set."""
    return tuple(role for role in ROLES if role != "notify" or settings.webhooks)


AGENTS: dict[str, Callable[[Settings, threading.Event], None]] = {
    role.name: role.run for role in TABLE
}
"""What each role's process runs, by role."""


# mypy checks that the worker's settings hold what each agent's from_settings reads
if TYPE_CHECKING:
    from adaptloop.streams.agentops_agent import AgentOpsSettings
    from adaptloop.streams.archive_agent import ArchiveSettings
    from adaptloop.streams.join_agent import JoinSettings
    from adaptloop.streams.learner_agent import LearnerSettings
    from adaptloop.streams.notify import NotifySettings

    def _every_role_reads_the_settings(
        settings: Settings,
    ) -> tuple[JoinSettings, LearnerSettings, ArchiveSettings, AgentOpsSettings, NotifySettings]:
        return settings, settings, settings, settings, settings


def _ready(role: str, settings: Settings, reads: list[str], group: str, writes: str) -> None:
    log.info(
        "%s ready: reads %s (group %s) from %s; writes %s",
        role,
        ", ".join(reads),
        group,
        settings.bootstrap_address,
        writes,
    )


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    return stop
