"""Helpers for the loop's integration tests: a worker subprocess, an `adaptloop serve` subprocess and
readers of their outputs."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

import duckdb
import httpx
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from adaptloop.learners.online import OnlineLearner
from adaptloop.learners.spec import LearnerSpec
from adaptloop.schemas import (
    Event,
    ModelVersion,
    OutcomeEvent,
    PredictionEvent,
    TrainingExample,
)
from adaptloop.schemas.codec import decode
from adaptloop.schemas.errors import DecodeError
from adaptloop.schemas.topics import MODEL_UPDATES, Topic, topic_named
from adaptloop.settings import Settings
from adaptloop.snapshots.archive import ParquetArchive
from adaptloop.streams import DeadLetters, EventConsumer, EventProducer, ensure_topics
from adaptloop.streams.reader import watermarks
from adaptloop.streams.status import group_lag
from adaptloop.testing import free_port
from adaptloop.worker import settings_env, start_worker_process, stop_worker_process

T = TypeVar("T")


def loop_settings(
    bootstrap: str, home: Path, specs: list[LearnerSpec], partitions: int
) -> Settings:
    prefix = f"loop{uuid.uuid4().hex[:8]}."
    ensure_topics(bootstrap, prefix=prefix, partitions=partitions)
    return Settings(
        bootstrap=bootstrap,
        topic_prefix=prefix,
        partitions=partitions,
        home=home,
        models=specs,
        group=f"g{uuid.uuid4().hex[:6]}",
        log_level=os.environ.get("ADAPTLOOP_TEST_WORKER_LOG", "warning"),
        metrics_port=None,
        snapshot_seconds=None,
    )


def no_role_stopped(log_file: Path) -> bool:
    """Whether no role of the worker stopped and was started again (the worker logs each time one
    does)."""
    return " stopped (exit " not in log_file.read_text(errors="replace")


class Worker:
    def __init__(self, settings: Settings, log_file: Path) -> None:
        self.log_file = log_file
        self.process = start_worker_process(settings, log_file)

    def check_alive(self) -> None:
        assert self.process.poll() is None, f"worker died:\n{self.log_file.read_text()[-4000:]}"


@contextmanager
def running_worker(settings: Settings, log_file: Path) -> Iterator[Worker]:
    worker = Worker(settings, log_file)
    try:
        yield worker
        worker.check_alive()
    finally:
        stop_worker_process(worker.process)


class Server:
    """`adaptloop serve` of the loop ``settings`` describe (and of nothing else this process's
    environment may set), run as an operator runs it (the command, in a process of its own, on a free
    port), and an HTTP client of it."""

    def __init__(self, settings: Settings, log_file: Path, *args: str) -> None:
        self.log_file, port = log_file, free_port()
        own = {
            name: value for name, value in os.environ.items() if not name.startswith("ADAPTLOOP_")
        }
        with open(log_file, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "adaptloop", "serve", "--port", str(port), *args],
                env={**own, **settings_env(settings)},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.base = f"http://127.0.0.1:{port}"
        self.http = httpx.Client(base_url=self.base, timeout=10)

    def request(self, method: str, path: str, **options: object) -> httpx.Response | None:
        """The server's answer, or None while it does not listen yet (a server that died fails the
        test at once, with its log)."""
        try:
            return self.http.request(method, path, **options)  # type: ignore[arg-type]
        except httpx.TransportError:
            assert self.process.poll() is None, self.log_file.read_text()
            return None

    def healthy(self) -> bool:
        """Whether ``/health`` answers 200: every model serves a version, or is retired."""
        answer = self.request("GET", "/health")
        return answer is not None and answer.status_code == 200

    def close(self) -> None:
        self.http.close()
        self.process.terminate()
        self.process.wait(30)


@contextmanager
def running_server(settings: Settings, log_file: Path, *args: str) -> Iterator[Server]:
    """A :class:`Server` (``args``: more of the command's options), stopped on the way out."""
    server = Server(settings, log_file, *args)
    try:
        yield server
    finally:
        server.close()


def wait_for(check: Callable[[], T], timeout: float = 300.0, worker: Worker | None = None) -> T:
    """``check()``'s first truthy answer, or its last answer once ``timeout`` has passed (for the
    caller to assert on): a test waits for what it asserts, with a deadline for a loaded machine.
    With ``worker``, a worker that died fails the wait at once."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        if worker is not None:
            worker.check_alive()
        time.sleep(0.3)


def read_until(
    settings: Settings,
    topics: list[Topic],
    done: Callable[[list[Event]], bool],
    timeout: float = 120.0,
    worker: Worker | None = None,
) -> list[Event]:
    """Read ``topics`` from the start until ``done(events)`` or the timeout."""
    dead = DeadLetters(
        EventProducer(settings.bootstrap_address, topic_prefix=settings.topic_prefix), "test-reader"
    )
    events: list[Event] = []
    with EventConsumer(
        settings.bootstrap_address,
        f"reader-{uuid.uuid4().hex}",
        topics,
        dead_letters=dead,
        prefix=settings.topic_prefix,
    ) as consumer:
        deadline = time.monotonic() + timeout
        while not done(events) and time.monotonic() < deadline:
            events.extend(record.event for record in consumer.poll(5000, 0.5))
            if worker is not None:
                worker.check_alive()
    return events


def wait_until_read(
    settings: Settings, group: str, topics: list[Topic], worker: Worker, timeout: float = 180
) -> None:
    """Wait until the worker's consumer ``group`` (``join``, ``learner``, ...) has committed every
    record written so far to ``topics``: it has read them, whatever order its consumer fetched its
    topics in."""
    names = [topic.full_name(settings.topic_prefix) for topic in topics]
    deadline = time.monotonic() + timeout
    # (the roles prefix their groups as their topics)
    group = f"{settings.topic_prefix}{settings.group}-{group}"
    while (lag := group_lag(settings.bootstrap_address, group, names)) != 0:
        assert time.monotonic() < deadline, (
            f"{group} still behind on {names} after {timeout:.0f}s: {lag}"
        )
        worker.check_alive()
        time.sleep(0.5)


class TopicReader:
    """The committed events of one topic from its start, read as the topic grows by one consumer: a
    check that read the topic again from its start each time would cost more the longer it waits,
    and on a loaded machine one read could outlast the wait. Tombstones and undecodable records are
    skipped, as ``read_all`` does."""

    def __init__(self, settings: Settings, topic: Topic) -> None:
        self.topic, self.name = topic, topic.full_name(settings.topic_prefix)
        self.events: list[Event] = []
        self._consumer = Consumer(
            {
                "bootstrap.servers": settings.bootstrap_address,
                "group.id": f"reader-{uuid.uuid4().hex}",
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
            }
        )
        self._partitions = list(
            self._consumer.list_topics(self.name, timeout=30).topics[self.name].partitions
        )
        self._consumer.assign(
            [TopicPartition(self.name, p, OFFSET_BEGINNING) for p in self._partitions]
        )

    def read(self, timeout: float = 60.0) -> list[Event]:
        """Every event so far: those read before, and those since up to the topic's end as of now
        (or what ``timeout`` allowed: an open transaction holds a committed reader back until it
        ends)."""
        ends = {
            p: high
            for p, (_, high) in watermarks(
                self._consumer, self.name, self._partitions, timeout
            ).items()
        }
        deadline = time.monotonic() + timeout
        while True:
            for message in self._consumer.consume(1000, 0.2):
                if message.error() is None and message.value() is not None:
                    with contextlib.suppress(DecodeError):
                        self.events.append(decode(self.topic, message.value()))
            # Transaction markers take the last offsets: a partition is read when its position
            # passes the end.
            positions = self._consumer.position([TopicPartition(self.name, p) for p in ends])
            if all(ends[tp.partition] == 0 or tp.offset >= ends[tp.partition] for tp in positions):
                return self.events
            if time.monotonic() > deadline:
                return self.events

    def close(self) -> None:
        self._consumer.close()

    def __enter__(self) -> TopicReader:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def committed_offsets(bootstrap: str, topic: str, timeout: float = 60.0) -> list[tuple[int, int]]:
    """Every (partition, offset) of a committed record of ``topic``, read straight from Kafka."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"offsets-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        }
    )
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        ends = {p: high for p, (_, high) in watermarks(consumer, topic, partitions, 10).items()}
        consumer.assign(
            [TopicPartition(topic, p, OFFSET_BEGINNING) for p, end in ends.items() if end > 0]
        )
        found: list[tuple[int, int]] = []
        deadline = time.monotonic() + timeout
        todo = {p for p, end in ends.items() if end > 0}
        while todo and time.monotonic() < deadline:
            for message in consumer.consume(10_000, 0.5):
                if message.error() is None:
                    found.append((message.partition(), message.offset()))
            # Transaction markers take the last offsets: a partition is done when its position
            # passes the end.
            for tp in consumer.position([TopicPartition(topic, p) for p in list(todo)]):
                if tp.offset >= ends[tp.partition]:
                    todo.discard(tp.partition)
        assert not todo, f"could not read {topic} to its end"
        return sorted(found)
    finally:
        consumer.close()


def wait_for_archive(
    settings: Settings, rows: dict[str, int], timeout: float = 120.0
) -> dict[str, list[tuple[int, int]]]:
    """Wait until the archive holds ``rows`` rows per topic; return each topic's archived
    (partition, offset)s."""
    deadline = time.monotonic() + timeout
    while True:
        archived = {}
        for name in rows:
            topic_name = topic_named(name).full_name(settings.topic_prefix)
            with duckdb.connect() as db:
                source = ParquetArchive(settings.archive_location).rows_sql(db, topic_name)
                found = (
                    db.execute(f"SELECT _partition, _offset FROM {source} ORDER BY ALL")
                    if source
                    else None
                )
                archived[name] = found.fetchall() if found else []
        if (
            all(len(archived[name]) >= count for name, count in rows.items())
            or time.monotonic() > deadline
        ):
            return archived
        time.sleep(0.5)


def send_decisions(producer: EventProducer, rows, first: int = 0, model: str = "phishing") -> None:
    """A prediction and its outcome for each (x, y), decision ids ``d<first>``..., timestamps 1 ms
    apart."""
    start = datetime.now(UTC)
    for n, (x, y) in enumerate(rows, first):
        at = start + timedelta(milliseconds=n)
        producer.send(
            PredictionEvent(
                decision_id=f"d{n}", model=model, model_version="v0", features=x, timestamp=at
            )
        )
        producer.send(OutcomeEvent(decision_id=f"d{n}", label=y, source="test", timestamp=at))


def learn_rows(learner: OnlineLearner, rows, first: int = 0) -> None:
    """``learner`` learns each (x, y) of ``rows`` as decision ``first``, ``first + 1``... of its
    model (read at offset ``("t:0", decision)``), as a worker's learner would, with no broker."""
    for i, (x, y) in enumerate(rows, first):
        example = TrainingExample(
            model=learner.spec.name,
            decision_id=str(i),
            model_version="v",
            features=x,
            label=y,
            predicted_at=datetime.now(UTC),
        )
        learner.learn(example, ("t:0", i))


def learn_all(
    settings: Settings, worker: Worker, rows, model: str = "phishing"
) -> list[ModelVersion]:
    """Send a decision for each of ``rows`` and wait until a version of ``model`` has learned them
    all; return the versions published so far, in order."""
    with EventProducer(settings.bootstrap_address, topic_prefix=settings.topic_prefix) as producer:
        send_decisions(producer, rows, model=model)
    seen = read_until(
        settings,
        [MODEL_UPDATES],
        lambda events: any(
            isinstance(e, ModelVersion) and e.examples_seen == len(rows) for e in events
        ),
        worker=worker,
    )
    return [e for e in seen if isinstance(e, ModelVersion) and e.model == model]
