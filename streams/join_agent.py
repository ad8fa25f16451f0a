"""The join agent: a thin faust agent that feeds predictions, outcomes and clock ticks to the core join.

State lives in a faust Table with a changelog topic, so a restarted (or new)
worker recovers the pending decisions of the partitions it is assigned. The
changelog and the input offsets commit in one Kafka transaction; outputs are
delivered before each commit (see :func:`_flush_outputs_before_commits`).
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path

import faust
from confluent_kafka import Consumer, TopicPartition
from faust.types import TP

from learners.join import OUTCOME_CLOCK, PREDICTION_CLOCK, DelayedJoin, JoinOutput
from learners.spec import LearnerSpec
from schemas.codec import encode
from schemas.errors import DeliveryFailed
from schemas.inference import OutcomeEvent, PredictionEvent
from schemas.system import ClockTick
from schemas.topics import DEAD_LETTERS, JOIN_CLOCK, OUTCOMES, PREDICTIONS, TRAINING_EXAMPLES, topic_named
from streams.deadletter import DeadLetters
from streams.metrics import CONSUMER_LAG, EVENTS_IN, JOINS
from streams.producer import KAFKA_LOG, EventProducer

log = logging.getLogger(__name__)


class _Collect:
    """A dead-letter sink that keeps letters until the agent sends them through faust."""

    def __init__(self) -> None:
        self.pending: list = []

    def send(self, event) -> None:
        self.pending.append(event)


def _flush_outputs_before_commits() -> None:
    """Make faust deliver every output before it commits input offsets in a transaction.

    A training example is keyed by model, so it goes to another partition than its input
    and faust sends it outside the input's transaction; in ``exactly_once`` mode faust
    commits offsets (with the table's changelog) without flushing such sends, so a
    rebalance or a crash right after a commit lost them (seen: 36 decisions of one
    partition in a scale-out test). Flushing first makes the output at-least-once; the
    learner skips a decision it has learned, so learning stays exactly once.
    """
    from faust.transport.consumer import TransactionManager

    if getattr(TransactionManager.commit, "flushes_first", False):
        return
    commit = TransactionManager.commit

    async def commit_after_flush(self, offsets, start_new_transaction: bool = True):  # noqa: ANN001, ANN202
        await self.producer.flush()
        return await commit(self, offsets, start_new_transaction=start_new_transaction)

    commit_after_flush.flushes_first = True  # type: ignore[attr-defined]
    TransactionManager.commit = commit_after_flush  # type: ignore[method-assign]


def create_join_app(
    *,
    bootstrap: str,
    prefix: str,
    partitions: int,
    specs: Mapping[str, LearnerSpec],
    data_dir: Path,
    tick_seconds: float | None = 1.0,
    lateness_seconds: float = 0.0,
    group: str = "adaptloop-join",
    stall_seconds: float = 45.0,
) -> faust.App:
    """A faust app running the delayed-feedback join; ``tick_seconds=None`` uses event time only."""
    _flush_outputs_before_commits()
    data_dir.mkdir(parents=True, exist_ok=True)  # faust creates only the last level
    app = faust.App(
        f"{prefix}{group}",
        broker=f"kafka://{bootstrap}",
        store="memory://",
        datadir=str(data_dir),
        web_enabled=False,
        topic_partitions=partitions,
        topic_replication_factor=1,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        table_standby_replicas=0,
        # One Kafka transaction per commit: the table's changelog, the training examples and dead
        # letters, and the input offsets land together or not at all, so a crash can neither lose
        # an example (changelog says "done", output lost) nor apply one twice.
        processing_guarantee="exactly_once",
        broker_session_timeout=10.0,  # a crashed worker's partitions move on within seconds
        broker_heartbeat_interval=2.0,
    )
    names = {topic: topic.full_name(prefix) for topic in (PREDICTIONS, OUTCOMES, JOIN_CLOCK)}
    source = app.topic(*names.values(), key_serializer="raw", value_serializer="raw")
    examples_out = app.topic(TRAINING_EXAMPLES.full_name(prefix), key_serializer="raw", value_serializer="raw")
    dead_out = app.topic(DEAD_LETTERS.full_name(prefix), key_serializer="raw", value_serializer="raw")
    table = app.Table("join-pending", partitions=partitions)  # JSON keys and values
    collected = _Collect()
    dead_letters = DeadLetters(collected, consumer=f"{prefix}{group}")  # type: ignore[arg-type]
    join = DelayedJoin(table, specs, lateness=lateness_seconds)
    next_offsets: dict[TP, int] = {}
    clock_of = {names[PREDICTIONS]: PREDICTION_CLOCK, names[OUTCOMES]: OUTCOME_CLOCK}

    def read_to_end(partition: int) -> tuple[int, ...]:
        """The clocks whose topic partition has been processed up to its highwater mark."""
        done = []
        for name, clock in clock_of.items():
            tp = TP(name, partition)
            highwater = app.consumer.highwater(tp)
            # Not read yet in this process: start from the committed offset (faust keeps no public accessor).
            position = next_offsets.get(tp) or app.consumer._committed_offset.get(tp) or 0
            if highwater is not None and position >= highwater:
                done.append(clock)
        return tuple(done)

    progress = {"at": time.monotonic()}

    @app.agent(source, name="join")
    async def join_agent(stream: faust.StreamT) -> None:
        async for event in stream.events():
            progress["at"] = time.monotonic()
            message = event.message
            next_offsets[TP(message.topic, message.partition)] = message.offset + 1
            EVENTS_IN.labels("join", message.topic).inc()
            topic = topic_named(message.topic, prefix)
            decoded = dead_letters.decode(topic, message.topic, message.partition, message.offset,
                                          message.key, message.value)
            out = JoinOutput()
            if isinstance(decoded, PredictionEvent):
                out = join.on_prediction(decoded, message.partition)
            elif isinstance(decoded, OutcomeEvent):
                out = join.on_outcome(decoded, message.partition, message.offset)
            elif isinstance(decoded, ClockTick):
                out = join.tick(message.partition, decoded.timestamp.timestamp(), read_to_end(message.partition))
            for orphan in out.orphans:
                # The outcome's own offset (the agent always records it; the current one is a fallback).
                offset = orphan.offset if orphan.offset is not None else message.offset
                dead_letters.reject(names[OUTCOMES], message.partition, offset, orphan.outcome.decision_id.encode(),
                                    encode(orphan.outcome), "rejected", orphan.reason)
            for example in out.examples:
                await examples_out.send(key=example.model.encode(), value=encode(example))
                JOINS.labels(example.model, example.status).inc()
            while collected.pending:
                letter = collected.pending.pop(0)
                await dead_out.send(key=DEAD_LETTERS.key_of(letter), value=encode(letter))

    @app.on_partitions_revoked.connect
    async def _revoked(app: faust.App, revoked: set, **_: object) -> None:
        for tp in revoked:
            join.forget(tp.partition)

    if tick_seconds:
        # Ticks belong to no read-process-write transaction, so they go through the plain producer
        # SDK (faust's transactional producers exist only for partitions this worker owns).
        ticker = EventProducer(bootstrap, topic_prefix=prefix)

        @app.timer(tick_seconds)
        async def clock() -> None:
            tick = ClockTick(source=f"{prefix}{group}", timestamp=datetime.now(timezone.utc))
            for tp in app.assignor.assigned_actives():
                if tp.topic == names[JOIN_CLOCK]:
                    ticker.send(tick, partition=tp.partition)
            try:
                ticker.poll()
            except DeliveryFailed as error:  # a missed tick only delays expiry; the next one follows
                log.warning("clock tick not delivered: %s", error)

    # Watchdog: a faust consumer has been seen (on a loaded 2-core machine, after a rebalance) to
    # hold partitions and fetch nothing. If records wait and none has been processed for
    # ``stall_seconds``, this role stops; the worker restarts it and the group rebalances.
    watermarks = Consumer({"bootstrap.servers": bootstrap, "group.id": f"{prefix}{group}-watchdog"}, logger=KAFKA_LOG)

    @app.timer(10.0)
    async def watchdog() -> None:
        behind = {}
        for tp in app.assignor.assigned_actives():
            if tp.topic not in clock_of and tp.topic != names[JOIN_CLOCK]:
                continue
            _, high = watermarks.get_watermark_offsets(TopicPartition(tp.topic, tp.partition), timeout=2.0)
            position = next_offsets.get(tp) or app.consumer._committed_offset.get(tp) or 0
            CONSUMER_LAG.labels("join", tp.topic, str(tp.partition)).set(max(0, high - position))
            if high > position:
                behind[f"{tp.topic}[{tp.partition}]"] = high - position
        idle = time.monotonic() - progress["at"]
        if behind and idle > stall_seconds:
            log.error("join stalled: %s records waiting, none processed for %.0fs; restarting this role", behind, idle)
            os.kill(os.getpid(), signal.SIGTERM)

    return app


def run_join_worker(app: faust.App, loglevel: str = "warn") -> None:
    """Run the faust worker until SIGTERM/SIGINT."""
    faust.Worker(app, loglevel=loglevel, quiet=True).execute_from_commandline()
