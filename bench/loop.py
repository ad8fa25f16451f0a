"""The whole loop in worker processes: throughput, latencies at half load, and scaling out the
learners."""

from __future__ import annotations

import statistics
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from confluent_kafka.admin import AdminClient

from adaptloop.learners.spec import LearnerSpec
from adaptloop.learners.store import ModelStore
from adaptloop.schemas import ModelVersion, OutcomeEvent, PredictionEvent, encode
from adaptloop.schemas.topics import MODEL_UPDATES, TRAINING_EXAMPLES
from adaptloop.settings import Settings
from adaptloop.streams import (
    DeadLetters,
    EventConsumer,
    EventProducer,
    delete_topics,
    ensure_topics,
)
from adaptloop.streams.model_client import ModelClient
from adaptloop.worker import Role, start_worker_process, stop_worker_process
from bench.cpu import cpu_of, loop_processes
from bench.learning import WATCH_AND_ALERT, Data, examples


def _settings(base: Settings, specs: list[LearnerSpec], partitions: int | None = None) -> Settings:
    run = uuid.uuid4().hex[:6]
    settings = base.model_copy(
        update={
            "bootstrap": base.bootstrap_address,
            "topic_prefix": f"bench{run}.",
            "home": Path(tempfile.mkdtemp()),
            "models": specs,
            "group": f"bench{run}",
            "metrics_port": None,
            "snapshot_seconds": None,
            # The archive writes within the run (the default minute would leave its work to the
            # final flush, after the CPU is counted).
            "archive_flush_seconds": 5.0,
            "partitions": partitions or base.partitions,
        }
    )
    ensure_topics(
        settings.bootstrap_address, prefix=settings.topic_prefix, partitions=settings.partitions
    )
    return settings


@dataclass
class LoopRun:
    # examples learned per second, from the first event produced to the version that has them all
    rate: float
    # version published -> swapped in by a ModelClient
    refresh_lags: list[float] = field(default_factory=list)
    # k-th outcome sent -> first version with k examples
    learn_lags: list[float] = field(default_factory=list)
    # CPU microseconds per decision, per process
    cpu_us: dict[str, float] = field(default_factory=dict)

    @property
    def cores_busy(self) -> float:
        """CPU time of the run's processes over its wall time: 2.0 is both cores of this machine."""
        return sum(self.cpu_us.values()) * self.rate / 1e6


def loop_run(
    base: Settings,
    recipe: str,
    data: Data,
    per_second: float | None = None,
    roles: tuple[Role, ...] = ("all",),
) -> LoopRun:
    """Predictions and outcomes into a worker (every role, or separate ``roles`` processes), as fast
    as possible or paced at ``per_second``."""
    # Full speed: versions at exact counts, the last one at len(data) the moment it is learned.
    # Paced: a version every 0.5 s, the cadence a service waiting for fresh models would choose.
    spec = LearnerSpec(
        name="b",
        recipe=recipe,
        min_examples=0,
        metrics=["Accuracy"],
        drift=WATCH_AND_ALERT,
        checkpoint_every=len(data) // 10 if per_second is None else len(data),
        checkpoint_seconds=None if per_second is None else 0.5,
    )
    settings = _settings(base, [spec])
    workers = [
        start_worker_process(settings, settings.home / f"worker-{role}.log", role=role)
        for role in roles
    ]
    refresh: list[float] = []
    versions: list[tuple[float, int]] = []  # (when swapped in, examples seen)

    def swapped(version: ModelVersion, lag: float | None) -> None:
        versions.append((time.time(), version.examples_seen))
        if lag is not None:
            refresh.append(lag)

    try:
        with ModelClient(
            "b",
            bootstrap=settings.bootstrap_address,
            store=ModelStore(settings.models_dir),
            prefix=settings.topic_prefix,
            wait=120,
            on_swap=swapped,
        ) as client:
            _wait_for_group(
                settings.bootstrap_address, f"{settings.topic_prefix}{settings.group}-join"
            )
            _wait_for_group(
                settings.bootstrap_address, f"{settings.topic_prefix}{settings.group}-learner"
            )
            processes = loop_processes([worker.pid for worker in workers])
            cpu_before = cpu_of(processes)
            sent_at: list[float] = []
            start = time.perf_counter()
            with EventProducer(
                settings.bootstrap_address, topic_prefix=settings.topic_prefix
            ) as producer:
                now = datetime.now(UTC)
                for i, (x, y) in enumerate(data):
                    if per_second is not None:
                        while time.perf_counter() - start < i / per_second:
                            time.sleep(0.0005)
                    at = now + timedelta(microseconds=i)
                    producer.send(
                        PredictionEvent(
                            decision_id=f"d{i}",
                            model="b",
                            model_version="v",
                            features=x,
                            timestamp=at,
                        )
                    )
                    producer.send(
                        OutcomeEvent(decision_id=f"d{i}", label=y, source="bench", timestamp=at)
                    )
                    sent_at.append(time.time())
                    if per_second is not None and i % 50 == 0:
                        producer.flush()  # paced: no batching delay on top of the loop's own
            deadline = time.monotonic() + 600
            while client.version.examples_seen < len(data) and time.monotonic() < deadline:
                time.sleep(0.01)
            rate = len(data) / (time.perf_counter() - start)
            cpu_after = cpu_of(processes)
    finally:
        for worker in workers:
            stop_worker_process(worker)
        # later runs must not pay for them
        delete_topics(settings.bootstrap_address, settings.topic_prefix)
    cpu_us = {
        name: (cpu_after[name] - cpu_before[name]) * 1e6 / len(data)
        for name in cpu_after
        if name in cpu_before
    }
    # A version with k examples learned the first k decisions (sent in order, joined at once): its
    # latency is from the k-th outcome's send to the version reaching the service.
    learn_lags = [when - sent_at[k - 1] for when, k in versions if 0 < k <= len(sent_at)]
    return LoopRun(rate, refresh, learn_lags, cpu_us)


def learner_scaleout(base: Settings, recipe: str, data: Data, workers: int) -> float:
    """Examples/s of two models (one partition each) learned by ``workers`` learner processes.

    The learners' group settles before the examples are produced (a rebalance would move
    version boundaries), and each model's rate is taken between its version at a quarter of its
    examples and its last, from the versions' own timestamps: steady learning, not start-up,
    and mostly after the producer (another machine in production) is done. The models learn at
    the same time, so their rates add up.
    """
    models = ("m0", "m1")
    specs = [
        LearnerSpec(
            name=m,
            recipe=recipe,
            metrics=["Accuracy"],
            drift=WATCH_AND_ALERT,
            checkpoint_every=len(data) // 4,
            checkpoint_seconds=None,
        )
        for m in models
    ]
    settings = _settings(base, specs, partitions=2)
    role: Role = "learn"
    processes = [
        start_worker_process(settings, settings.home / f"worker-{n}.log", role=role)
        for n in range(workers)
    ]
    try:
        _wait_for_group(
            settings.bootstrap_address, f"{settings.topic_prefix}{settings.group}-learner", workers
        )
        payloads = {m: [encode(e) for e in examples(data, m)] for m in models}
        with EventProducer(
            settings.bootstrap_address, topic_prefix=settings.topic_prefix
        ) as producer:
            for i in range(len(data)):
                for partition, model in enumerate(models):
                    producer.send_bytes(
                        TRAINING_EXAMPLES.full_name(settings.topic_prefix),
                        model.encode(),
                        payloads[model][i],
                        partition=partition,
                    )
        versions = _wait_for_versions(settings, {m: len(data) for m in models})
    finally:
        for process in processes:
            stop_worker_process(process)
        delete_topics(settings.bootstrap_address, settings.topic_prefix)
    rate = 0.0
    for model in models:
        quarter = next(v for v in versions[model] if v.examples_seen >= len(data) // 4)
        last = versions[model][-1]
        rate += (last.examples_seen - quarter.examples_seen) / (
            last.timestamp - quarter.timestamp
        ).total_seconds()
    return rate


def _wait_for_group(bootstrap: str, group: str, members: int = 1, timeout: float = 120.0) -> None:
    """Until ``group`` is stable with ``members`` members that all have partitions."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            description = admin.describe_consumer_groups([group])[group].result(10)
            owned = [
                m for m in description.members if m.assignment and m.assignment.topic_partitions
            ]
            if str(description.state).endswith("STABLE") and len(owned) == members:
                time.sleep(1)  # assigned: let the members restore and start fetching
                return
        except Exception:
            pass
        time.sleep(0.5)
    raise TimeoutError(
        f"consumer group {group} did not settle with {members} member(s) in {timeout:.0f}s"
    )


def _wait_for_versions(
    settings: Settings, wanted: dict[str, int], timeout: float = 600.0
) -> dict[str, list[ModelVersion]]:
    """Every version of the ``wanted`` models, in order, until each has learned its number of
    examples."""
    dead = DeadLetters(
        EventProducer(settings.bootstrap_address, topic_prefix=settings.topic_prefix), "bench"
    )
    done: set[str] = set()
    versions: dict[str, list[ModelVersion]] = {model: [] for model in wanted}
    with EventConsumer(
        settings.bootstrap_address,
        f"bench-{uuid.uuid4().hex}",
        [MODEL_UPDATES],
        dead_letters=dead,
        prefix=settings.topic_prefix,
    ) as consumer:
        deadline = time.monotonic() + timeout
        while done != set(wanted) and time.monotonic() < deadline:
            for record in consumer.poll(1000, 0.05):
                version = record.event
                if isinstance(version, ModelVersion) and version.model in wanted:
                    versions[version.model].append(version)
                    if version.examples_seen >= wanted[version.model]:
                        done.add(version.model)
    if done != set(wanted):
        raise TimeoutError(f"models {sorted(set(wanted) - done)} did not reach {wanted}")
    return versions


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * (len(ordered) - 1) + 0.5))]


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None
