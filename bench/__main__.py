"""``python -m bench``: how fast the loop runs, as ratios against baselines measured in the same run.

Needs a broker (``adaptloop kafka up``, or ``ADAPTLOOP_BOOTSTRAP``). Prints a table and writes
``bench/results.json``. Each row is a measurement divided by its baseline, both taken now on
this machine, so a noisy shared machine moves both alike:

- River in process (predict_proba_one + learn_one): the physical limit of each learner;
- OnlineLearner in process (progressive validation, dedup, drift watch) against River;
- the learner agent consuming training examples from Kafka against River;
- the whole loop (join + learner, a worker process) from produced predictions and outcomes;
- the producer SDK (validation + orjson + send) against raw confluent-kafka produce;
- version published -> served by a ModelClient (p50/p99) during the loop run;
- the Parquet archive's write rate, and an audit query over 10 million archived rows.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import duckdb
import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
from confluent_kafka import Producer
from rich.console import Console
from rich.table import Table
from river.datasets import synth

from adaptloop.settings import Settings
from adaptloop.worker import HASH_SEED, start_worker_process, stop_worker_process
from learners.online import OnlineLearner
from learners.recipes import build_model
from learners.spec import DriftSpec, LearnerSpec
from learners.store import ModelStore
from schemas import OutcomeEvent, PredictionEvent, TrainingExample, encode
from schemas.topics import OUTCOMES
from snapshots.archive import ParquetArchive
from snapshots.columns import RawRecord
from streams import EventProducer, ensure_topics
from streams.learner_agent import LearnerAgent
from streams.model_client import ModelClient

N = int(os.environ.get("BENCH_EXAMPLES", "20000"))
AT = datetime(2026, 1, 1, tzinfo=timezone.utc)
RECIPES = ("logistic", "hoeffding")


def _stream(n: int = N) -> list[tuple[dict, bool]]:
    return [({f"x{k}": v for k, v in x.items()}, y) for x, y in synth.Hyperplane(seed=1, n_features=10).take(n)]


def river_rate(recipe: str, data) -> float:
    model = build_model(LearnerSpec(name="b", recipe=recipe))
    start = time.perf_counter()
    for x, y in data:
        model.predict_proba_one(x)
        model.learn_one(x, y)
    return len(data) / (time.perf_counter() - start)


def learner_rate(recipe: str, data) -> float:
    learner = OnlineLearner(LearnerSpec(name="b", recipe=recipe, metrics=["Accuracy"], drift=DriftSpec()))
    examples = [TrainingExample(model="b", decision_id=str(i), model_version="v", features=x, prediction=True,
                                label=y, predicted_at=AT) for i, (x, y) in enumerate(data)]
    start = time.perf_counter()
    for i, example in enumerate(examples):
        learner.learn(example, ("t:0", i))
    return len(data) / (time.perf_counter() - start)


def agent_rate(bootstrap: str, recipe: str, data) -> float:
    """The learner agent on pre-produced training examples: consume, decode, learn, checkpoint."""
    prefix = f"bench{uuid.uuid4().hex[:6]}."
    ensure_topics(bootstrap, prefix=prefix, partitions=1)
    with EventProducer(bootstrap, topic_prefix=prefix) as producer:
        for i, (x, y) in enumerate(data):
            producer.send(TrainingExample(model="b", decision_id=str(i), model_version="v", features=x,
                                          prediction=True, label=y, predicted_at=AT))
    spec = LearnerSpec(name="b", recipe=recipe, metrics=["Accuracy"], checkpoint_every=5000, checkpoint_seconds=None)
    agent = LearnerAgent(bootstrap, specs={"b": spec}, store=ModelStore(Path(tempfile.mkdtemp())), prefix=prefix,
                         group=f"bench-{uuid.uuid4().hex[:6]}", batch_size=5000)
    agent.publish_missing()
    while not agent.consumer.kafka.assignment():
        agent.step(0.2)
    start = time.perf_counter()
    while agent.learners["b"].progress.examples_seen < len(data):
        agent.step(0.2)
    elapsed = time.perf_counter() - start
    agent.consumer.close()
    return len(data) / elapsed


def loop_rate(settings: Settings, data) -> tuple[float, list[float]]:
    """The whole loop in a worker process: predictions + outcomes in, the version with every example out."""
    run = uuid.uuid4().hex[:6]
    spec = LearnerSpec(name="b", recipe="logistic", metrics=["Accuracy"], checkpoint_every=2000, checkpoint_seconds=2)
    settings = settings.model_copy(update={
        "bootstrap": settings.bootstrap_address, "topic_prefix": f"bench{run}.", "home": Path(tempfile.mkdtemp()),
        "models": [spec], "group": f"bench{run}",
        "metrics_port": None, "snapshot_seconds": None})
    ensure_topics(settings.bootstrap_address, prefix=settings.topic_prefix, partitions=settings.partitions)
    worker = start_worker_process(settings, settings.home / "worker.log")
    lags: list[float] = []
    try:
        with ModelClient("b", bootstrap=settings.bootstrap_address, store=ModelStore(settings.models_dir),
                         prefix=settings.topic_prefix, wait=120, on_swap=lambda v, lag: lags.append(lag) if lag else None) as client:
            time.sleep(15)  # the join (faust) joins its group
            start = time.perf_counter()
            with EventProducer(settings.bootstrap_address, topic_prefix=settings.topic_prefix) as producer:
                now = datetime.now(timezone.utc)
                for i, (x, y) in enumerate(data):
                    at = now + timedelta(microseconds=i)
                    producer.send(PredictionEvent(decision_id=f"d{i}", model="b", model_version="v", features=x,
                                                  timestamp=at))
                    producer.send(OutcomeEvent(decision_id=f"d{i}", label=y, source="bench", timestamp=at))
            deadline = time.monotonic() + 600
            while client.version.examples_seen < len(data) and time.monotonic() < deadline:
                time.sleep(0.05)
            elapsed = time.perf_counter() - start
    finally:
        stop_worker_process(worker)
    return len(data) / elapsed, lags


def producer_rates(bootstrap: str, n: int = 100_000) -> tuple[float, float]:
    prefix = f"bench{uuid.uuid4().hex[:6]}."
    ensure_topics(bootstrap, prefix=prefix, partitions=6, topics=[OUTCOMES])
    events = [OutcomeEvent(decision_id=f"d{i}", label=i % 2 == 0, source="bench", timestamp=AT) for i in range(n)]
    start = time.perf_counter()
    with EventProducer(bootstrap, topic_prefix=prefix) as producer:
        for event in events:
            producer.send(event)
    sdk = n / (time.perf_counter() - start)
    payloads = [(e.decision_id.encode(), encode(e)) for e in events]
    raw = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all",
                    "compression.type": "lz4", "linger.ms": 5, "queue.buffering.max.messages": 500_000})
    start = time.perf_counter()
    for key, value in payloads:
        raw.produce(f"{prefix}{OUTCOMES.name}", value=value, key=key)
        raw.poll(0)
    raw.flush(60)
    return sdk, n / (time.perf_counter() - start)


def archive_rate(n: int = 200_000) -> float:
    records = [RawRecord(0, i, 1_767_225_600_000 + i, f"d{i}".encode(), orjson.dumps(
        {"decision_id": f"d{i}", "label": i % 2 == 0, "source": "bench"})) for i in range(n)]
    archive = ParquetArchive(Path(tempfile.mkdtemp()))
    start = time.perf_counter()
    for first in range(0, n, 50_000):
        archive.write(OUTCOMES, "outcomes", 0, records[first:first + 50_000])
    return n / (time.perf_counter() - start)


def audit_query(rows: int = 10_000_000) -> tuple[float, float]:
    """Seconds to write ``rows`` archive-shaped rows, and to run a GROUP BY audit over them."""
    root = Path(tempfile.mkdtemp())
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    for part in range(10):
        size = rows // 10
        table = pa.table({
            "model": pa.array(rng.choice(["churn", "fraud", "ranker"], size)),
            "model_version": pa.array(rng.integers(0, 200, size).astype(str)),
            "status": pa.array(rng.choice(["joined", "expired", "late"], size, p=[0.85, 0.12, 0.03])),
            "prediction": pa.array(rng.choice(["true", "false"], size)),
            "label": pa.array(rng.choice(["true", "false"], size)),
            "_partition": pa.array(np.full(size, part, dtype=np.int32)),
            "_offset": pa.array(np.arange(size, dtype=np.int64)),
        })
        pq.write_table(table, root / f"p{part:03d}.parquet", compression="zstd")
    written = time.perf_counter() - start
    start = time.perf_counter()
    duckdb.execute(f"""SELECT model, model_version, count(*), avg((prediction = label)::INT)
                       FROM read_parquet('{root}/*.parquet') WHERE status = 'joined' GROUP BY ALL""").fetchall()
    return written, time.perf_counter() - start


def main() -> None:
    os.environ.setdefault("PYTHONHASHSEED", HASH_SEED)
    console = Console()
    settings = Settings()
    bootstrap = settings.bootstrap_address
    data = _stream()
    results: dict[str, object] = {"examples": N, "at": datetime.now(timezone.utc).isoformat()}
    table = Table("measurement", "rate", "baseline", "ratio", title=f"adaptloop bench ({N:,} examples)")
    with console.status("River in process, OnlineLearner, learner agent from Kafka"):
        for recipe in RECIPES:
            river, ours, agent = river_rate(recipe, data), learner_rate(recipe, data), agent_rate(bootstrap, recipe, data)
            results[recipe] = {"river_per_s": river, "online_learner_per_s": ours, "learner_agent_per_s": agent}
            table.add_row(f"{recipe}: OnlineLearner in process / River", f"{ours:,.0f}/s", f"{river:,.0f}/s",
                          f"{ours / river:.2f}")
            table.add_row(f"{recipe}: learner agent from Kafka / River", f"{agent:,.0f}/s", f"{river:,.0f}/s",
                          f"{agent / river:.2f}")
    with console.status("the whole loop in a worker (join + learner)"):
        loop, lags = loop_rate(settings, data)
        river = results["logistic"]["river_per_s"]  # type: ignore[index]
        lags.sort()
        results["loop"] = {"examples_per_s": loop, "refresh_lag_p50_s": statistics.median(lags) if lags else None,
                           "refresh_lag_p99_s": lags[int(0.99 * (len(lags) - 1))] if lags else None, "swaps": len(lags)}
        table.add_row("logistic: whole loop (join + learn) / River", f"{loop:,.0f}/s", f"{river:,.0f}/s",
                      f"{loop / river:.2f}")
        if lags:
            table.add_row("version published -> served (p50 / p99)",
                          f"{results['loop']['refresh_lag_p50_s'] * 1000:.0f} / {results['loop']['refresh_lag_p99_s'] * 1000:.0f} ms",  # type: ignore[index]
                          "", "")
    with console.status("producer SDK against raw confluent-kafka"):
        sdk, raw = producer_rates(bootstrap)
        results["producer"] = {"sdk_per_s": sdk, "raw_per_s": raw}
        table.add_row("producer SDK / raw confluent-kafka produce", f"{sdk:,.0f}/s", f"{raw:,.0f}/s", f"{sdk / raw:.2f}")
    with console.status("archive writes and a 10-million-row audit"):
        archive = archive_rate()
        written, query = audit_query()
        results["archive"] = {"rows_per_s": archive, "audit_10m_rows_s": query, "write_10m_rows_s": written}
        table.add_row("archive: rows/s to Parquet (decode + typed columns)", f"{archive:,.0f}/s", "", "")
        table.add_row("audit GROUP BY over 10M archived rows", f"{query:.2f} s", "", "")
    console.print(table)
    out = Path(__file__).with_name("results.json")
    out.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))
    console.print(f"results in {out}")


if __name__ == "__main__":
    main()
