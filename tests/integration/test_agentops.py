"""The agents role under floods and SIGKILLs: stores, quotas and guard counters exact, the worker up
throughout."""

from __future__ import annotations

import time
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from adaptloop.learners.guardrails import GuardrailLimits
from adaptloop.learners.preferences import PreferenceStore, Publications
from adaptloop.schemas import (
    AgentFeedbackEvent,
    DeadLetter,
    GuardrailAlert,
    PreferenceEvent,
    PreferenceSnapshot,
)
from adaptloop.schemas.topics import (
    AGENT_FEEDBACK,
    DEAD_LETTERS,
    GUARDRAIL_ALERTS,
    PREFERENCE_STORE,
)
from adaptloop.settings import Settings
from adaptloop.streams import EventProducer
from adaptloop.streams.versions import read_all
from adaptloop.worker import kill_worker_process

from .loop_helpers import (
    TopicReader,
    Worker,
    loop_settings,
    no_role_stopped,
    running_worker,
    wait_for,
    wait_until_read,
)

pytestmark = pytest.mark.kafka


def _settings(bootstrap: str, home, **limits) -> Settings:
    settings = loop_settings(bootstrap, home, [], partitions=3)
    return settings.model_copy(
        update={
            "guardrails": GuardrailLimits(**limits),
            "preference_publish_seconds": 0.5,
            "log_level": "info",
        }
    )


def _thumb(user: str, agent: str, variant: str, up: bool, n: int, **fields) -> AgentFeedbackEvent:
    return AgentFeedbackEvent(
        trace_id=f"t{n}",
        run_id=f"r{n}",
        session_id=fields.pop("session_id", f"s-{user}-{n}"),
        agent=agent,
        variant=variant,
        step=0,
        kind="thumbs",
        value=up,
        user_id=user,
        **fields,
    )


def _store(
    reader: TopicReader, agent: str
) -> tuple[PreferenceStore, int, list[PreferenceSnapshot]]:
    """The agent's store as a client merges it, the feedback it counts, and every record it was
    published in."""
    records = [s for s in reader.read() if isinstance(s, PreferenceSnapshot) and s.agent == agent]
    publications = Publications()
    for snapshot in records:
        publications.add(snapshot)
    store = PreferenceStore()
    parts = publications.of(agent)
    for part in parts:
        store.merge(agent, part.segments)
    return store, sum(p.updates for p in parts if p.part == 0), records


def _letters(reader: TopicReader) -> list[DeadLetter]:
    return [letter for letter in reader.read() if isinstance(letter, DeadLetter)]


def test_floods_are_contained_and_every_record_is_counted_once(kafka_bootstrap, tmp_path):
    settings = _settings(
        kafka_bootstrap,
        tmp_path,
        feedback_per_source_per_hour=50,
        votes_per_source_per_variant=1000,
        max_variants_per_agent=2000,
    )
    names = [f"variant-{k:04d}-" + "x" * 240 for k in range(2600)]  # 2,600 long, distinct names
    hour = timedelta(hours=1)
    now = datetime.now(UTC)
    with running_worker(settings, tmp_path / "worker.log") as worker:
        with EventProducer(
            settings.bootstrap_address, topic_prefix=settings.topic_prefix
        ) as producer:
            # one vote each from a user of its own, all in one shard
            for n, name in enumerate(names):
                producer.send(_thumb(f"wide-{n}", "wide", name, True, n, session_id="wide"))
            for n in range(200):  # one user, timestamps an hour apart: quotas count by arrival too
                stamp = now - (200 - n) * hour
                producer.send(
                    _thumb(
                        "spacer", "spaced", "v", n % 2 == 0, n, timestamp=stamp, session_id="spacer"
                    )
                )
            # from the future
            producer.send(_thumb("early", "calm", "c0", True, 0, timestamp=now + 100 * hour))
            for n in range(1200):  # many annotators, a few variants: each preference costs the same
                chosen, rejected = f"p{n % 60}", f"p{(n * 7 + 1) % 60}"
                if chosen != rejected:
                    producer.send(
                        PreferenceEvent(
                            context={"agent": "ranked"},
                            chosen=chosen,
                            rejected=rejected,
                            annotator=f"a{n}",
                        )
                    )
            for n in range(180):
                producer.send(_thumb(f"calm-{n}", "calm", f"c{n % 3}", n % 4 != 0, n))
        preferences = sum(1 for n in range(1200) if n % 60 != (n * 7 + 1) % 60)
        with (
            TopicReader(settings, PREFERENCE_STORE) as stores,
            TopicReader(settings, DEAD_LETTERS) as dead_letters,
        ):
            wide = wait_for(
                lambda: (found := _store(stores, "wide"))[1] == 2600 and found, worker=worker
            )
            assert wide, "the wide agent's store never counted 2,600 pieces of feedback"
            store, _, records = wide
            # 2,000 variant slots: each of the last 600 took the slot of the idlest (one vote each).
            assert sorted(store.variants("wide")) == names[600:]
            assert all(store.beta("*", "wide", name) == (2.0, 1.0) for name in names[600:])
            # one publication in parts, each under Kafka's limit
            assert max(record.parts for record in records) >= 2

            spaced = wait_for(
                lambda: (found := _store(stores, "spaced"))[1] == 50 and found, worker=worker
            )
            assert spaced and spaced[0].beta("*", "spaced", "v") == (1.0 + 25, 1.0 + 25)
            ranked = wait_for(
                lambda: (found := _store(stores, "ranked"))[1] == preferences and found,
                worker=worker,
            )
            assert ranked and len(ranked[0].variants("ranked")) == 60
            calm = wait_for(
                lambda: (found := _store(stores, "calm"))[1] == 180 and found, worker=worker
            )
            assert calm
            # Publications are coalesced: a handful of records for 180 pieces of feedback, not one
            # per piece.
            assert len(calm[2]) <= 3 * 20

            letters = wait_for(
                lambda: len(found := _letters(dead_letters)) >= 150 + 1 and found, worker=worker
            )
            kinds = Counter(
                letter.reason.split(")")[0].removeprefix("quarantined (") for letter in letters
            )
            assert len(letters) == 151 and kinds["rate_limited"] == 150
            reclaimed = [
                a
                for a in read_all(
                    settings.bootstrap_address, GUARDRAIL_ALERTS, settings.topic_prefix
                )
                if isinstance(a, GuardrailAlert) and a.rule == "slot_reclaimed"
            ]
            assert sorted(str(a.evidence["variant"]) for a in reclaimed) == names[:600]
            assert all(
                "received in the last hour" in d.reason
                for d in letters
                if "rate_limited" in d.reason
            )
            assert sum("ahead of this worker's clock" in d.reason for d in letters) == 1
            assert len({(d.source_topic, d.partition, d.offset) for d in letters}) == len(letters)
        assert no_role_stopped(tmp_path / "worker.log")


def test_guard_counters_and_stores_survive_a_sigkill(kafka_bootstrap, tmp_path):
    settings = _settings(
        kafka_bootstrap,
        tmp_path,
        feedback_per_source_per_hour=40,
        votes_per_source_per_variant=1000,
        max_repeated_action=5,
    )

    def step(n: int) -> AgentFeedbackEvent:
        return AgentFeedbackEvent(
            trace_id=f"loop-{n}",
            run_id="loop",
            session_id="looping",
            agent="support",
            variant="a",
            step=n,
            kind="step",
            action="search(order)",
            user_id="u-loop",
        )

    def send(events) -> None:
        with EventProducer(
            settings.bootstrap_address, topic_prefix=settings.topic_prefix
        ) as producer:
            for event in events:
                producer.send(event)

    first = [_thumb("heavy", "support", "a", True, n) for n in range(30)]
    first += [_thumb(f"u{n}", "support", "b", n % 3 != 0, 100 + n) for n in range(60)]
    first += [step(n) for n in range(3)]  # three repeats of one action: two short of the alert
    # 10 within the quota
    second = [_thumb("heavy", "support", "a", True, 200 + n) for n in range(30)]
    second += [_thumb(f"u{n}", "support", "b", n % 3 == 0, 300 + n) for n in range(60)]
    second += [step(n) for n in range(3, 5)]

    stores = TopicReader(settings, PREFERENCE_STORE)
    worker = Worker(settings, tmp_path / "worker-1.log")
    try:
        send(first)
        assert wait_for(lambda: _store(stores, "support")[1] == 90, worker=worker)
        send(second)
        time.sleep(0.7)  # part of the second batch processed, perhaps committed: SIGKILL mid-way
    finally:
        kill_worker_process(worker.process)
    with stores, running_worker(settings, tmp_path / "worker-2.log") as worker:
        # Counted once each: 40 from the heavy user (its quota), 120 from the others.
        assert wait_for(lambda: _store(stores, "support")[1] == 160, worker=worker)
        # all read: nothing more will come
        wait_until_read(settings, "agentops", [AGENT_FEEDBACK], worker)
        store, updates, _ = _store(stores, "support")
        assert updates == 160
        assert store.beta("*", "support", "a") == (1.0 + 40, 1.0)
        assert store.beta("*", "support", "b") == (1.0 + 40 + 20, 1.0 + 20 + 40)
    with TopicReader(settings, DEAD_LETTERS) as dead_letters:
        letters = [d for d in _letters(dead_letters) if d.reason.startswith("quarantined")]
    assert len(letters) == 20 and len({(d.partition, d.offset) for d in letters}) == 20
    assert all("rate_limited" in d.reason for d in letters)
    alerts = read_all(settings.bootstrap_address, GUARDRAIL_ALERTS, settings.topic_prefix)
    loops = [a for a in alerts if isinstance(a, GuardrailAlert) and a.rule == "tool_loop"]
    assert len(loops) == 1 and loops[0].subject == "looping" and loops[0].observed == 5


def test_junk_names_cannot_lock_out_a_new_agent_or_a_declared_variant(kafka_bootstrap, tmp_path):
    """10,000 invented agent names and 100 invented variants of a declared agent fill every slot; a
    new agent, a declared variant and a new variant are still counted, exactly, and each slot taken
    is reported."""
    settings = loop_settings(kafka_bootstrap, tmp_path, [], partitions=1).model_copy(
        update={
            "guardrails": GuardrailLimits(agents={"support": ["prompt-a"]}),
            "preference_publish_seconds": 0.5,
        }
    )
    with running_worker(settings, tmp_path / "worker.log") as worker:
        with EventProducer(
            settings.bootstrap_address, topic_prefix=settings.topic_prefix
        ) as producer:
            for k in range(10_000):
                producer.send(_thumb(f"junk-user-{k}", f"junk-{k}", "v", True, k))
            for k in range(100):
                producer.send(
                    _thumb(f"variant-user-{k}", "support", f"junk-variant-{k}", True, 20_000 + k)
                )
            for k in range(10):
                producer.send(_thumb(f"billing-user-{k}", "billing", "b1", k < 7, 30_000 + k))
            for k in range(6):
                producer.send(_thumb(f"support-user-{k}", "support", "prompt-a", k < 4, 40_000 + k))
            producer.send(_thumb("support-user-new", "support", "prompt-new", True, 50_000))
        readers = (
            TopicReader(settings, t) for t in (PREFERENCE_STORE, GUARDRAIL_ALERTS, DEAD_LETTERS)
        )
        with (
            next(readers) as stores,
            next(readers) as guardrail_alerts,
            next(readers) as dead_letters,
        ):
            billing = wait_for(
                lambda: (found := _store(stores, "billing"))[1] == 10 and found, worker=worker
            )
            assert billing and billing[0].beta("*", "billing", "b1") == (1.0 + 7, 1.0 + 3)
            support = wait_for(
                lambda: (found := _store(stores, "support"))[1] == 107 and found, worker=worker
            )
            assert support
            store = support[0]
            assert store.beta("*", "support", "prompt-a") == (1.0 + 4, 1.0 + 2)
            assert store.beta("*", "support", "prompt-new") == (2.0, 1.0)
            assert store.variants("support") == {"prompt-a", "prompt-new"} | {
                f"junk-variant-{k}" for k in range(1, 100)
            }

            def reclaimed() -> list[GuardrailAlert]:
                return [
                    a
                    for a in guardrail_alerts.read()
                    if isinstance(a, GuardrailAlert) and a.rule == "slot_reclaimed"
                ]

            alerts = wait_for(lambda: len(found := reclaimed()) >= 9_002 and found, worker=worker)
            assert alerts and len(alerts) == 9_002
            agents = [a for a in alerts if a.evidence["variant"] is None]
            assert sorted(a.agent or "" for a in agents) == sorted(
                f"junk-{k}" for k in range(9_001)
            )
            assert [a.evidence["taken_by"] for a in agents if a.agent == "junk-9000"] == ["billing"]
            # (the alerts that are not the agents': ``a not in agents`` would compare each alert
            # with 9,001 others)
            variants = [
                (a.agent, a.evidence["variant"], a.evidence["taken_by"])
                for a in alerts
                if a.evidence["variant"] is not None
            ]
            assert variants == [("support", "junk-variant-0", "prompt-new")]
            assert all(a.observed == 1.0 for a in alerts)
            # A reclaimed agent's statistics are gone; nothing was quarantined.
            assert _store(stores, "junk-0")[1] == 0 and _store(stores, "junk-0")[0].agents == []
            assert not [d for d in _letters(dead_letters) if d.reason.startswith("quarantined")]
        assert no_role_stopped(tmp_path / "worker.log")
