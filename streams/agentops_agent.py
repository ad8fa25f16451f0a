"""The AgentOps agent: guardrails on agent events, quarantine for bad feedback, preference stores out.

It reads ``agent-feedback`` and ``preferences``. Every agent event passes the
:class:`AgentGuard` (alerts on ``guardrail-alerts`` on the breaching event); thumbs,
ratings, scores and preferences pass the :class:`FeedbackGuard` and update the
preference store of their input partition (a *shard*), or go to quarantine (a dead
letter with the reason). Each shard is published every ``publish_seconds`` on the
compacted ``preference-store`` topic with the offset it covers; on assignment the
agent restores its shards from that topic and resumes after those offsets, so
every piece of feedback is counted once across restarts. Shards hold counts, so
:class:`adaptloop.streams.preference_client.PreferenceClient` merges them exactly.

Like the learner it uses the consumer helper, for the seek. Guard counters (sessions,
hourly costs, feedback quotas) live in memory: a restart starts them afresh.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from adaptloop.learners.guardrails import AgentGuard, FeedbackGuard, GuardrailLimits
from adaptloop.learners.preferences import PreferenceStore, segment_of
from adaptloop.schemas.agents import AgentFeedbackEvent, PreferenceEvent, PreferenceSnapshot
from adaptloop.schemas.topics import AGENT_FEEDBACK, PREFERENCE_STORE, PREFERENCES
from adaptloop.streams.consumer import EventConsumer, Record
from adaptloop.streams.deadletter import RECALL_MARGIN_SECONDS, DeadLetters, dead_lettered_since
from adaptloop.streams.metrics import EVENTS_IN, EVENTS_OUT, record_lag
from adaptloop.streams.producer import EventProducer
from adaptloop.streams.versions import read_all

log = logging.getLogger(__name__)

FEEDBACK_KINDS = frozenset({"thumbs", "rating", "score"})


def preference_agent(event: PreferenceEvent) -> str:
    """Preferences name their agent in ``context["agent"]`` (``default`` if they do not)."""
    return event.context.get("agent", "default")


class AgentOpsAgent:
    """Typical use (needs a broker)::

    AgentOpsAgent("localhost:9092", limits=GuardrailLimits()).run(stop)
    """

    def __init__(
        self,
        bootstrap: str,
        *,
        limits: GuardrailLimits,
        segment_keys: list[str] | None = None,
        prefix: str = "",
        group: str = "adaptloop-agentops",
        publish_seconds: float = 1.0,
        batch_size: int = 2000,
    ) -> None:
        self.bootstrap, self.prefix = bootstrap, prefix
        self.segment_keys = list(segment_keys or [])
        self.publish_seconds, self.batch_size = publish_seconds, batch_size
        self.guard, self.feedback = AgentGuard(limits), FeedbackGuard(limits)
        self.producer = EventProducer(bootstrap, topic_prefix=prefix)
        self.dead_letters = DeadLetters(self.producer, consumer=f"{prefix}{group}")
        self.shards: dict[str, PreferenceStore] = {}
        self.agents: dict[str, set[str]] = {}  # shard -> agents seen in it
        self.positions: dict[str, int] = {}
        self.quarantined: dict[str, dict[str, int]] = {}
        self.updates: dict[str, int] = {}
        self.dirty: set[str] = set()
        self._published_at = time.monotonic()
        self._lag_at = 0.0
        self.consumer = EventConsumer(
            bootstrap,
            f"{prefix}{group}",
            [AGENT_FEEDBACK, PREFERENCES],
            dead_letters=self.dead_letters,
            prefix=prefix,
            config={
                "partition.assignment.strategy": "range",
                "session.timeout.ms": 10_000,
                "heartbeat.interval.ms": 2_000,
            },
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
        )

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        snapshots: list[PreferenceSnapshot] = read_all(self.bootstrap, PREFERENCE_STORE, self.prefix)  # type: ignore[assignment]
        latest = {snapshot.shard: snapshot for snapshot in snapshots}
        self.shards, self.agents, self.positions, self.quarantined, self.updates = {}, {}, {}, {}, {}
        for tp in partitions:
            shard = f"{tp.topic}:{tp.partition}"
            store, covered = PreferenceStore(), []
            quarantined: dict[str, int] = {}
            for snapshot in latest.values():
                if shard in snapshot.offsets:
                    store.merge(snapshot.agent, snapshot.segments)
                    self.agents.setdefault(shard, set()).add(snapshot.agent)
                    covered.append(snapshot.offsets[shard])
                    for kind, count in snapshot.quarantined.items():
                        quarantined[kind] = max(quarantined.get(kind, 0), count)
                    self.updates[shard] = max(self.updates.get(shard, 0), snapshot.updates)
            self.shards[shard], self.quarantined[shard] = store, quarantined
            start = min(covered) if covered else 0
            self.positions[shard] = start
            tp.offset = start if start > 0 else OFFSET_BEGINNING
        # What was quarantined after the shards' snapshots is read again: each record stays one dead letter.
        stamps = [s.timestamp.timestamp() for s in latest.values() if any(o in s.offsets for o in self.shards)]
        since = min(stamps) - RECALL_MARGIN_SECONDS if stamps else 0.0
        self.dead_letters.already = dead_lettered_since(self.bootstrap, self.prefix, self.dead_letters.consumer, since)
        consumer.assign(partitions)
        log.info("agentops assigned %s", [(tp.topic, tp.partition, tp.offset) for tp in partitions])

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.publish(force=True)
        self.producer.flush()
        consumer.unassign()

    def step(self, timeout: float = 0.5) -> int:
        records = self.consumer.poll(self.batch_size, timeout)
        for record in records:
            self._handle(record)
        for topic, count in Counter(record.topic.name for record in records).items():
            EVENTS_IN.labels("agentops", topic).inc(count)
        self.publish()
        if time.monotonic() - self._lag_at > 10:
            record_lag("agentops", self.consumer.kafka)
            self._lag_at = time.monotonic()
            self.dead_letters.log_summary()
        return len(records)

    def _handle(self, record: Record) -> None:
        shard = f"{record.topic.full_name(self.prefix)}:{record.partition}"
        if record.offset < self.positions.get(shard, 0):
            return  # covered by the shard's snapshot
        self.positions[shard] = record.offset + 1
        store = self.shards.setdefault(shard, PreferenceStore())
        event = record.event
        if isinstance(event, AgentFeedbackEvent):
            for alert in self.guard.observe(event):
                self.producer.send(alert)
                EVENTS_OUT.labels("agentops", "guardrail-alerts").inc()
                log.warning("guardrail %s on %s: %s > %s", alert.rule, alert.subject, alert.observed, alert.threshold)
            if event.kind not in FEEDBACK_KINDS:
                return
            agent = event.agent
        else:
            assert isinstance(event, PreferenceEvent)
            agent = preference_agent(event)
        refused = self.feedback.check(event)
        if refused is not None:
            kind, reason = refused
            counts = self.quarantined.setdefault(shard, {})
            counts[kind] = counts.get(kind, 0) + 1
            self.dead_letters.reject(
                record.topic.full_name(self.prefix),
                record.partition,
                record.offset,
                record.key,
                record.value,
                "rejected",
                f"quarantined ({kind}): {reason}",
            )
            self.dirty.add(shard)
            return
        if isinstance(event, PreferenceEvent):
            store.add_preference(segment_of(event.context, self.segment_keys), agent, event.chosen, event.rejected)
        else:
            segment = segment_of({"tenant": event.tenant or "*", "agent": event.agent}, self.segment_keys)
            if event.kind == "thumbs":
                store.add_thumbs(segment, agent, event.variant, event.value == 1.0)
            else:
                store.add_rating(segment, agent, event.variant, float(event.value))  # type: ignore[arg-type]
        self.agents.setdefault(shard, set()).add(agent)
        self.updates[shard] = self.updates.get(shard, 0) + 1
        self.dirty.add(shard)

    def publish(self, force: bool = False) -> int:
        """Publish the shards that changed (all agents of each), if due or ``force``; return snapshots sent."""
        if not self.dirty or (not force and time.monotonic() - self._published_at < self.publish_seconds):
            return 0
        sent = 0
        for shard in sorted(self.dirty):
            for agent in sorted(self.agents.get(shard, ())):
                self.producer.send(
                    PreferenceSnapshot(
                        agent=agent,
                        shard=f"{agent}@{shard}",
                        offsets={shard: self.positions[shard]},
                        segments=self.shards[shard].stats(agent),
                        updates=self.updates.get(shard, 0),
                        quarantined=self.quarantined.get(shard, {}),
                    )
                )
                sent += 1
        self.dirty.clear()
        self._published_at = time.monotonic()
        self.producer.flush()
        self.consumer.commit()
        EVENTS_OUT.labels("agentops", "preference-store").inc(sent)
        return sent

    def run(self, stop: threading.Event | None = None) -> None:
        stop = stop or threading.Event()
        try:
            while not stop.is_set():
                self.step()
            self.publish(force=True)
        finally:
            self.producer.flush()
            self.consumer.close()
