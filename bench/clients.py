"""Many models served in one process: what ``MODELS`` ModelClients cost (``python -m bench
clients``).

A service (``adaptloop serve``, a faust app) holds one
:class:`~adaptloop.streams.model_client.ModelClient` per model. This publishes a signed version of
each of ``MODELS`` small models on ``model-updates``, then, in a fresh process each time, starts a
client of every model and measures:

- the time to start them all: one after another (as a script would), or all at once, each in a
  thread of its own (as ``adaptloop serve`` does);
- the OS threads and the resident memory (RSS) the clients added to the process;
- the CPU the process spends while idle (no prediction, no new version) over ``IDLE_SECONDS``;
- the time to close them all.

Needs a broker (``adaptloop kafka up``, or ``ADAPTLOOP_BOOTSTRAP``). ``python -m bench clients
[MODELS]``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import orjson
from rich.console import Console
from rich.table import Table

from bench.cpu import cpu_seconds

MODELS = 100
IDLE_SECONDS = 20.0
TRAINING = 50  # examples each model learns before its version is published


def _threads() -> int:
    return len(os.listdir("/proc/self/task"))


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def publish(bootstrap: str, models: int) -> tuple[str, Path]:
    """A fresh topic prefix and home with a signed version of each of ``models`` models on its
    model-updates."""
    from adaptloop.learners.online import OnlineLearner
    from adaptloop.learners.signing import ModelKeys
    from adaptloop.learners.spec import LearnerSpec
    from adaptloop.learners.store import ModelStore
    from adaptloop.schemas import TrainingExample
    from adaptloop.streams import EventProducer
    from adaptloop.streams.admin import ensure_topics

    prefix, home = (
        f"clients{uuid.uuid4().hex[:6]}.",
        Path(tempfile.mkdtemp(prefix="bench-clients-")),
    )
    ensure_topics(bootstrap, prefix=prefix)
    store = ModelStore(home / "models", ModelKeys.for_worker(home / "keys")[0])
    with EventProducer(bootstrap, topic_prefix=prefix) as producer:
        for m in range(models):
            name = f"model-{m:03d}"
            learner = OnlineLearner(LearnerSpec(name=name, recipe="logistic", min_examples=0))
            for i in range(TRAINING):
                x = {"a": float(i % 7), "b": float((i * m) % 5)}
                example = TrainingExample(
                    model=name,
                    decision_id=f"{m}-{i}",
                    model_version="v",
                    features=x,
                    label=(i + m) % 3 == 0,
                    predicted_at=datetime.now(UTC),
                )
                learner.learn(example, ("t:0", i))
            producer.send(store.checkpoint(learner))
    return prefix, home


def measure(
    bootstrap: str, prefix: str, home: str, models: int, together: bool
) -> dict[str, float]:
    """In this process: start a client of each model, then measure it as the module says."""
    from adaptloop.streams.connection import ClientSettings
    from adaptloop.streams.model_client import ModelClient

    settings = ClientSettings(bootstrap=bootstrap, topic_prefix=prefix, home=Path(home))
    names = [f"model-{m:03d}" for m in range(models)]
    threads, rss = _threads(), _rss_mb()
    clients: dict[str, ModelClient] = {}
    started = time.perf_counter()
    if together:

        def start(name: str) -> None:
            clients[name] = ModelClient.from_settings(name, settings, wait=120)

        starters = [threading.Thread(target=start, args=(name,)) for name in names]
        for starter in starters:
            starter.start()
        for starter in starters:
            starter.join()
    else:
        for name in names:
            clients[name] = ModelClient.from_settings(name, settings, wait=120)
    start_s = time.perf_counter() - started
    assert len(clients) == models, f"{models - len(clients)} clients did not start"
    assert all(clients[name].version.model == name for name in names)
    time.sleep(1.0)  # the start's last work (threads winding down) out of the idle window
    added_threads, added_rss = _threads() - threads, _rss_mb() - rss
    cpu = cpu_seconds(os.getpid()) or 0.0
    time.sleep(IDLE_SECONDS)
    idle_cores = ((cpu_seconds(os.getpid()) or 0.0) - cpu) / IDLE_SECONDS
    started = time.perf_counter()
    for client in clients.values():
        client.close()
    close_s = time.perf_counter() - started
    return {
        "start_s": start_s,
        "threads_added": added_threads,
        "rss_added_mb": added_rss,
        "idle_cores": idle_cores,
        "close_s": close_s,
    }


def run(bootstrap: str, models: int = MODELS) -> dict[str, dict[str, float]]:
    """Both ways of starting, each in a fresh process, on one published set of models."""
    from adaptloop.streams import delete_topics

    prefix, home = publish(bootstrap, models)
    found = {}
    try:
        for way, together in (("one after another", False), ("all at once (threads)", True)):
            command = [
                sys.executable,
                "-m",
                "bench.clients",
                "measure",
                bootstrap,
                prefix,
                str(home),
                str(models),
            ]
            out = subprocess.run(
                [*command, "together" if together else "sequential"],
                check=True,
                capture_output=True,
                cwd=Path(__file__).parent.parent,
            ).stdout
            found[way] = orjson.loads(out.splitlines()[-1])
    finally:
        delete_topics(bootstrap, prefix)
    return found


def main(models: int = MODELS) -> None:
    from adaptloop.settings import Settings

    bootstrap = Settings().bootstrap_address
    console = Console(width=max(110, Console().width))
    with console.status(f"{models} ModelClients in one process"):
        found = run(bootstrap, models)
    table = Table(
        "start",
        "start s",
        "threads added",
        "RSS added MB",
        f"idle cores ({IDLE_SECONDS:.0f} s)",
        "close s",
        title=f"{models} ModelClients in one process",
    )
    for way, figures in found.items():
        table.add_row(
            way,
            f"{figures['start_s']:.2f}",
            f"{figures['threads_added']:.0f}",
            f"{figures['rss_added_mb']:.0f}",
            f"{figures['idle_cores']:.3f}",
            f"{figures['close_s']:.2f}",
        )
    console.print(table)
    out = Path(__file__).with_name("results.json")
    previous = orjson.loads(out.read_bytes()) if out.exists() else {}
    out.write_bytes(
        orjson.dumps(
            {**previous, "clients": {"models": models, **found}}, option=orjson.OPT_INDENT_2
        )
    )


if __name__ == "__main__":
    if sys.argv[1:2] == ["measure"]:
        _, _, bootstrap, prefix, home, models, way = sys.argv
        figures = measure(bootstrap, prefix, home, int(models), together=way == "together")
        sys.stdout.write(orjson.dumps(figures).decode() + "\n")
    else:
        main(int(sys.argv[1]) if len(sys.argv) > 1 else MODELS)
