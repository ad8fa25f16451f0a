"""The join's Kafka work alone: what the join's design costs before any of its Python logic runs.

A consumer with the join's settings reads a backlog of predictions and outcomes; one transactional
producer per input partition writes, per decision, what the join writes (the prediction's state
entry and its tombstone on the changelog, one training example) and commits each batch's offsets in
that partition's transaction, the partitions' commits side by side, as the join does. Nothing is
decoded, validated or joined: the records' bytes are written on as they came.

Its CPU per decision (user + system time of this process, librdkafka's threads included) is the
floor under the join's own row of the CPU table for any join written on confluent-kafka with this
design: what is above it is the join's Python (decoding, validation, state, the training example).
"""

from __future__ import annotations

import resource
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from confluent_kafka import Message, Producer, TopicPartition
from confluent_kafka.admin import NewTopic

from adaptloop.schemas.topics import OUTCOMES, PREDICTIONS, TRAINING_EXAMPLES
from adaptloop.settings import Settings
from adaptloop.streams import delete_topics
from adaptloop.streams.join_agent import JOIN_CONSUMER_CONFIG
from adaptloop.streams.producer import DEFAULT_PRODUCER_CONFIG
from bench.learning import Data
from bench.loop import _settings
from bench.peers import produce_backlog


@dataclass
class FloorRun:
    rate: float  # decisions per second, from a tenth of them to the last
    cpu_us: float  # CPU microseconds of the process per decision, over the same span


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def join_kafka_floor(base: Settings, data: Data) -> FloorRun:
    """Read, write and commit a backlog of ``data``'s decisions as the join does, with no join
    logic."""
    settings = _settings(base, [])
    prefix, connection, n = settings.topic_prefix, settings.connection(), len(data)
    bootstrap = connection.bootstrap
    produce_backlog(bootstrap, prefix, data)
    predictions, changelog = PREDICTIONS.full_name(prefix), f"{prefix}{settings.group}-join-state"
    examples = TRAINING_EXAMPLES.full_name(prefix)
    admin = connection.admin()
    compacted = NewTopic(changelog, settings.partitions, 1, config={"cleanup.policy": "compact"})
    admin.create_topics([compacted])[changelog].result()
    consumer = connection.group_consumer(
        f"floor-{uuid.uuid4().hex[:6]}",
        **{
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
            **JOIN_CONSUMER_CONFIG,
        },
    )
    producers = {}
    for partition in range(settings.partitions):
        producer = Producer(
            {
                **connection.config(),
                **DEFAULT_PRODUCER_CONFIG,
                "transactional.id": f"{prefix}floor-{partition}",
            }
        )
        producer.init_transactions(30)
        producers[partition] = producer
    committer = ThreadPoolExecutor(len(producers))

    def commit(producer: Producer, offsets: list[TopicPartition], metadata: object) -> None:
        producer.send_offsets_to_transaction(offsets, metadata)
        producer.commit_transaction()

    consumer.subscribe([predictions, OUTCOMES.full_name(prefix)])
    joined, started, deadline = 0, None, time.monotonic() + 300
    try:
        while joined < n:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"the join's Kafka floor read {joined:,} of {n:,} decisions in 300 s"
                )
            moved: dict[int, dict[str, Message]] = {}
            for message in consumer.consume(5000, 0.5):
                if message.error():
                    continue
                partition = message.partition() or 0  # (None only on error events)
                producer = producers[partition]
                if partition not in moved:
                    producer.begin_transaction()
                if message.topic() == predictions:
                    producer.produce(changelog, message.value(), message.key(), partition=partition)
                else:
                    producer.produce(examples, message.value(), b"b")
                    producer.produce(changelog, None, message.key(), partition=partition)
                    joined += 1
                moved.setdefault(partition, {})[message.topic() or ""] = message
            metadata = consumer.consumer_group_metadata()
            futures = [
                committer.submit(
                    commit,
                    producers[partition],
                    [
                        TopicPartition(m.topic(), partition, (m.offset() or 0) + 1)
                        for m in last.values()
                    ],
                    metadata,
                )
                for partition, last in moved.items()
            ]
            for future in futures:
                future.result()
            if started is None and joined >= n // 10:
                started = (joined, time.perf_counter(), _cpu_seconds())
    finally:
        consumer.close()
        committer.shutdown()
        delete_topics(bootstrap, prefix)
    assert started is not None
    first, wall, cpu = started
    return FloorRun(
        rate=(joined - first) / (time.perf_counter() - wall),
        cpu_us=(_cpu_seconds() - cpu) / (joined - first) * 1e6,
    )
