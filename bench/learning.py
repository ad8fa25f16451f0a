"""The learning stage, measured: River in process, the OnlineLearner, and the learner agent reading
Kafka.

Every rate is examples per second of predict-then-learn over the same data (River's
``Hyperplane``, 10 numeric features), so each one divides by River's own in-process
rate: the physical limit of that learner.
"""

from __future__ import annotations

import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
from confluent_kafka import OFFSET_BEGINNING, TopicPartition
from river.datasets import synth

from adaptloop.learners.online import OnlineLearner
from adaptloop.learners.recipes import build_model
from adaptloop.learners.spec import DriftSpec, LearnerSpec
from adaptloop.learners.store import ModelStore
from adaptloop.schemas import TrainingExample, encode
from adaptloop.schemas.topics import TRAINING_EXAMPLES
from adaptloop.streams import EventProducer, ensure_topics
from adaptloop.streams.consumer import EventConsumer
from adaptloop.streams.deadletter import DeadLetters
from adaptloop.streams.learner_agent import LearnerAgent

AT = datetime(2026, 1, 1, tzinfo=UTC)
Data = list[tuple[dict, bool]]

WATCH_AND_ALERT = DriftSpec(policy="alert")
"""The drift settings of the bench's learners: watched as every model is, alerts raised, but no
switch of model. A false alarm on ``Hyperplane`` (no drift) under the default ``challenger``
policy would learn a second model beside the first, work the peers and River never do. (Its
promotion would not keep a run from reaching its backlog's count: count-based versions fall on
multiples of ``checkpoint_every`` of the stream's count, see ``count_version_due``.) The policies
themselves are measured by ``python -m bench policies``."""


def stream(n: int, seed: int = 1) -> Data:
    return [
        ({f"x{k}": v for k, v in x.items()}, bool(y))
        for x, y in synth.Hyperplane(seed=seed, n_features=10).take(n)
    ]


def examples(data: Data, model: str = "b") -> list[TrainingExample]:
    return [
        TrainingExample(
            model=model,
            decision_id=f"{model}-{i}",
            model_version="v",
            features=x,
            prediction=True,
            label=y,
            predicted_at=AT,
        )
        for i, (x, y) in enumerate(data)
    ]


def river_rate(recipe: str, data: Data) -> float:
    """River alone: predict_proba_one then learn_one on each example."""
    model = build_model(LearnerSpec(name="b", recipe=recipe))
    start = time.perf_counter()
    for x, y in data:
        model.predict_proba_one(x)
        model.learn_one(x, y)
    return len(data) / (time.perf_counter() - start)


def river_many_rate(recipe: str, data: Data, batch: int) -> float:
    """River alone in mini-batches: DataFrame, predict_proba_many, learn_many."""
    model = build_model(LearnerSpec(name="b", recipe=recipe))
    start = time.perf_counter()
    for first in range(0, len(data), batch):
        rows = data[first : first + batch]
        X = pd.DataFrame([x for x, _ in rows])
        model.predict_proba_many(X)
        model.learn_many(X, pd.Series([y for _, y in rows]))
    return len(data) / (time.perf_counter() - start)


def learner_rate(spec: LearnerSpec, data: Data) -> float:
    """The OnlineLearner in process: dedup, progressive validation, drift monitors, lineage hash."""
    learner = OnlineLearner(spec.model_copy(update={"drift": WATCH_AND_ALERT}))
    batch = examples(data)
    start = time.perf_counter()
    for i, example in enumerate(batch):
        learner.learn(example, ("t:0", i))
    return len(data) / (time.perf_counter() - start)


def produce_examples(bootstrap: str, data: Data) -> str:
    """Training examples on a fresh one-partition topic; returns the topic prefix."""
    prefix = f"bench{uuid.uuid4().hex[:6]}."
    ensure_topics(bootstrap, prefix=prefix, partitions=1)
    with EventProducer(bootstrap, topic_prefix=prefix) as producer:
        for example in examples(data):
            producer.send_bytes(TRAINING_EXAMPLES.full_name(prefix), b"b", encode(example))
    return prefix


def agent_rate(bootstrap: str, prefix: str, spec: LearnerSpec, n: int, after: int = 0) -> float:
    """The learner agent on already produced examples: consume, decode, learn, checkpoint, publish.

    Timed from its ``after``-th example to its ``n``-th: ``after`` > 0 measures a learner that has
    been running a while (its duplicate window full, its model grown).
    """
    agent = LearnerAgent(
        bootstrap,
        specs={"b": spec},
        store=ModelStore(Path(tempfile.mkdtemp())),
        prefix=prefix,
        group=f"bench-{uuid.uuid4().hex[:6]}",
        batch_size=5000,
    )
    agent.publish_missing()
    while not agent.consumer.kafka.assignment():
        agent.step(0.2)
    progress = agent.learners["b"].progress
    while progress.examples_seen < after:
        agent.step(0.2)
        progress = agent.learners["b"].progress
    seen, start = progress.examples_seen, time.perf_counter()
    while agent.learners["b"].progress.examples_seen < n:
        agent.step(0.2)
    elapsed = time.perf_counter() - start
    learned = agent.learners["b"].progress.examples_seen - seen
    agent.consumer.close()
    return learned / elapsed


def read_rate(bootstrap: str, prefix: str, n: int, trusted: bool = True) -> float:
    """Reading alone: the learner agent's consumer takes and decodes ``n`` training examples (with
    the fast reader it uses, or ``trusted=False``: pydantic's validation) and learns nothing. It
    runs on the learner's core, so a learner reading from Kafka is at most ``1 / (1 / read + 1 /
    river)`` examples per second, however little else it does."""
    with EventProducer(bootstrap, topic_prefix=prefix) as producer:
        dead_letters = DeadLetters(producer, consumer=f"{prefix}bench-read")
        with EventConsumer(
            bootstrap,
            f"bench-{uuid.uuid4().hex[:6]}",
            [TRAINING_EXAMPLES],
            dead_letters=dead_letters,
            prefix=prefix,
            trusted=trusted,
        ) as consumer:
            while not consumer.kafka.assignment():
                consumer.poll(1, 0.2)
                if consumer.kafka.assignment():
                    consumer.kafka.seek(
                        TopicPartition(TRAINING_EXAMPLES.full_name(prefix), 0, OFFSET_BEGINNING)
                    )
            read, start = 0, time.perf_counter()
            while read < n:
                read += len(consumer.poll(5000, 0.2))
            return read / (time.perf_counter() - start)
