"""A broker restarted mid-run, and a broker down for three minutes: the worker waits each out, says
so on /health while the long one lasts, resumes by itself, and every decision is learned once
(idempotent producers, acks=all, exactly-once roles).

The restart is the common case (a rolling upgrade), and the one the roles do not stop for: their
clients wait it out. A three-minute outage stops them; a new process waits for the broker.

Each happens to a broker and a worker of their own (the session's broker serves the other tests),
and the restart happens while the outage lasts: its worker runs in the time the other only waits,
and neither broker's downtime depends on how long the other's worker takes.
"""

from __future__ import annotations

import os
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import orjson
import pytest
from river import datasets

from adaptloop.learners.spec import LearnerSpec
from adaptloop.localkafka import LocalKafka
from adaptloop.schemas import ModelVersion
from adaptloop.schemas.topics import MODEL_UPDATES
from adaptloop.settings import Settings
from adaptloop.streams import EventProducer
from adaptloop.testing import free_port, free_ports

from .loop_helpers import Worker, loop_settings, read_until, running_worker, send_decisions

pytestmark = pytest.mark.kafka

OUTAGE_SECONDS = float(os.environ.get("ADAPTLOOP_TEST_OUTAGE_SECONDS", "180"))
RESTART_SECONDS = 20.0
"""A broker restart (a rolling upgrade): about as long as the roles' clients wait before a role stops
(a 10 s session timeout, then a commit that finds no coordinator), so most ride it out in-process.
After one, the join's transactional producer could wait for ever for a group coordinator librdkafka
had lost track of (confluentinc/librdkafka#5456): one of three 30 s outages on a loaded machine
learned nothing more."""

SPEC = LearnerSpec(
    name="phishing",
    recipe="logistic",
    metrics=["Accuracy"],
    checkpoint_every=250,
    checkpoint_seconds=1,
)


def _health(port: int) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as response:
            return response.status, orjson.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, orjson.loads(error.read())


def _learned(seen: list) -> int:
    return max((v.examples_seen for v in seen if isinstance(v, ModelVersion)), default=0)


@contextmanager
def _own_broker(folder: Path) -> Iterator[LocalKafka]:
    """A local broker of the test's own on free ports, running; stopped at the end."""
    base = Settings()
    port, controller = free_ports(2)
    kafka = LocalKafka(
        folder,
        base.cache_dir,
        port=port,
        controller_port=controller,
        heap=base.kafka_heap,
        start_timeout=base.kafka_start_timeout,
    )
    kafka.up()
    try:
        yield kafka
    finally:
        kafka.down()


def _wait_learned(settings: Settings, count: int, worker: Worker, timeout: float) -> list:
    """The model's versions once one has learned ``count`` examples (or the timeout has passed)."""
    return read_until(
        settings,
        [MODEL_UPDATES],
        lambda seen: _learned(seen) >= count,
        timeout=timeout,
        worker=worker,
    )


def _ride_out_a_restart(folder: Path, rows: list) -> None:
    """A worker mid-run whose broker restarts while the service keeps producing: the roles' clients
    wait it out, and every decision is learned once."""
    with _own_broker(folder / "kafka") as kafka:
        settings = loop_settings(kafka.bootstrap, folder / "home", [SPEC], partitions=2)
        with running_worker(settings, folder / "worker.log") as worker:
            producer = EventProducer(kafka.bootstrap, topic_prefix=settings.topic_prefix)
            send_decisions(producer, rows[:600], 0)
            producer.flush()
            _wait_learned(settings, 500, worker, timeout=120)
            back_at = time.monotonic() + RESTART_SECONDS
            kafka.down()
            send_decisions(producer, rows[600:], 600)
            while time.monotonic() < back_at:
                worker.check_alive()
                time.sleep(max(0.0, min(1.0, back_at - time.monotonic())))
            kafka.up()
            producer.flush(120)
            seen = _wait_learned(settings, len(rows), worker, timeout=300)
            assert _learned(seen) == len(rows)  # each decision learned once, none lost
        assert "giving up" not in (folder / "worker.log").read_text(errors="replace")


def test_the_worker_waits_out_a_restart_and_a_three_minute_outage_and_loses_nothing(
    kafka_bootstrap, tmp_path
):
    # kafka_bootstrap only proves the jars exist
    rows = list(datasets.Phishing())
    with _own_broker(tmp_path / "kafka") as kafka:
        health_port = free_port()
        settings = loop_settings(
            kafka.bootstrap, tmp_path / "home", [SPEC], partitions=2
        ).model_copy(update={"metrics_port": health_port})
        with running_worker(settings, tmp_path / "worker.log") as worker:
            producer = EventProducer(kafka.bootstrap, topic_prefix=settings.topic_prefix)
            send_decisions(producer, rows[:600], 0)
            producer.flush()
            _wait_learned(settings, 500, worker, timeout=120)
            down_at = time.monotonic()
            kafka.down()  # the broker goes away mid-run...
            # ...while the service keeps producing (buffered, retried)
            send_decisions(producer, rows[600:], 600)
            with ThreadPoolExecutor(1) as restart_side:
                # meanwhile, another broker restarts under another worker
                restart = restart_side.submit(_ride_out_a_restart, tmp_path / "restart", rows[:900])
                reported, back_at = None, down_at + OUTAGE_SECONDS
                while time.monotonic() < back_at:
                    worker.check_alive()  # the worker waits; it never gives up
                    status, body = _health(health_port)
                    if status == 503 and any(
                        "broker unreachable since" in p for p in body["problems"]
                    ):
                        reported = reported or body
                    # every 5 s, and the broker back on time (not up to 5 s late)
                    time.sleep(max(0.0, min(5.0, back_at - time.monotonic())))
                assert reported is not None, "/health never said the broker was unreachable"
                kafka.up()  # ...and comes back with its data, three minutes later
                producer.flush(120)  # every event is acknowledged: none was lost
                seen = _wait_learned(settings, len(rows), worker, timeout=300)
                deadline = time.monotonic() + 120
                while _health(health_port)[0] != 200 and time.monotonic() < deadline:
                    time.sleep(1)
                assert _health(health_port)[0] == 200  # well again, with no manual step
                restart.result()  # the restart was ridden out, every decision learned once
        assert _learned(seen) == len(rows)  # each decision learned once, none lost
        log = (tmp_path / "worker.log").read_text(errors="replace")
        assert "giving up" not in log
