"""adaptloop against the stream processors users would pick instead: Bytewax and Quix Streams, with
River.

Every system gets the same backlog, produced before it starts (predictions and outcomes of the same
decisions, the JSON adaptloop's SDK writes, on the same number of partitions), and the same River
recipe. A loop's rate is the backlog over the time from its start, to the moment it had learned
the last decision: adaptloop's start is the join's partitions' assignment (from its log), a peer's
the first record it read (a fetch later than its assignment: if anything, the peer is flattered).
Beside it, the steady rate: from a tenth of the decisions learned to all of them (each peer stamps
those moments itself; adaptloop's are its versions' timestamps, published at exact tenths). Every
run must learn every decision: a run that learned fewer is an error, not a rate.

- the loop (join + learn): adaptloop's join and learner processes, the Bytewax dataflow
  (:mod:`bench.bytewax_peer`) and the Quix Streams app (:mod:`bench.quix_peer`);
- the learner alone, from a topic of training examples: adaptloop's learner agent
  (``bench.learning.agent_rate``) and the Quix Streams learner app.

Quix Streams pins confluent-kafka < 2.13 and pydantic < 2.14, older than adaptloop's: its peer runs
in a venv of its own, ``bench/.peers/quix``, which :func:`quix_python` makes on first use.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from importlib import metadata
from pathlib import Path

from adaptloop.learners.spec import LearnerSpec
from adaptloop.schemas import OutcomeEvent, PredictionEvent
from adaptloop.schemas.topics import OUTCOMES, PREDICTIONS, TRAINING_EXAMPLES
from adaptloop.settings import Settings
from adaptloop.streams import EventProducer, delete_topics, ensure_topics
from adaptloop.streams.connection import ConnectionLike, KafkaConnection
from adaptloop.worker import start_worker_process, stop_worker_process
from bench.learning import WATCH_AND_ALERT, Data
from bench.loop import _settings, _wait_for_versions

QUIX_VERSION = "3.28.1"
ROOT = Path(__file__).resolve().parent.parent
QUIX_VENV = ROOT / "bench" / ".peers" / "quix"


@dataclass
class PeerRun:
    rate: float  # decisions learned per second, from the start (see the module) to all learned
    steady_rate: float  # decisions learned per second, from a tenth of them learned to all
    learned: int
    accuracy: float  # River's Accuracy of predict-then-learn over the run
    startup_s: float  # processes started -> first decision learned (adaptloop: joined)
    # adaptloop: the join's partitions assigned -> first decision joined
    after_assignment_s: float | None = None


def quix_python() -> Path:
    """The Python of the Quix Streams venv (made on first use, with this venv's River version)."""
    python = QUIX_VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(QUIX_VENV)], check=True)
        river = metadata.version("river")
        subprocess.run(
            [
                str(python),
                "-m",
                "pip",
                "install",
                "-q",
                f"quixstreams=={QUIX_VERSION}",
                f"river=={river}",
            ],
            check=True,
        )
    return python


def produce_backlog(bootstrap: str, prefix: str, data: Data) -> None:
    """Each decision's prediction and outcome on ``prefix``'s topics, as a service would send
    them."""
    now = datetime.now(UTC)
    with EventProducer(bootstrap, topic_prefix=prefix) as producer:
        for i, (x, y) in enumerate(data):
            at = now + timedelta(microseconds=i)
            producer.send(
                PredictionEvent(
                    decision_id=f"d{i}", model="b", model_version="v", features=x, timestamp=at
                )
            )
            producer.send(OutcomeEvent(decision_id=f"d{i}", label=y, source="bench", timestamp=at))


def adaptloop_loop(base: Settings, recipe: str, data: Data) -> PeerRun:
    """adaptloop's join and learner (a process each) on a backlog, exactly-once as in production."""
    n = len(data)
    spec = LearnerSpec(
        name="b",
        recipe=recipe,
        min_examples=0,
        metrics=["Accuracy"],
        drift=WATCH_AND_ALERT,
        checkpoint_every=n // 10,
        checkpoint_seconds=None,
    )
    settings = _settings(base, [spec])
    produce_backlog(settings.bootstrap_address, settings.topic_prefix, data)
    started = time.time()
    workers = [
        start_worker_process(settings, settings.home / f"worker-{role}.log", role=role)
        for role in ("join", "learn")
    ]
    try:
        versions = _wait_for_versions(settings, {"b": n})["b"]
        first = _first_record_at(
            settings.bootstrap_address, TRAINING_EXAMPLES.full_name(settings.topic_prefix)
        )
    finally:
        for worker in workers:
            stop_worker_process(worker)
        delete_topics(settings.bootstrap_address, settings.topic_prefix)
    tenth = next(v for v in versions if v.examples_seen >= n // 10)
    last = versions[-1]
    seconds = (last.timestamp - tenth.timestamp).total_seconds()
    assigned = _logged_at(settings.home / "worker-join.log", "join assigned")
    if assigned is None:
        raise RuntimeError("the join's log has no assignment: no start to time the backlog from")
    return PeerRun(
        last.examples_seen / (last.timestamp.timestamp() - assigned),
        (last.examples_seen - tenth.examples_seen) / seconds,
        last.examples_seen,
        last.metrics["shadow.Accuracy"],
        first - started,
        first - assigned if assigned is not None else None,
    )


def _first_record_at(connection: ConnectionLike, topic: str) -> float:
    """When the first record of ``topic`` was written (its earliest timestamp, epoch seconds)."""
    with KafkaConnection.of(connection).reader(topic, committed=False) as reader:
        stamps: dict[int, float] = {}  # partition -> its first record's time
        for message in reader.to_end(30):
            stamps.setdefault(message.partition() or 0, message.timestamp()[1] / 1000)
            reader.skip(message.partition() or 0)
        return min(stamps.values())


def _logged_at(log: Path, words: str) -> float | None:
    """When the worker's log first says ``words`` (its lines start with the local time, to the
    millisecond)."""
    for line in log.read_text().splitlines():
        if words in line:
            return datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
    return None


def _run_peer(
    command: list[str], env: dict[str, str], out: Path, n: int, timeout: float = 600.0
) -> PeerRun:
    started = time.time()
    process = subprocess.Popen(
        command,
        env={**os.environ, **env},
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + timeout
        while not out.exists():
            if process.poll() is not None or time.monotonic() > deadline:
                error = (
                    process.stderr.read().decode()[-2000:]
                    if process.stderr and process.poll() is not None
                    else ""
                )
                raise RuntimeError(
                    f"{command[1:3]} stopped or timed out (exit {process.poll()}): {error}"
                )
            time.sleep(0.05)
        time.sleep(0.1)  # written in one call: let it land
        result = json.loads(out.read_text())
    finally:
        process.kill()
        process.wait()
    if result["learned"] != n:
        raise RuntimeError(f"{command[1:3]} learned {result['learned']} of {n} decisions")
    return PeerRun(
        n / result["first_read_to_all_s"],
        (n - n // 10) / result["tenth_to_all_s"],
        result["learned"],
        result["accuracy"],
        result["first_at"] - started,
    )


def _with_backlog(base: Settings, data: Data) -> str:
    prefix = f"peer{uuid.uuid4().hex[:6]}."
    ensure_topics(base.bootstrap_address, prefix=prefix, partitions=base.partitions)
    produce_backlog(base.bootstrap_address, prefix, data)
    return prefix


def bytewax_loop(base: Settings, recipe: str, data: Data) -> PeerRun:
    """The Bytewax dataflow (one worker, state in memory) on a backlog."""
    prefix = _with_backlog(base, data)
    out = Path(tempfile.mkdtemp()) / "result.json"
    env = {
        "PEER_BOOTSTRAP": base.bootstrap_address,
        "PEER_TOPICS": f"{PREDICTIONS.full_name(prefix)},{OUTCOMES.full_name(prefix)}",
        "PEER_N": str(len(data)),
        "PEER_RECIPE": recipe,
        "PEER_OUT": str(out),
    }
    try:
        return _run_peer(
            [sys.executable, "-m", "bytewax.run", "bench.bytewax_peer:flow"], env, out, len(data)
        )
    finally:
        delete_topics(base.bootstrap_address, prefix)


def quix_run(bootstrap: str, mode: str, topics: str, recipe: str, n: int) -> PeerRun:
    """The Quix Streams app (exactly-once, RocksDB state) over ``topics``."""
    out, state = Path(tempfile.mkdtemp()) / "result.json", tempfile.mkdtemp()
    command = [
        str(quix_python()),
        "-m",
        "bench.quix_peer",
        mode,
        bootstrap,
        topics,
        str(n),
        recipe,
        str(out),
        state,
    ]
    return _run_peer(command, {}, out, n)


def quix_loop(base: Settings, recipe: str, data: Data) -> PeerRun:
    prefix = _with_backlog(base, data)
    topics = f"{PREDICTIONS.full_name(prefix)},{OUTCOMES.full_name(prefix)}"
    try:
        return quix_run(base.bootstrap_address, "loop", topics, recipe, len(data))
    finally:
        delete_topics(base.bootstrap_address, prefix)
        # Quix's state changelogs of its groups
        delete_topics(base.bootstrap_address, "changelog__quix-")
        delete_topics(base.bootstrap_address, "repartition__quix-")
