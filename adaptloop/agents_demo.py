"""``adaptloop demo agents``: agents routed by a preference store that learns from their users.

Three variants of a support agent with hidden quality (the chance a user gives a
thumbs-up) serve sessions through :class:`PreferenceClient` (Thompson sampling);
users give thumbs, some comments (with an email address, scrubbed before the
archive) and pairwise preferences; one session is stuck in a tool loop, one blows
its budget, and one user floods the store with thumbs-up for the worst variant.
The router's traffic moves to the best variant; the guardrails fire; the flood is
contained: beyond ``votes_per_source_per_variant`` votes its feedback is quarantined.
"""

from __future__ import annotations

import math
import random
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console
from rich.table import Table
from rich.text import Text

from adaptloop.demo import archived_rows, take_snapshot
from adaptloop.learners.guardrails import GuardrailLimits
from adaptloop.localkafka import LocalKafka
from adaptloop.progress import Steps
from adaptloop.schemas import AgentFeedbackEvent, DeadLetter, GuardrailAlert, PreferenceEvent
from adaptloop.schemas.errors import AdaptloopError
from adaptloop.schemas.topics import (
    AGENT_FEEDBACK,
    DEAD_LETTERS,
    GUARDRAIL_ALERTS,
    PREFERENCE_STORE,
    PREFERENCES,
)
from adaptloop.settings import Settings
from adaptloop.snapshots.routing import ROUTING_COLUMNS, evaluate_routing, routing_rows
from adaptloop.streams import EventProducer
from adaptloop.streams.admin import ensure_topics
from adaptloop.streams.preference_client import PreferenceClient
from adaptloop.streams.versions import read_all
from adaptloop.worker import start_worker_process, stop_worker_process

AGENT = "support"
TOOLS = ["search(kb)", "lookup(order)", "draft(reply)", "refund(order)"]


@dataclass
class AgentScenario:
    sessions: int = 3000
    rate: float = 250.0  # sessions per second
    quality: dict[str, float] = field(
        default_factory=lambda: {"prompt-a": 0.35, "prompt-b": 0.55, "prompt-c": 0.75}
    )
    preference_share: float = 0.2  # sessions that also yield a pairwise judgement
    users: int = 5000  # few sessions each: no honest user reaches the cap of votes per variant
    annotators: int = 1000
    flood: int = 2000  # thumbs-up from one user for the worst variant
    stuck_session: int = 500  # repeats one tool call
    costly_session: int = 900  # blows its budget
    # traffic spread evenly, so the off-policy table has decisions for every policy
    exploration: float = 0.05
    seed: int = 11


def agents_settings(settings: Settings) -> Settings:
    run = uuid.uuid4().hex[:6]
    return settings.model_copy(
        update={
            "bootstrap": settings.bootstrap_address,
            "topic_prefix": f"{settings.topic_prefix}agents-{run}.",
            "home": settings.home / "demo" / f"agents-{run}",
            "models": [],
            "group": f"agents-{run}",
            "guardrails": GuardrailLimits(
                max_repeated_action=5, session_cost=1.0, feedback_per_source_per_hour=50
            ),
            "archive_flush_seconds": 1.0,
        }
    )


def _session(
    producer: EventProducer, rng: random.Random, scenario: AgentScenario, i: int, variant: str
) -> str:
    """One session's steps and its user's feedback; return the user."""
    session, user = f"s{i}", f"u{rng.randrange(scenario.users)}"
    actions = (
        ["search(order)"] * 8
        if i == scenario.stuck_session
        else [rng.choice(TOOLS) for _ in range(rng.randint(2, 4))]
    )
    for step, action in enumerate(actions, 1):
        cost = 0.6 if i == scenario.costly_session else rng.uniform(0.002, 0.02)
        producer.send(
            AgentFeedbackEvent(
                trace_id=f"{session}-{step}",
                run_id=session,
                session_id=session,
                agent=AGENT,
                variant=variant,
                step=step,
                kind="step",
                action=action,
                cost=cost,
                tokens=rng.randrange(200, 1500),
                latency_ms=rng.uniform(50, 900),
                tenant="acme",
                user_id=user,
            )
        )
    up = rng.random() < scenario.quality[variant]
    producer.send(
        AgentFeedbackEvent(
            trace_id=f"{session}-fb",
            run_id=session,
            session_id=session,
            agent=AGENT,
            variant=variant,
            step=len(actions),
            kind="thumbs",
            value=up,
            tenant="acme",
            user_id=user,
        )
    )
    if not up and rng.random() < 0.1:
        producer.send(
            AgentFeedbackEvent(
                trace_id=f"{session}-c",
                run_id=session,
                session_id=session,
                agent=AGENT,
                variant=variant,
                step=len(actions),
                kind="comment",
                tenant="acme",
                comment=f"wrong answer, write to me at {user}@example.com",
                user_id=user,
            )
        )
    if rng.random() < scenario.preference_share:
        a, b = rng.sample(sorted(scenario.quality), 2)
        logit = 4 * (scenario.quality[a] - scenario.quality[b])
        chosen, rejected = (a, b) if rng.random() < 1 / (1 + math.exp(-logit)) else (b, a)
        producer.send(
            PreferenceEvent(
                context={"agent": AGENT, "task": "support"},
                chosen=chosen,
                rejected=rejected,
                annotator=f"annotator-{rng.randrange(scenario.annotators)}",
            )
        )
    return user


def run_agents_demo(
    base: Settings, console: Console, scenario: AgentScenario | None = None
) -> dict[str, object]:
    scenario = scenario or AgentScenario()
    if base.bootstrap is None:
        status = LocalKafka.from_settings(base).up()
        console.print(
            f"local Kafka at {status.bootstrap} "
            f"({'already running' if status.already_running else 'started'})",
            markup=False,
        )
    settings = agents_settings(base)
    ensure_topics(
        settings.connection(),
        prefix=settings.topic_prefix,
        partitions=settings.partitions,
        replication=settings.replication,
    )
    log_file = settings.home / "worker.log"
    worker = start_worker_process(settings, log_file)
    console.print(
        f"worker started (pid {worker.pid}, log {log_file}); topics prefixed "
        f"{settings.topic_prefix!r}",
        markup=False,
    )
    rng = random.Random(scenario.seed)
    variants = sorted(scenario.quality)
    routes: list[str] = []
    try:
        with (
            EventProducer(settings.connection(), topic_prefix=settings.topic_prefix) as producer,
            PreferenceClient(
                AGENT,
                variants,
                bootstrap=settings.connection(),
                prefix=settings.topic_prefix,
                seed=scenario.seed,
                producer=producer,
                exploration=scenario.exploration,
            ) as router,
        ):
            start = time.monotonic()
            with Steps(console, "sessions", total=scenario.sessions) as progress:
                for i in range(scenario.sessions):
                    if worker.poll() is not None:
                        raise AdaptloopError(f"the worker stopped; see {log_file}")
                    if i == 200:  # the worker is live only once its first store shards come back
                        producer.flush()
                        if not router.wait_for_updates(100, timeout=90):
                            raise AdaptloopError(
                                f"no preference store was published within 90 s; see {log_file}"
                            )
                    variant, _ = router.choose_variant({}, session_id=f"s{i}", tenant="acme")
                    routes.append(variant)
                    _session(producer, rng, scenario, i, variant)
                    if i == scenario.sessions // 2:
                        for k in range(scenario.flood):  # one user tries to push the worst variant
                            producer.send(
                                AgentFeedbackEvent(
                                    trace_id=f"flood-{k}",
                                    run_id="flood",
                                    session_id=f"flood-{k}",
                                    agent=AGENT,
                                    variant=variants[0],
                                    step=0,
                                    kind="thumbs",
                                    value=True,
                                    tenant="acme",
                                    user_id="mallory",
                                )
                            )
                    if i % 50 == 0:
                        producer.poll()
                        recent = Counter(routes[-300:])
                        progress.update(
                            completed=i + 1,
                            status="  ".join(
                                f"{v} {recent[v] / max(1, len(routes[-300:])):.0%}"
                                for v in variants
                            ),
                        )
                        time.sleep(max(0.0, start + (i + 1) / scenario.rate - time.monotonic()))
                progress.update(completed=scenario.sessions)
            producer.flush()
            # the last feedback reaches the store
            time.sleep(2 * settings.preference_publish_seconds + 1)
            store = router.store
            report = _report(settings, scenario, variants, routes, store)
            report["snapshot"] = _snapshot(settings, console)
            report["off_policy"] = routing_rows(evaluate_routing(report["snapshot"], AGENT))
    finally:
        stop_worker_process(worker)
    _print(console, report)
    return report


def _report(
    settings: Settings, scenario: AgentScenario, variants: list[str], routes: list[str], store
) -> dict:
    deadline = time.monotonic() + 30
    expected_quarantine = scenario.flood - settings.guardrails.votes_per_source_per_variant
    while True:
        alerts: list[GuardrailAlert] = read_all(
            settings.connection(), GUARDRAIL_ALERTS, settings.topic_prefix
        )  # type: ignore[assignment]
        dead: list[DeadLetter] = read_all(
            settings.connection(), DEAD_LETTERS, settings.topic_prefix
        )  # type: ignore[assignment]
        quarantined = Counter(
            d.reason.split(")")[0].removeprefix("quarantined (")
            for d in dead
            if d.reason.startswith("quarantined")
        )
        if sum(quarantined.values()) >= expected_quarantine or time.monotonic() > deadline:
            break
        time.sleep(1)
    first, window = min(200, len(routes)), max(1, len(routes) // 5)
    segment = "*"
    pairs = store.segment(segment, AGENT).pairs
    ratings = pairs.ratings()
    return {
        "sessions": len(routes),
        "variants": variants,
        "quality": scenario.quality,
        "share_first": {v: Counter(routes[:first])[v] / first for v in variants},
        "share_last": {v: Counter(routes[-window:])[v] / window for v in variants},
        "thumbs_up": {
            v: (lambda a, b: a / (a + b))(*store.beta(segment, AGENT, v)) for v in variants
        },
        "bt": {v: ratings.get(v) for v in variants},
        "alerts": [(a.rule, a.subject, a.observed, a.threshold, dict(a.evidence)) for a in alerts],
        "quarantined": dict(quarantined),
        "snapshot_dir": settings.snapshots_dir,
        "archive": settings.archive_location,
        "prefix": settings.topic_prefix,
        "finished_at": datetime.now(UTC),
    }


def _snapshot(settings: Settings, console: Console) -> Path:
    """Once the archive holds every feedback, preference and store publication sent, a snapshot for
    the analysts (as the main demo takes; its ``preference_variants`` view is the merged store)."""
    sent = {}
    for topic in (AGENT_FEEDBACK, PREFERENCES):
        with settings.connection().reader(topic.full_name(settings.topic_prefix)) as reader:
            sent[topic] = sum(reader.ends(30).values())
    deadline = time.monotonic() + 60
    with Steps(
        console, "waiting for the archive to catch up, then writing a DuckDB snapshot"
    ) as steps:
        while any(
            archived_rows(settings, topic) < count for topic, count in sent.items()
        ) or not archived_rows(settings, PREFERENCE_STORE):
            if time.monotonic() > deadline:
                console.print(
                    "[yellow]the archive did not catch up within 60 s; the snapshot "
                    "shows where it stood[/]"
                )
                break
            steps.update()
            time.sleep(0.5)
        return take_snapshot(settings)


def _print(console: Console, report: dict) -> None:
    table = Table(
        "variant",
        "hidden quality",
        "thumbs-up (posterior mean)",
        "Bradley-Terry rating",
        "traffic, first 200 (no feedback yet)",
        "traffic, last 20%",
        title=f"adaptloop agents demo: {report['sessions']} sessions",
    )
    for v in report["variants"]:
        bt = report["bt"][v]
        table.add_row(
            v,
            f"{report['quality'][v]:.2f}",
            f"{report['thumbs_up'][v]:.3f}",
            "-" if bt is None else f"{bt:+.2f}",
            f"{report['share_first'][v]:.0%}",
            f"{report['share_last'][v]:.0%}",
        )
    console.print(table)
    alerts = Table(
        "guardrail", "subject", "observed", "threshold", "evidence", title="guardrail alerts"
    )
    for rule, subject, observed, threshold, evidence in report["alerts"]:
        alerts.add_row(  # data, never markup
            Text(rule),
            Text(subject),
            f"{observed:g}",
            f"{threshold:g}",
            Text(
                ", ".join(
                    f"{k}={v}" for k, v in evidence.items() if k in ("action", "variant", "step")
                )
            ),
        )
    console.print(alerts)
    console.print(
        "quarantined feedback: "
        + (", ".join(f"{k}: {v}" for k, v in report["quarantined"].items()) or "none"),
        markup=False,
    )
    if report.get("off_policy"):
        estimates = Table(
            *ROUTING_COLUMNS, title="what other routing policies would have earned (off-policy)"
        )
        for row in report["off_policy"]:
            estimates.add_row(*(Text(str(cell)) for cell in row))
        console.print(estimates)
    if report.get("snapshot") is not None:
        console.print(
            f"snapshot for audits: [bold]{report['snapshot']}[/] (e.g. `adaptloop audit "
            '"SELECT * FROM '
            f'preference_variants" --snapshot {report["snapshot"]}`)'
        )
