"""Helpers for the loop's integration tests: a worker subprocess and readers of its outputs."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from adaptloop.settings import Settings
from adaptloop.worker import start_worker_process, stop_worker_process
from learners.spec import LearnerSpec
from schemas import Event
from schemas.topics import Topic
from streams import DeadLetters, EventConsumer, EventProducer, ensure_topics


def loop_settings(bootstrap: str, home: Path, specs: list[LearnerSpec], partitions: int) -> Settings:
    prefix = f"loop{uuid.uuid4().hex[:8]}."
    ensure_topics(bootstrap, prefix=prefix, partitions=partitions)
    return Settings(bootstrap=bootstrap, topic_prefix=prefix, partitions=partitions, home=home, models=specs,
                    group=f"g{uuid.uuid4().hex[:6]}", log_level=os.environ.get("ADAPTLOOP_TEST_WORKER_LOG", "warning"))


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


def read_until(settings: Settings, topics: list[Topic], done: Callable[[list[Event]], bool],
               timeout: float = 120.0, worker: Worker | None = None) -> list[Event]:
    """Read ``topics`` from the start until ``done(events)`` or the timeout."""
    dead = DeadLetters(EventProducer(settings.bootstrap_address, topic_prefix=settings.topic_prefix), "test-reader")
    events: list[Event] = []
    with EventConsumer(settings.bootstrap_address, f"reader-{uuid.uuid4().hex}", topics, dead_letters=dead,
                       prefix=settings.topic_prefix) as consumer:
        deadline = time.monotonic() + timeout
        while not done(events) and time.monotonic() < deadline:
            events.extend(record.event for record in consumer.poll(5000, 0.5))
            if worker is not None:
                worker.check_alive()
    return events
