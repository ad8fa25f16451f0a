"""The AgentOps agent: guardrails on agent events, quarantine for bad feedback, preference stores
out, exactly once.

It reads ``agent-feedback`` and ``preferences``. Every agent event passes the :class:`AgentGuard`
(alerts on ``guardrail-alerts`` on the breaching event); thumbs, ratings, scores and preferences
pass the shard's segment cap and the :class:`FeedbackGuard`, then update the preference store of
their input partition (a *shard*), or go to quarantine (a dead letter with the reason). A new
undeclared agent or variant beyond its cap takes the slot of the weakest holder
(:class:`~adaptloop.learners.preferences.Cardinality`), whose statistics are dropped and reported (a
``slot_reclaimed`` alert).

Everything it does in ``publish_seconds`` commits in one Kafka transaction with the input offsets:
the alerts and dead letters, the snapshots of the shards that changed (one publication per changed
shard and agent), and the guard counters and names' holdings that changed, as entries of the
compacted ``<group>-state`` topic. On assignment it restores the shards from ``preference-store``
and the counters and holdings from its state topic and resumes from the committed offsets, so every
piece of feedback is counted once, quotas, sessions and hourly costs go on counting, and slots are
reclaimed as without a crash. A publication larger than a Kafka record is split into parts
(:class:`adaptloop.learners.preferences.Publications` puts them together); shards hold counts, so
:class:`adaptloop.streams.preference_client.PreferenceClient` merges them exactly.

Quotas count by the time the broker received each record (the topics are created with LogAppendTime)
as well as by the event's own time, so forged timestamps cannot get around them. Guard counters are
per process: with several workers, each counts what it reads. Quotas are per source, not per Kafka
principal: a consumer is not told which principal produced a record, and the events carry none.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections import Counter
from typing import Protocol

import msgspec
import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition
from pydantic import TypeAdapter

from adaptloop.learners.guardrails import AgentGuard, FeedbackGuard, GuardrailLimits
from adaptloop.learners.preferences import (
    Cardinality,
    PreferenceStore,
    Publications,
    Reclaimed,
    segment_of,
)
from adaptloop.schemas.agents import (
    AgentFeedbackEvent,
    PreferenceEvent,
    PreferenceSnapshot,
    VariantStats,
)
from adaptloop.schemas.errors import ConfigError
from adaptloop.schemas.system import GuardrailAlert
from adaptloop.schemas.topics import AGENT_FEEDBACK, PREFERENCE_STORE, PREFERENCES
from adaptloop.streams.admin import BY_CLUSTER_SIZE, Replication, arrival_stamped, ensure_changelog
from adaptloop.streams.connection import ConnectionLike, KafkaConnection
from adaptloop.streams.consumer import EventConsumer, Record
from adaptloop.streams.deadletter import DeadLetters
from adaptloop.streams.metrics import EVENTS_IN, EVENTS_OUT, RECLAIMED, record_lag
from adaptloop.streams.producer import EventProducer
from adaptloop.streams.versions import read_all, read_raw

log = logging.getLogger(__name__)

FEEDBACK_KINDS = frozenset({"thumbs", "rating", "score"})

PART_BYTES = 600_000
"""A publication's part holds variants' statistics up to this many bytes of JSON (a Kafka record
takes 1 MB): one variant's statistics hold at most ``max_variants_per_agent`` pairwise win counts,
27 KB."""

TRANSACTION_TIMEOUT_MS = 30_000
"""A transaction left open by a process that died is aborted by the broker after this long; until
then committed readers (a restore) wait behind it."""

RESTORE_TIMEOUT = 120.0

_PACK, _UNPACK = msgspec.msgpack.Encoder(), msgspec.msgpack.Decoder()

SLOT = "slot:"
"""State entries of the names' holdings: ``slot:["<shard>", "<agent>"(, "<variant>")]`` -> [last
offset, evidence]."""
_STATS = TypeAdapter(VariantStats)


def preference_agent(event: PreferenceEvent) -> str:
    """Preferences name their agent in ``context["agent"]`` (``default`` if they do not)."""
    return event.context.get("agent", "default")


def split_parts(
    segments: dict[str, dict[str, VariantStats]], limit: int = PART_BYTES
) -> list[dict[str, dict[str, VariantStats]]]:
    """The statistics in parts of at most ``limit`` bytes of JSON each (a segment's variants may be
    split: their counts add up wherever they are).

    >>> stats = {"*": {f"v{i}": VariantStats(ups=1.0) for i in range(3)}}
    >>> [sorted(part["*"]) for part in split_parts(stats, limit=220)]
    [['v0', 'v1'], ['v2']]
    """
    parts: list[dict[str, dict[str, VariantStats]]] = [{}]
    size = 0
    for segment, variants in segments.items():
        for variant, stats in variants.items():
            grows = len(_STATS.dump_json(stats)) + len(variant.encode()) + len(segment.encode()) + 8
            if size and size + grows > limit:
                parts.append({})
                size = 0
            parts[-1].setdefault(segment, {})[variant] = stats
            size += grows
    return parts


class AgentOpsSettings(Protocol):
    """What AgentOps reads of the worker's settings (:class:`adaptloop.settings.Settings` has it
    all)."""

    group: str
    guardrails: GuardrailLimits
    segment_keys: list[str]
    preference_publish_seconds: float
    max_future_seconds: float

    @property
    def replication(self) -> Replication: ...


class AgentOpsAgent:
    """Typical use (needs a broker)::

    AgentOpsAgent("localhost:9092", limits=GuardrailLimits()).run(stop)
    """

    @classmethod
    def from_settings(
        cls, settings: AgentOpsSettings, connection: KafkaConnection
    ) -> AgentOpsAgent:
        """The AgentOps role of the worker ``settings`` describe, its topics prefixed as
        ``connection`` says.

        Its transactional id is stable while the worker process (this role's parent) runs: a
        restarted role fences the one it replaces at once.
        """
        prefix, group = connection.topic_prefix, f"{settings.group}-agentops"
        return cls(
            connection,
            limits=settings.guardrails,
            segment_keys=settings.segment_keys,
            prefix=prefix,
            group=group,
            publish_seconds=settings.preference_publish_seconds,
            max_future_seconds=settings.max_future_seconds,
            transactional_id=f"{prefix}{group}-{socket.gethostname()}-{os.getppid()}",
            replication=settings.replication,
        )

    def __init__(
        self,
        connection: ConnectionLike,
        *,
        limits: GuardrailLimits,
        segment_keys: list[str] | None = None,
        prefix: str = "",
        group: str = "adaptloop-agentops",
        publish_seconds: float = 1.0,
        batch_size: int = 2000,
        max_future_seconds: float = 300.0,
        transactional_id: str | None = None,
        replication: Replication = BY_CLUSTER_SIZE,
    ) -> None:
        self.connection, self.prefix = connection, prefix
        self.group = f"{prefix}{group}"
        self.state_topic = f"{self.group}-state"
        self.store_topic = PREFERENCE_STORE.full_name(prefix)
        self.segment_keys = list(segment_keys or [])
        self.limits = limits
        self.publish_seconds, self.batch_size = publish_seconds, batch_size
        self.max_future_seconds = max_future_seconds
        self.guard, self.feedback = AgentGuard(limits), FeedbackGuard(limits)
        self.names: dict[str, Cardinality] = {}  # input partition -> the names its store holds
        ensure_changelog(connection, self.state_topic, 1, replication)
        inputs = [AGENT_FEEDBACK.full_name(prefix), PREFERENCES.full_name(prefix)]
        self.arrival = arrival_stamped(connection, inputs)
        for name, stamped in self.arrival.items():
            if not stamped:
                log.warning(
                    "%s has producer timestamps: quotas count by the time this worker "
                    "reads records",
                    name,
                )
        self.output = EventProducer(
            connection,
            topic_prefix=prefix,
            transactional_id=transactional_id or f"{self.group}-{uuid.uuid4().hex[:12]}",
            config={"transaction.timeout.ms": TRANSACTION_TIMEOUT_MS},
        )
        self.dead_letters = DeadLetters(self.output, consumer=self.group)
        self.shards: dict[str, PreferenceStore] = {}  # input partition -> its store
        self.updates: Counter[tuple[str, str]] = Counter()  # (shard, agent) -> feedback counted
        # (shard, agent) -> kind -> count
        self.quarantined: dict[tuple[str, str], Counter[str]] = {}
        # (shard, agent) -> parts of its last publication
        self.parts: dict[tuple[str, str], int] = {}
        # keys of one-record publications of earlier versions, to delete
        self.legacy: set[str] = set()
        self.dirty: set[tuple[str, str]] = set()
        self._committed: dict[tuple[str, int], int] = {}
        self._published_at = time.monotonic()
        self._lag_at = 0.0
        self.consumer = EventConsumer(
            connection,
            self.group,
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

    def _names(self) -> Cardinality:
        limits = self.limits
        return Cardinality(
            limits.max_agents,
            limits.max_variants_per_agent,
            limits.max_segments_per_agent,
            limits.agents,
        )

    # -- assignment: restore the shards and the guards' counters
    # ---------------------------------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        starts = self._restore([f"{tp.topic}:{tp.partition}" for tp in partitions])
        committed = consumer.committed(partitions, timeout=30)
        for tp, done in zip(partitions, committed, strict=True):
            # Offsets commit with the snapshots; a snapshot ahead of them was published by an
            # earlier version.
            start = max(done.offset, starts.get(f"{tp.topic}:{tp.partition}", 0))
            tp.offset = start if start > 0 else OFFSET_BEGINNING
            self._committed[(tp.topic, tp.partition)] = max(start, 0)
        consumer.assign(partitions)
        log.info("agentops assigned %s", [(tp.topic, tp.partition, tp.offset) for tp in partitions])

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.commit(force=True)
        consumer.unassign()
        self.shards, self.names, self.dirty = {}, {}, set()

    def _restore(self, shards: list[str]) -> dict[str, int]:
        """Rebuild the stores of ``shards`` and every guard counter from their topics; return the
        offset each shard's newest publication covers."""
        publications = Publications()
        for snapshot in read_all(
            self.connection, PREFERENCE_STORE, self.prefix, RESTORE_TIMEOUT, strict=True
        ):
            assert isinstance(snapshot, PreferenceSnapshot)
            if snapshot.input_shard in shards:
                publications.add(snapshot)
        self.shards = {shard: PreferenceStore() for shard in shards}
        self.updates, self.quarantined, self.parts, self.legacy, self.dirty = (
            Counter(),
            {},
            {},
            set(),
            set(),
        )
        starts: dict[str, int] = {}
        for (agent, shard), parts in publications.complete.items():
            first = parts[0]
            if first.segment_keys is not None and first.segment_keys != self.segment_keys:
                raise ConfigError(
                    f"the preference store of {agent!r} is split by segment_keys "
                    f"{first.segment_keys}, the "
                    f"settings say {self.segment_keys}: set them back, or start a new store (a new "
                    "ADAPTLOOP_TOPIC_PREFIX); merging segments of different keys would mix "
                    "their feedback"
                )
            starts[shard] = max(starts.get(shard, 0), first.position)
            if first.parts == 1 and not (first.segments or first.updates or first.quarantined):
                continue  # a reclaimed agent's last (empty) publication: it holds nothing
            for part in parts:
                self.shards[shard].merge(agent, part.segments)
            self.updates[(shard, agent)] = first.updates
            self.quarantined[(shard, agent)] = Counter(first.quarantined)
            self.parts[(shard, agent)] = first.parts
            if first.shard == f"{agent}@{shard}":
                self.legacy.add(first.shard)
        self.names = {shard: self._names() for shard in self.shards}
        for shard, store in self.shards.items():
            self.names[shard].admit_store(store)
        self.guard, self.feedback = AgentGuard(self.limits), FeedbackGuard(self.limits)
        entries = 0
        for key, value in read_raw(self.connection, self.state_topic, RESTORE_TIMEOUT, strict=True):
            if key is not None and value is not None:
                name = key.decode()
                values = _UNPACK.decode(value)
                if not (
                    self.guard.load(name, values)
                    or self.feedback.load(name, values)
                    or self._load_slot(name, values)
                ):
                    log.warning("agentops state: unknown entry %r ignored", name)
                entries += 1
        self.guard.clear_changes()
        self.feedback.clear_changes()
        log.info(
            "agentops restored %d shard publications and %d guard entries",
            len(publications.complete),
            entries,
        )
        return starts

    def _load_slot(self, key: str, values: list[int]) -> bool:
        """Take back one name's holding (see :meth:`Cardinality.take_changes`); False: not a
        holding's entry."""
        if not key.startswith(SLOT):
            return False
        shard, *name = orjson.loads(key.removeprefix(SLOT))
        if shard in self.names:
            self.names[shard].load(tuple(name), values)
        return True

    # -- the loop ----------------------------------------------------------------------------------

    def step(self, timeout: float = 0.5) -> int:
        records = self.consumer.poll(self.batch_size, timeout)
        for record in records:
            self._handle_safely(record)
        for topic, count in Counter(record.topic.name for record in records).items():
            EVENTS_IN.labels("agentops", topic).inc(count)
        self.commit()
        if time.monotonic() - self._lag_at > 10:
            record_lag("agentops", self.consumer.kafka)
            self._lag_at = time.monotonic()
            self.dead_letters.log_summary()
        return len(records)

    def _handle_safely(self, record: Record) -> None:
        try:
            self._handle(record)
        except Exception as error:  # one record's problem, never the role's
            log.exception(
                "agentops: %s[%d]@%d raised", record.topic.name, record.partition, record.offset
            )
            self._reject(record, "error", f"agentops raised {type(error).__name__}: {error}")

    def _handle(self, record: Record) -> None:
        shard = f"{record.topic.full_name(self.prefix)}:{record.partition}"
        store = self.shards.setdefault(shard, PreferenceStore())
        names = self.names.get(shard) or self.names.setdefault(shard, self._names())
        event = record.event
        ahead = event.timestamp.timestamp() - time.time()
        # it would expire every session and open a new hour of costs
        if ahead > self.max_future_seconds:
            self._reject(
                record,
                "rejected",
                f"timestamp {event.timestamp.isoformat()} is {ahead:,.0f}s ahead of this "
                "worker's clock (limit "
                f"{self.max_future_seconds:,.0f}s)",
            )
            return
        if isinstance(event, AgentFeedbackEvent):
            for alert in self.guard.observe(event):
                self.output.send(alert)
                EVENTS_OUT.labels("agentops", "guardrail-alerts").inc()
                log.warning(
                    "guardrail %s on %s: %s > %s",
                    alert.rule,
                    alert.subject,
                    alert.observed,
                    alert.threshold,
                )
            if event.kind not in FEEDBACK_KINDS:
                return
            agent, variants = event.agent, [event.variant]
            segment = segment_of(
                {"tenant": event.tenant or "*", "agent": event.agent}, self.segment_keys
            )
        else:
            assert isinstance(event, PreferenceEvent)
            agent, variants = preference_agent(event), [event.chosen, event.rejected]
            segment = segment_of(event.context, self.segment_keys)
        overflow = names.refuses(segment, agent, variants)
        refused = (
            ("cardinality", overflow)
            if overflow
            else self.feedback.check(event, self._arrived(record), agent)
        )
        if refused is not None:
            kind, reason = refused
            self._reject(record, "rejected", f"quarantined ({kind}): {reason}")
            # an unknown agent's name is not worth a publication of its own
            if agent in names.known:
                self.quarantined.setdefault((shard, agent), Counter())[kind] += 1
                self.dirty.add((shard, agent))
            return
        for reclaimed in names.admit(segment, agent, variants, record.offset):
            self._reclaim(shard, reclaimed)
        if isinstance(event, PreferenceEvent):
            store.add_preference(segment, agent, event.chosen, event.rejected)
        elif event.kind == "thumbs":
            store.add_thumbs(segment, agent, event.variant, event.thumb == "up")
        else:
            store.add_rating(segment, agent, event.variant, float(event.value))  # type: ignore[arg-type]
        self.updates[(shard, agent)] += 1
        self.dirty.add((shard, agent))

    def _reclaim(self, shard: str, reclaimed: Reclaimed) -> None:
        """Drop the statistics of a name whose slot was taken, and say so on
        ``guardrail-alerts``."""
        agent, variant = reclaimed.agent, reclaimed.variant
        self.shards[shard].forget(agent, variant)
        if variant is None:  # its counters go too
            self.updates.pop((shard, agent), None)
            self.quarantined.pop((shard, agent), None)
        # never published: nothing to retract
        if variant is None and not self.parts.get((shard, agent)):
            self.dirty.discard((shard, agent))
        else:  # its next publication is without it (an agent's: empty, see _publish)
            self.dirty.add((shard, agent))
        what = f"variant {variant!r} of {agent!r}" if variant is not None else f"agent {agent!r}"
        self.output.send(
            GuardrailAlert(
                rule="slot_reclaimed",
                subject=agent,
                agent=agent,
                observed=float(reclaimed.held.evidence),
                threshold=float(reclaimed.cap),
                evidence={
                    "variant": variant,
                    "shard": shard,
                    "last_offset": reclaimed.held.last,
                    "taken_by": reclaimed.by,
                    "why": f"{what} had the least feedback ({reclaimed.held.evidence}) of the undeclared names "
                    f"at the cap of {reclaimed.cap}; its statistics in this shard were dropped",
                },
            )
        )
        EVENTS_OUT.labels("agentops", "guardrail-alerts").inc()
        RECLAIMED.labels("agent" if variant is None else "variant").inc()

    def _arrived(self, record: Record) -> float:
        """When Kafka received the record (on a topic with producer timestamps: when it is read)."""
        return (
            record.timestamp
            if self.arrival.get(record.topic.full_name(self.prefix))
            else time.time()
        )

    def _reject(self, record: Record, kind: str, reason: str) -> None:
        self.dead_letters.reject(
            record.topic.full_name(self.prefix),
            record.partition,
            record.offset,
            record.key,
            record.value,
            kind,  # type: ignore[arg-type]
            reason,
        )

    # -- the transaction: publications, counters, offsets ------------------------------------------

    def commit(self, force: bool = False) -> int:
        """If due (or ``force``): publish the changed shards and counters and commit them with the
        input offsets in one transaction; return the snapshot records sent."""
        if not force and time.monotonic() - self._published_at < self.publish_seconds:
            return 0
        self._published_at = time.monotonic()
        kafka = self.consumer.kafka
        moved = [
            tp
            for tp in kafka.position(kafka.assignment())
            if tp.offset >= 0 and self._committed.get((tp.topic, tp.partition)) != tp.offset
        ]
        if not moved and not self.output.in_transaction:
            return 0
        positions = {
            f"{tp.topic}:{tp.partition}": tp.offset for tp in kafka.position(kafka.assignment())
        }
        sent = sum(
            self._publish(shard, agent, positions.get(shard, 0))
            for shard, agent in sorted(self.dirty)
        )
        changes = {**self.guard.take_changes(), **self.feedback.take_changes()}
        for shard, names in self.names.items():
            for name, holding in names.take_changes().items():
                changes[SLOT + orjson.dumps([shard, *name]).decode()] = holding
        for key, values in changes.items():
            value = _PACK.encode(values) if values is not None else None
            self.output.send_bytes(self.state_topic, key.encode(), value, partition=0)
        try:
            self.output.commit_transaction(moved, kafka.consumer_group_metadata())
        except KafkaException as error:
            if not error.args[0].txn_requires_abort():
                # fenced or fatal: the role stops, the worker restarts it, the group rebalances
                raise
            log.warning(
                "agentops: transaction aborted (%s); going back to the last commit",
                error.args[0].str(),
            )
            self.output.abort_transaction()
            self._rewind()
            return 0
        self.dirty.clear()
        for tp in moved:
            self._committed[(tp.topic, tp.partition)] = tp.offset
        EVENTS_OUT.labels("agentops", "preference-store").inc(sent)
        return sent

    def _publish(self, shard: str, agent: str, position: int) -> int:
        """Send the publication of one shard of one agent (in parts), delete parts it no longer
        has."""
        parts = split_parts(self.shards[shard].stats(agent))
        quarantined = dict(self.quarantined.get((shard, agent), {}))
        for part, segments in enumerate(parts):
            self.output.send(
                PreferenceSnapshot(
                    agent=agent,
                    shard=f"{agent}@{shard}/{part}",
                    offsets={shard: position},
                    segments=segments,
                    updates=self.updates[(shard, agent)],
                    quarantined=quarantined,
                    part=part,
                    parts=len(parts),
                    segment_keys=self.segment_keys,
                )
            )
        stale = [
            f"{agent}@{shard}/{part}"
            for part in range(len(parts), self.parts.get((shard, agent), 0))
        ]
        if f"{agent}@{shard}" in self.legacy:
            stale.append(f"{agent}@{shard}")
            self.legacy.discard(f"{agent}@{shard}")
        if parts == [{}] and not self.updates[(shard, agent)] and not quarantined:
            # Nothing left (its slot was reclaimed): readers from the start take the empty
            # publication above, and compaction deletes both.
            stale.append(f"{agent}@{shard}/0")
            parts = []
        for key in stale:  # tombstones: compaction deletes them
            self.output.send_bytes(self.store_topic, key.encode(), None)
        self.parts[(shard, agent)] = len(parts)
        return max(len(parts), 1)

    def _rewind(self) -> None:
        """After an aborted transaction: the stores, counters and positions of the last commit."""
        kafka = self.consumer.kafka
        assigned = kafka.assignment()
        starts = self._restore([f"{tp.topic}:{tp.partition}" for tp in assigned])
        for tp in kafka.committed(assigned, timeout=30):
            start = max(tp.offset, starts.get(f"{tp.topic}:{tp.partition}", 0))
            self._committed[(tp.topic, tp.partition)] = start
            kafka.seek(
                TopicPartition(tp.topic, tp.partition, start if start > 0 else OFFSET_BEGINNING)
            )

    def run(self, stop: threading.Event | None = None) -> None:
        stop = stop or threading.Event()
        try:
            while not stop.is_set():
                self.step()
            self.commit(force=True)
        finally:
            if self.output.in_transaction:
                self.output.abort_transaction()
            self.consumer.close()
