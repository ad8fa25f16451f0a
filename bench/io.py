"""Kafka and storage around the loop: the producer SDK against raw confluent-kafka, Parquet writes,
an audit query."""

from __future__ import annotations

import tempfile
import time
import uuid
from pathlib import Path

import duckdb
import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
from confluent_kafka import Producer

from adaptloop.schemas import OutcomeEvent, TrainingExample, encode
from adaptloop.schemas.topics import OUTCOMES, Topic
from adaptloop.snapshots.archive import ParquetArchive
from adaptloop.snapshots.columns import RawRecord
from adaptloop.streams import EventProducer, delete_topics, ensure_topics
from bench.learning import AT


def producer_rates(bootstrap: str, n: int = 100_000) -> tuple[float, float]:
    prefix = f"bench{uuid.uuid4().hex[:6]}."
    ensure_topics(bootstrap, prefix=prefix, partitions=6, topics=[OUTCOMES])
    events = [
        OutcomeEvent(decision_id=f"d{i}", label=i % 2 == 0, source="bench", timestamp=AT)
        for i in range(n)
    ]
    start = time.perf_counter()
    with EventProducer(bootstrap, topic_prefix=prefix) as producer:
        for event in events:
            producer.send(event)
    sdk = n / (time.perf_counter() - start)
    payloads = [(e.decision_id.encode(), encode(e)) for e in events]
    raw = Producer(
        {
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            "acks": "all",
            "compression.type": "lz4",
            "linger.ms": 5,
            "queue.buffering.max.messages": 500_000,
        }
    )
    start = time.perf_counter()
    for key, value in payloads:
        raw.produce(f"{prefix}{OUTCOMES.name}", value=value, key=key)
        raw.poll(0)
    raw.flush(60)
    rate = n / (time.perf_counter() - start)
    delete_topics(bootstrap, prefix)
    return sdk, rate


def archive_rate(topic: Topic = OUTCOMES, n: int = 200_000) -> float:
    """Records of ``topic`` per second, decoded and written to Parquet by the archive (files of
    50,000): outcomes (validated by the contract) or training examples of 10 features (the learner's
    reader)."""
    rng = np.random.default_rng(7)
    values = (
        [
            orjson.dumps({"decision_id": f"d{i}", "label": i % 2 == 0, "source": "bench"})
            for i in range(n)
        ]
        if topic is OUTCOMES
        else [
            encode(
                TrainingExample(
                    model="bench",
                    decision_id=f"d{i}",
                    model_version="v1",
                    features={f"x{k}": float(v) for k, v in enumerate(row)},
                    prediction=bool(i % 3),
                    label=i % 2 == 0,
                    predicted_at=AT,
                    outcome_at=AT,
                )
            )
            for i, row in enumerate(rng.random((n, 10)))
        ]
    )
    records = [
        RawRecord(0, i, 1_767_225_600_000 + i, f"d{i}".encode(), value)
        for i, value in enumerate(values)
    ]
    archive = ParquetArchive(Path(tempfile.mkdtemp()))
    start = time.perf_counter()
    for first in range(0, n, 50_000):
        archive.write(topic, topic.name, 0, records[first : first + 50_000])
    return n / (time.perf_counter() - start)


def audit_query(rows: int = 10_000_000) -> tuple[float, float]:
    """Seconds to write ``rows`` archive-shaped rows, and to run a GROUP BY audit over them."""
    root = Path(tempfile.mkdtemp())
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    for part in range(10):
        size = rows // 10
        table = pa.table(
            {
                "model": pa.array(rng.choice(["churn", "fraud", "ranker"], size)),
                "model_version": pa.array(rng.integers(0, 200, size).astype(str)),
                "status": pa.array(
                    rng.choice(["joined", "expired", "late"], size, p=[0.85, 0.12, 0.03])
                ),
                "prediction": pa.array(rng.choice(["true", "false"], size)),
                "label": pa.array(rng.choice(["true", "false"], size)),
                "_partition": pa.array(np.full(size, part, dtype=np.int32)),
                "_offset": pa.array(np.arange(size, dtype=np.int64)),
            }
        )
        pq.write_table(table, root / f"p{part:03d}.parquet", compression="zstd")
    written = time.perf_counter() - start
    start = time.perf_counter()
    duckdb.execute(f"""SELECT model, model_version, count(*), avg((prediction = label)::INT)
                       FROM read_parquet('{root}/*.parquet') WHERE status = 'joined' GROUP BY ALL""").fetchall()
    return written, time.perf_counter() - start
