"""The learner agent: training examples in, exactly-once learning, model versions out.

It also carries out operators' commands (``model-commands``, co-partitioned with
``training-examples`` so the "range" assignment gives a model's commands to the
worker that owns the model): a rollback swaps the model for a stored version,
publishes that as the current one (parent: the version it replaces) and learning
continues from it.

It uses the consumer helper (confluent-kafka) rather than faust because
exactly-once needs control of where each partition starts: on assignment it
seeks to the offsets saved in the models' checkpoints, and each model skips
what its checkpoint already covers. Kafka's committed offsets are only for lag.

A model never stays broken: an example that breaks its model's contract is
dead-lettered before the model changes, and one that makes the model raise is
undone (:mod:`adaptloop.learners.recovery`: the learner is restored from its last
checkpoint and relearns its journal without the example to blame). Each model's
health (:mod:`adaptloop.learners.health`) is published on ``model-health``, with an
alert on ``drift-alerts`` when it turns sick, and written for the worker's ``/health``.

Models change while it runs (:mod:`adaptloop.streams.specs`): on each assignment it reads the
catalogue of ``model-specs`` to its end (over the worker's ``ADAPTLOOP_MODELS``) and restores every
model in it; then it reads ``model-specs`` in its group, co-partitioned with ``training-examples``,
so a model's spec records reach the learner that owns the model, in order with its examples as this
learner reads them. Each record takes effect at once (:meth:`LearnerAgent._spec`) and the model is
checkpointed right after it, so the spec a model learns under is part of its checkpoint: a restart,
or another worker taking the partition over, goes on from there under the same spec. (A record read
but not checkpointed before a crash is in the catalogue the next owner reads: it applies from the
checkpoint on, to examples no published version has learned.)
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from adaptloop.learners.catalog import as_learned, change_of, refuse_recipe_change, spec_of
from adaptloop.learners.health import HealthWatch
from adaptloop.learners.online import OnlineLearner
from adaptloop.learners.recovery import Entry, recover
from adaptloop.learners.spec import LearnerSpec
from adaptloop.learners.store import ModelStore
from adaptloop.schemas.codec import encode
from adaptloop.schemas.errors import (
    ConfigError,
    ModelFailure,
    SpecChanged,
    UnknownModel,
    UnlearnableExample,
)
from adaptloop.schemas.inference import LEARNABLE, TrainingExample
from adaptloop.schemas.system import (
    DeadLetterKind,
    DriftAlert,
    ModelCommand,
    ModelHealth,
    ModelSpecRecord,
    ModelVersion,
    VersionReason,
)
from adaptloop.schemas.topics import MODEL_COMMANDS, MODEL_SPECS, TRAINING_EXAMPLES
from adaptloop.schemas.trusted import as_event
from adaptloop.streams.connection import ConnectionLike, KafkaConnection
from adaptloop.streams.consumer import EventConsumer, Record
from adaptloop.streams.deadletter import RECALL_MARGIN_SECONDS, DeadLetters, dead_lettered_since
from adaptloop.streams.metrics import (
    DRIFT_ALERTS,
    EVENTS_IN,
    LEARNED,
    MODEL_ERRORS,
    MODEL_METRIC,
    NOT_PRODUCTION,
    REJECTED,
    UNREGISTERED,
    VERSIONS,
    record_lag,
    write_health,
)
from adaptloop.streams.producer import EventProducer
from adaptloop.streams.specs import read_catalogue
from adaptloop.streams.versions import published_versions

log = logging.getLogger(__name__)

CHECKPOINT_SHARE = 0.2
"""At most this share of a learner's time goes to count-based versions of a big model: a checkpoint
that took ``d`` seconds delays the next one until ``4 d`` have passed. A big Hoeffding tree takes
0.1-0.3 s to checkpoint: a version every 1,000 examples (the default) would have the learner
checkpointing most of the time."""

HEALTH_EVERY_SECONDS = 60.0
"""A model's health is published when it changes, and at least this often while the model learns."""

SMALL_MODEL_BYTES = 256 * 1024
"""A model smaller than this never has a version delayed: its versions fall on exact counts, as
operators and tests expect. Decided by the model's size, not by how long its last checkpoint took: a
size is the same on every machine, while a linear model's checkpoint (3-10 ms) can take over 50 ms
on a loaded host with a slow ``fsync``. A Hoeffding tree of 250 KB (240,000 examples of a 10-feature
hyperplane) takes 40-125 ms."""


def count_version_due(
    seen: int,
    every: int,
    since_last: float,
    last_cost: float,
    last_size: int,
    batch: int = 1,
) -> bool:
    """Whether a count-based version is due once the model has learned ``seen`` examples of its
    stream (learned ``batch`` at a time): ``seen`` reached a multiple of ``every`` with the examples
    just learned, and, for a model of :data:`SMALL_MODEL_BYTES` or more, long enough since the last
    version that checkpoints take at most :data:`CHECKPOINT_SHARE` of the time.

    The multiples are of the stream's count (the versions' ``examples_seen``), not of the examples
    since the last version: a promotion, a rollback or a time-based version in between moves no
    count-based version, so a stream of a multiple of ``every`` examples always ends on a version.

    >>> count_version_due(1000, 1000, since_last=0.001, last_cost=0.3, last_size=4_000)  # small: every 1,000
    True
    >>> count_version_due(1000, 1000, since_last=0.05, last_cost=0.25, last_size=5_000_000)  # big: 1,000 more
    False
    >>> count_version_due(2000, 1000, 1.0, 0.25, 5_000_000), count_version_due(2500, 1000, 1.0, 0.25, 5_000_000)
    (True, False)
    >>> count_version_due(1003, 1000, 1.0, 0.0, 0, batch=10)  # a batch of 10 that crossed 1,000
    True
    """
    if seen < every or seen % every >= batch:
        return False
    return (
        last_size < SMALL_MODEL_BYTES
        or since_last >= last_cost * (1 - CHECKPOINT_SHARE) / CHECKPOINT_SHARE
    )


class LearnerSettings(Protocol):
    """What a learner reads of the worker's settings (:class:`adaptloop.settings.Settings` has it
    all)."""

    group: str
    learner_batch: int
    health_window: int
    max_rejected_share: float

    @property
    def specs(self) -> dict[str, LearnerSpec]: ...

    def worker_model_store(self) -> ModelStore: ...


class LearnerAgent:
    """Owns the models of the ``training-examples`` partitions assigned to it.

    Typical use (needs a broker)::

        agent = LearnerAgent("localhost:9092", specs={"churn": spec}, store=ModelStore(path))
        agent.run(stop=threading.Event())
    """

    @classmethod
    def from_settings(cls, settings: LearnerSettings, connection: KafkaConnection) -> LearnerAgent:
        """The learner of the worker ``settings`` describe, its topics prefixed as ``connection``
        says."""
        return cls(
            connection,
            specs=settings.specs,
            store=settings.worker_model_store(),
            prefix=connection.topic_prefix,
            group=f"{settings.group}-learner",
            batch_size=settings.learner_batch,
            health_window=settings.health_window,
            max_rejected_share=settings.max_rejected_share,
        )

    def __init__(
        self,
        connection: ConnectionLike,
        *,
        specs: Mapping[str, LearnerSpec],
        store: ModelStore,
        prefix: str = "",
        group: str = "adaptloop-learner",
        batch_size: int = 1000,
        health_window: int = 200,
        max_rejected_share: float = 0.2,
    ) -> None:
        self.connection = connection
        self.seeds = dict(specs)  # ADAPTLOOP_MODELS: the models model-specs has no record of
        # each model's spec in effect (the catalogue, read on each assignment)
        self.specs = dict(specs)
        self.retired: set[str] = set()
        self.store = store
        self.prefix = prefix
        self.topic_name = TRAINING_EXAMPLES.full_name(prefix)
        self.commands_topic = MODEL_COMMANDS.full_name(prefix)
        self.batch_size = batch_size
        self.producer = EventProducer(connection, topic_prefix=prefix)
        self.dead_letters = DeadLetters(self.producer, consumer=f"{prefix}{group}")
        self.learners: dict[str, OnlineLearner] = {
            name: self._restored(spec) for name, spec in self.specs.items()
        }
        self.positions: dict[str, int] = {}  # "topic:partition" -> next offset read
        # (topic's base name, partition) -> its position's name (a Topic hashes all its fields)
        self._position_names: dict[tuple[str, int], str] = {}
        self._last_version_at = {name: time.monotonic() for name in self.specs}
        self._checkpoint_cost = dict.fromkeys(self.specs, 0.0)  # seconds the last checkpoint took
        self._lag_recorded_at = 0.0
        # within a step: the versions to publish once their files are written
        self._unpublished: list[ModelVersion] | None = None
        # What recovery needs: each model's examples since its last checkpoint, and its alerts sent
        # since.
        self.journals: dict[str, list[Entry]] = {name: [] for name in self.specs}
        self._alerts_sent: Counter[str] = Counter()
        self._health_window, self._max_rejected_share = health_window, max_rejected_share
        self.health = {
            name: HealthWatch(name, health_window, max_rejected_share) for name in self.specs
        }
        self._health_published: dict[str, float] = {}  # model -> when its health was last published
        # model -> decisions not scored as production, counted
        self._counted: dict[str, Counter[str]] = {}
        self.consumer = EventConsumer(
            connection,
            f"{prefix}{group}",
            [TRAINING_EXAMPLES, MODEL_COMMANDS, MODEL_SPECS],
            dead_letters=self.dead_letters,
            prefix=prefix,
            # eager "range": assign() with our own offsets, and partition i of both topics to the
            # same member; a 10 s session lets a crashed learner's partitions move to a live one
            # quickly.
            config={
                "partition.assignment.strategy": "range",
                "session.timeout.ms": 10_000,
                "heartbeat.interval.ms": 2_000,
                # The partitions of training-examples join the fetch in flight (the catalogue's end
                # of model-specs, empty) only when it returns: at the default 500 ms, the first
                # examples came 0.5 s after assignment. (Once data flows, fetches answer at once.)
                "fetch.wait.max.ms": 100,
            },
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            trusted=True,  # the join's own examples: typed structs, not validated again by pydantic
        )

    # -- rebalances --------------------------------------------------------------------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Eager rebalancing: every member has checkpointed on revoke before anyone is assigned, so
        # the store holds the latest state of every model, whoever owned it before.
        # Each read of a topic to its end is a client of its own (metadata, ends, a fetch): those
        # that do not need each other's results go side by side, not one after the other.
        with ThreadPoolExecutor(max_workers=2, thread_name_prefix="learner-assign") as reads:
            versions = reads.submit(published_versions, self.connection, self.prefix)
            catalogue = read_catalogue(self.connection, self.seeds, self.prefix)
            self.specs, self.retired = catalogue.specs, catalogue.retired
            self.learners = {name: self._restored(spec) for name, spec in self.specs.items()}
            self.journals = {name: [] for name in self.specs}
            for name in self.specs:
                self._watch(name)
            self._alerts_sent.clear()
            # From the checkpoints restored: a first version published now only moves the oldest
            # stamp later, so this recalls the same dead letters or a few more of them.
            recalled = reads.submit(
                dead_lettered_since,
                self.connection,
                self.prefix,
                self.dead_letters.consumer,
                self._recall_since(),
            )
            self.publish_missing(versions.result())
            self._recall_dead_letters(recalled.result())
        self.positions = {}
        specs_topic = MODEL_SPECS.full_name(self.prefix)
        for tp in partitions:
            key = f"{tp.topic}:{tp.partition}"
            if tp.topic == specs_topic:  # the catalogue holds every record before its end
                tp.offset = catalogue.ends.get(tp.partition, 0) or OFFSET_BEGINNING
                continue
            covered = [learner.progress.offsets.get(key, 0) for learner in self.learners.values()]
            tp.offset = min(covered) if covered and min(covered) > 0 else OFFSET_BEGINNING
            self.positions[key] = max(0, tp.offset)
        consumer.assign(partitions)
        log.info("learner assigned %s", [(tp.partition, tp.offset) for tp in partitions])

    def _recall_since(self) -> float:
        """Since when (epoch seconds) to read back what this learner dead-lettered: its oldest
        checkpoint, less :data:`RECALL_MARGIN_SECONDS` (a restart reads the records after it again:
        each must stay one dead letter)."""
        stamps = [
            learner.progress.record.timestamp.timestamp()
            for learner in self.learners.values()
            if learner.progress.record is not None
        ]
        return min(stamps, default=time.time()) - RECALL_MARGIN_SECONDS

    def _recall_dead_letters(self, recalled: set[tuple[str, int, int]]) -> None:
        """Dead-letter none of the records ``recalled`` (topic, partition, offset) again."""
        self.dead_letters.already = recalled
        if recalled:
            log.info(
                "%d records dead-lettered since the last checkpoint will not be again",
                len(recalled),
            )

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Hand over cleanly: whoever gets these partitions resumes from our checkpoint.
        self.checkpoint(force=True)
        self.producer.flush()
        consumer.unassign()

    # -- the loop ----------------------------------------------------------------------------

    def publish_missing(self, published: Mapping[str, ModelVersion] | None = None) -> None:
        """Publish what serving lacks: a first version of new models, and checkpoints a crash kept
        unpublished.

        A worker killed between saving a checkpoint and delivering its record leaves a version
        nobody has seen (a hole in the lineage); the next owner publishes it. A checkpoint older
        than what is on ``model-updates`` is never republished: that would step serving back.
        ``published``: each model's current version on ``model-updates``, if already read
        (:func:`~adaptloop.streams.versions.published_versions`).
        """
        if published is None:
            published = published_versions(self.connection, self.prefix)
        for name, learner in self.learners.items():
            if learner.progress.version is None:
                self._publish(self.store.checkpoint(learner))
                continue
            record, latest = learner.progress.record, published.get(name)
            # By version id: two workers starting together each publish the same first version.
            if record is not None and (
                latest is None or (latest.version != record.version and _later(record, latest))
            ):
                log.warning(
                    "publishing %s %s: saved before a crash but never published",
                    name,
                    record.version,
                )
                self._publish(record)
        self.producer.flush()

    def step(self, timeout: float = 0.5) -> int:
        """Process one batch; return the number of examples learned."""
        records = self.consumer.poll(self.batch_size, timeout)
        learned: Counter[str] = Counter()
        if time.monotonic() - self._lag_recorded_at > 10:
            record_lag("learn", self.consumer.kafka)
            self._lag_recorded_at = time.monotonic()
            self.dead_letters.log_summary()
        # Checkpoints' files are written behind the learning (the GIL is free while a file syncs);
        # their versions are published once their files exist, after the batch, in order.
        self._unpublished = []
        try:
            with self.store.writing_behind():
                specs_read = self._learn_records(records, learned)
                self.checkpoint()
        finally:
            unpublished, self._unpublished = self._unpublished, None
        for version in unpublished:
            self._publish(version)
        alerts = self._send_alerts() + self._report_health()
        # (a spec read is committed at once: the group's lag says when it has been applied)
        if unpublished or alerts or specs_read:
            # Nothing here waits for the broker (waiting for acks cost 3-8% of a learner's time):
            # versions and alerts are on their way (a delivery that failed raises at the next poll);
            # a restart resumes from the checkpoints' offsets and republishes versions missing from
            # model-updates, so the group's offsets only show the learner's lag. Handing partitions
            # over and stopping still flush.
            self.producer.poll()
            self.consumer.commit(wait=False)
        for topic, count in Counter(record.topic.name for record in records).items():
            EVENTS_IN.labels("learn", topic).inc(count)
        for name, count in learned.items():
            LEARNED.labels(name).inc(count)
        self._count_not_production()
        return sum(learned.values())

    def _learn_records(self, records: list[Record], learned: Counter[str]) -> bool:
        """Learn a polled batch, carrying out its commands and spec records in order, counting the
        examples learned per model in ``learned``; return whether it held a spec record."""
        specs_read = False
        for record in records:
            if record.topic is MODEL_COMMANDS or record.topic is MODEL_SPECS:
                specs_read = specs_read or record.topic is MODEL_SPECS
                try:
                    if record.topic is MODEL_COMMANDS:
                        self._command(record)
                    else:
                        self._spec(record)
                # a command that cannot be carried out: its dead letter says why
                except Exception as error:
                    log.exception("%s@%d raised", record.topic.name, record.offset)
                    self._reject(
                        record, f"carrying it out raised {type(error).__name__}: {error}", "error"
                    )
                continue
            learner, learned_one = self._learn(record)
            if learner is None:
                continue
            if learner.watch.actions:
                self._act(learner)
            if learned_one:
                learned[learner.spec.name] += 1
                # Count-based versions fall on exact example counts, whatever the batch boundaries,
                # so a replay of the same examples reproduces the same versions. (Costly checkpoints
                # skip some of those counts; the lineage records where each version fell.) The
                # remainder first: it rules out all but one example in checkpoint_every.
                spec = learner.spec
                if learner.progress.examples_seen % spec.checkpoint_every < (
                    spec.mini_batch or 1
                ) and self._count_due(learner, time.monotonic()):
                    self._checkpoint(learner)
        return specs_read

    def _owner(self, record: Record, model: str) -> tuple[str, OnlineLearner | None]:
        """(the record's position, the learner of ``model``); an unknown model is dead-lettered."""
        position = self._position_names.get((record.topic.name, record.partition))
        if position is None:
            position = self._position_names[(record.topic.name, record.partition)] = (
                f"{record.topic.full_name(self.prefix)}:{record.partition}"
            )
        self.positions[position] = record.offset + 1
        learner = self.learners.get(model)
        if learner is None:
            known = ", ".join(sorted(self.specs)) or "none"
            retired = model in self.retired and record.topic is not MODEL_SPECS
            self._reject(
                record,
                f"model {model!r} is retired"
                if retired
                else f"unknown model {model!r}; known models: {known}",
            )
            REJECTED.labels(UNREGISTERED, "retired" if retired else "unknown_model").inc()
        return position, learner

    def _reject(self, record: Record, reason: str, kind: DeadLetterKind = "rejected") -> None:
        self.dead_letters.reject(
            record.topic.full_name(self.prefix),
            record.partition,
            record.offset,
            record.key,
            record.value,
            kind,
            reason,
        )

    def _learn(self, record: Record) -> tuple[OnlineLearner | None, bool]:
        """Learn one record; (its learner, whether it learned), (None, False) if dead-lettered."""
        example: TrainingExample = record.event  # type: ignore[assignment]
        position, learner = self._owner(record, example.model)
        if learner is None:
            return None, False
        name, where = example.model, (position, record.offset)
        try:
            learned = learner.learn(example, where)
        except UnlearnableExample as error:
            self._reject(record, str(error))
            self.health[name].observe("rejected", str(error))
            REJECTED.labels(name, error.field).inc()
            return None, False
        except ModelFailure as failure:
            return self._recover(learner, Entry(example, where), failure, record), False
        # anything else: the learner may be half-updated, as after a model's failure
        except Exception as error:
            return self._recover(
                learner, Entry(example, where), ModelFailure(name, "learn", error), record
            ), False
        self.journals[name].append(Entry(example, where))
        # the join refused its prediction or an outcome: a dead letter there
        if example.status == "rejected":
            reason = example.reason or "rejected by the join"
            self.health[name].observe("rejected", f"decision {example.decision_id!r}: {reason}")
            REJECTED.labels(name, "features" if reason.startswith("feature") else "label").inc()
        elif learned or example.status in ("expired", "late"):
            if learned:
                self.health[name].learned()
            else:
                self.health[name].observe("unlearned")
        return learner, learned

    def _recover(
        self,
        learner: OnlineLearner,
        failing: Entry,
        failure: ModelFailure,
        record: Record | None = None,
        probe: dict[str, Any] | None = None,
    ) -> OnlineLearner:
        """Undo ``failure`` exactly: restore the learner from its last checkpoint, relearn its
        journal without the example to blame, dead-letter that one (kind ``error``). ``record``: the
        failing example's record (its bytes go into the dead letter); ``probe``: features the
        restored model must predict."""
        name, spec = learner.spec.name, learner.spec
        log.error("model %s: %s; restoring it from its last checkpoint", name, failure)
        recovery = recover(
            lambda: self.store.learner_from(self.store.last_checkpoint.get(name), spec),
            self.journals[name],
            failing,
            probe=probe,
        )
        restored = recovery.learner
        for entry, reason in recovery.blamed:
            assert entry.position is not None
            topic_name, offset = entry.position[0].rsplit(":", 1)[0], entry.position[1]
            partition = int(entry.position[0].rsplit(":", 1)[1])
            # It stays read: a restart must not learn it, nor dead-letter it again.
            restored.progress.offsets[entry.position[0]] = max(
                restored.progress.offsets.get(entry.position[0], 0), offset + 1
            )
            key, value = (
                (record.key, record.value)
                if entry is failing and record is not None
                else (entry.example.model.encode(), encode(as_event(entry.example)))
            )
            self.dead_letters.reject(topic_name, partition, offset, key, value, "error", reason)
            self.health[name].observe("error", reason)
            MODEL_ERRORS.labels(name, failure.stage).inc()
        # sent already: the replay made them again
        del restored.watch.alerts[: self._alerts_sent[name]]
        self._alerts_sent[name] = 0
        self.journals[name] = recovery.journal
        self.learners[name] = restored
        return restored

    def _act(self, learner: OnlineLearner) -> int:
        """Carry out what the model's drift policy asks, right after the example that triggered
        it."""
        published = 0
        while learner.watch.actions:
            action = learner.watch.actions.pop(0)
            if action.kind == "rollback":
                try:
                    assert action.to_version is not None  # a rollback names its version
                    learner.model = self.store.load_model(learner.spec.name, action.to_version)
                except UnknownModel as error:
                    log.error("drift policy cannot roll %s back: %s", learner.spec.name, error)
                    continue
            actor = action.actor or f"policy:{learner.spec.drift.policy}"
            # a spec's new model promoted: that spec is in effect from now on
            if action.spec is not None:
                learner = self.learners[learner.spec.name] = self._following(learner, action.spec)
                actor = "spec"
            version = self._checkpoint(learner, reason=action.kind, actor=actor, note=action.note)
            assert version is not None  # a swapped-in model is not probed
            log.warning(
                "drift policy: %s %s -> %s (%s)",
                learner.spec.name,
                action.kind,
                version.version,
                action.note,
            )
            published += 1
        return published

    def _send_alerts(self) -> int:
        sent = 0
        for name, learner in self.learners.items():
            for alert in learner.watch.alerts:
                self.producer.send(alert)
                DRIFT_ALERTS.labels(alert.model, alert.signal).inc()
                sent += 1
                self._alerts_sent[name] += 1
            learner.watch.alerts.clear()
        return sent

    def _report_health(self, force: bool = False) -> int:
        """Publish the health of the models that changed (or every minute), alert on those turned
        sick, and write it for the worker's ``/health``; return the records sent."""
        sent, now = 0, time.monotonic()
        reports: dict[str, ModelHealth] = {}
        for name, watch in self.health.items():
            if not watch.seen():
                continue  # not this learner's model (or nothing seen yet)
            before = watch.status
            report = reports[name] = watch.report()
            if (
                report.status == before
                and not force
                and now - self._health_published.get(name, 0) < HEALTH_EVERY_SECONDS
            ):
                continue
            self.producer.send(report)
            self._health_published[name] = now
            sent += 1
            if report.status == "sick" and before == "ok":
                for reason in report.reasons:
                    log.warning("model %s is sick: %s", name, watch.describe(reason))
                    self.producer.send(
                        DriftAlert(
                            model=name,
                            model_version=self.learners[name].progress.version,
                            kind="health",
                            detector="health",
                            signal=reason,
                            reason=watch.describe(reason),
                            at_example=self.learners[name].progress.examples_seen,
                            window=report.window,
                            statistic=float(
                                report.rejected if reason == "rejecting" else report.errors
                            ),
                        )
                    )
                    DRIFT_ALERTS.labels(name, reason).inc()
                    sent += 1
            elif report.status == "ok" and before == "sick":
                log.warning("model %s is well again", name)
        if reports:
            write_health(
                "learn",
                {
                    "models": {
                        name: {
                            "status": report.status,
                            "reasons": [
                                self.health[name].describe(reason) for reason in report.reasons
                            ],
                        }
                        for name, report in reports.items()
                    }
                },
            )
        return sent

    def _count_not_production(self) -> None:
        for name, learner in self.learners.items():
            counted = self._counted.setdefault(name, Counter())
            for kind, count in learner.counts.items():
                if count > counted[kind]:
                    NOT_PRODUCTION.labels(name, kind).inc(count - counted[kind])
                    counted[kind] = count

    def _command(self, record: Record) -> int:
        """Carry out an operator's command once; return the number of versions published."""
        command: ModelCommand = record.event  # type: ignore[assignment]
        position, learner = self._owner(record, command.model)
        if learner is None:
            return 0
        if record.offset < learner.progress.offsets.get(position, 0):
            return 0  # carried out before a restart: its version is already in the checkpoint
        learner.progress.offsets[position] = record.offset + 1
        try:
            learner.model = self.store.load_model(command.model, command.to_version)
        except UnknownModel as error:
            self._reject(record, f"cannot {command.action}: {error}")
            return 0
        reason: VersionReason = "rollback" if command.action == "rollback" else "promotion"
        # the operator's version serves every decision, as the stable one
        if learner.watch.canary is not None:
            learner.watch.canary.replace()
        version = self._checkpoint(
            learner,
            reason=reason,
            actor=command.actor,
            principal=command.principal,
            note=f"{command.reason} (command {command.command_id})".strip(),
        )
        assert version is not None  # a swapped-in model is not probed
        log.warning(
            "%s of %s to %s on %s's command", reason, command.model, version.version, command.actor
        )
        return 1

    # -- model specs ---------------------------------------------------------------------------

    def _restored(self, spec: LearnerSpec) -> OnlineLearner:
        """The model's learner from its checkpoint, under ``spec``; a checkpoint of another model (a
        spec's recipe changed) goes on as it was learned, with the new model as its challenger."""
        try:
            return self.store.restore(spec)
        except SpecChanged:
            learned = self.store.learned_spec(spec.name)
            assert learned is not None  # (a checkpoint without a spec raises no SpecChanged)
            learner = self.store.restore(as_learned(spec, learned))
            if learner.watch.challenge_with(spec):
                log.warning(
                    "model %s: its spec asks for another model; it starts as a challenger",
                    spec.name,
                )
            return learner

    def _watch(self, name: str) -> None:
        """Start keeping the bookkeeping of a model this learner now has."""
        self.journals.setdefault(name, [])
        self.health.setdefault(
            name, HealthWatch(name, self._health_window, self._max_rejected_share)
        )
        self._last_version_at.setdefault(name, time.monotonic())
        self._checkpoint_cost.setdefault(name, 0.0)

    def _spec(self, record: Record) -> int:
        """Apply an operator's spec record to the model it names (a bad one is dead-lettered and
        changes nothing); checkpoint the model right after it. Returns the versions published."""
        declared: ModelSpecRecord = record.event  # type: ignore[assignment]
        name = declared.model
        spec = None
        if declared.status == "active":
            try:
                spec = spec_of(declared)
            except ConfigError as error:
                self._reject(
                    record, f"the spec is refused, model {name!r} goes on as it was: {error}"
                )
                return 0
        learner = self.learners.get(name)
        change = change_of(learner.spec if learner is not None else None, declared, spec)
        problem = (
            refuse_recipe_change(learner.spec, spec)
            if change == "recipe" and learner and spec
            else None
        )
        if problem is not None:
            self._reject(
                record, f"the spec is refused, model {name!r} goes on as it was: {problem}"
            )
            return 0
        log.warning(
            "model %s: spec %s by %s (%s)",
            name,
            change,
            declared.actor,
            declared.reason or "no reason given",
        )
        if change == "unchanged":
            return 0
        if change == "retired":
            assert learner is not None
            version = self._checkpoint(learner) if learner.progress.learned_since_version else None
            del self.learners[name]
            self.specs.pop(name, None)
            self.health.pop(name, None)
            self.retired.add(name)
            return version is not None
        assert spec is not None
        self.specs[name] = spec
        self.retired.discard(name)
        if change == "added":
            self._watch(name)
            learner = self.learners[name] = self._restored(spec)
            self.journals[name] = []
            return self._checkpoint(learner) is not None
        assert learner is not None
        if change == "recipe":
            learner.watch.challenge_with(spec)
            spec = as_learned(spec, learner.spec)
        learner = self.learners[name] = self._following(learner, spec)
        return self._checkpoint(learner) is not None

    def _following(self, learner: OnlineLearner, spec: LearnerSpec) -> OnlineLearner:
        """``learner`` going on under ``spec`` (the same model): as a restarted worker's would."""
        return OnlineLearner(
            spec,
            learner.model,
            shadow=learner.shadow,
            production=learner.production,
            progress=learner.progress,
            watch=learner.watch,
        )

    def checkpoint(self, force: bool = False) -> list[ModelVersion]:
        """Checkpoint and publish the models whose time is due (or all with pending learning if
        ``force``)."""
        now = time.monotonic()
        versions = []
        for name, learner in self.learners.items():
            seconds = learner.spec.checkpoint_seconds
            pending = learner.progress.learned_since_version
            due = (
                seconds is not None and now - self._last_version_at[name] >= seconds
            ) or self._count_due(learner, now)  # (a count-based one that waited for its cost)
            if pending and (due or force) and (version := self._checkpoint(learner)) is not None:
                versions.append(version)
        return versions

    def _count_due(self, learner: OnlineLearner, now: float) -> bool:
        """Whether ``learner`` learned since its last version and :func:`count_version_due` says a
        version is due, at monotonic time ``now``."""
        name, progress, spec = learner.spec.name, learner.progress, learner.spec
        record = progress.record
        return progress.learned_since_version > 0 and count_version_due(
            progress.examples_seen,
            spec.checkpoint_every,
            now - self._last_version_at[name],
            self._checkpoint_cost[name],
            record.size_bytes if record is not None else 0,
            spec.mini_batch or 1,
        )

    def _checkpoint(
        self,
        learner: OnlineLearner,
        reason: VersionReason = "checkpoint",
        actor: str | None = None,
        note: str | None = None,
        principal: str | None = None,
    ) -> ModelVersion | None:
        """Checkpoint and publish the learner's model, once it can predict the last example it
        learned; a model that cannot is restored without the example to blame, and checkpointed at
        the next occasion."""
        name = learner.spec.name
        journal = self.journals[name]
        # A model swapped in (rollback, promotion) served before; one that learned must predict its
        # last example.
        last = (
            None
            if reason != "checkpoint"
            else next(
                (entry for entry in reversed(journal) if entry.example.status in LEARNABLE), None
            )
        )
        # The learner has seen every record of the partitions read so far, not only its own.
        for position, offset in self.positions.items():
            learner.progress.offsets[position] = max(
                learner.progress.offsets.get(position, 0), offset
            )
        started = time.monotonic()
        try:
            version = self.store.checkpoint(
                learner,
                reason=reason,
                actor=actor,
                principal=principal,
                note=note,
                probe=last.example.features if last is not None else None,
            )
        except ModelFailure as failure:
            assert last is not None
            # learned, but the model cannot predict it after: relearned or blamed
            journal.remove(last)
            self._recover(learner, last, failure, probe=last.example.features)
            return None
        self._last_version_at[name] = now = time.monotonic()
        self._checkpoint_cost[name] = now - started
        self.journals[name] = []
        # alerts not sent yet are in the checkpoint; those sent from now on count
        self._alerts_sent[name] = 0
        return self._publish(version)

    def _publish(self, version: ModelVersion) -> ModelVersion:
        """Send ``version`` to ``model-updates`` (within :meth:`step`, once the batch's checkpoint
        files are written)."""
        if self._unpublished is not None:
            self._unpublished.append(version)
            return version
        self.producer.send(version)
        VERSIONS.labels(version.model, version.reason).inc()
        for name, value in version.metrics.items():
            # A metric over no decisions has no number; the gauge says NaN (Prometheus' "no value")
            # meanwhile.
            MODEL_METRIC.labels(version.model, name).set(float("nan") if value is None else value)
        log.debug(
            "published %s %s (%d examples)", version.model, version.version, version.examples_seen
        )
        return version

    def run(self, stop: threading.Event | None = None) -> None:
        """Learn until ``stop`` is set; checkpoint what is pending on the way out."""
        stop = stop or threading.Event()
        self.publish_missing()
        try:
            while not stop.is_set():
                self.step()
        finally:
            if self.checkpoint(force=True):
                self.consumer.commit()
            self.producer.flush()
            self.consumer.close()


def _later(record: ModelVersion, published: ModelVersion) -> bool:
    """Whether a checkpoint's ``record`` came after the ``published`` one: by sequence number, or
    (both from before numbers) by examples learned."""
    if record.sequence is None and published.sequence is None:
        return published.examples_seen <= record.examples_seen
    return (record.sequence or 0) > (published.sequence or 0)
