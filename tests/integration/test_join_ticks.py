"""The join's event-time clocks: ticks advance an idle partition's clocks, never past records
written and not yet read; an event stamped far in the future cannot move them."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
from confluent_kafka import TopicPartition

from adaptloop.learners.join import OUTCOME_CLOCK, PREDICTION_CLOCK
from adaptloop.learners.spec import LearnerSpec
from adaptloop.schemas import OutcomeEvent, PredictionEvent
from adaptloop.schemas.topics import OUTCOMES
from adaptloop.streams import EventProducer
from adaptloop.streams.join_agent import JoinAgent

pytestmark = pytest.mark.kafka


def _step_until(agent: JoinAgent, done, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not done() and time.monotonic() < deadline:
        agent.step(0.2)
    assert done()


def _clocks_read_to_end(agent: JoinAgent, expected: tuple[int, ...]) -> tuple[int, ...]:
    """Partition 0's clocks read to their end, asked until they are ``expected`` or a minute has
    passed: the end is asked of the broker with a 5 s limit, and a loaded broker answering later
    leaves a clock waiting for the next tick (what the product does), not a wrong answer."""
    deadline = time.monotonic() + 60
    while (found := agent._read_to_end(0)) != expected and time.monotonic() < deadline:
        time.sleep(0.2)
    return found


def test_a_tick_does_not_advance_a_clock_past_records_written_but_not_yet_read(
    kafka_bootstrap, topic_prefix
):
    agent = JoinAgent(
        kafka_bootstrap,
        specs={"m": LearnerSpec(name="m", horizon_seconds=1)},
        partitions=3,
        prefix=topic_prefix,
        tick_seconds=None,
    )
    now = datetime.now(UTC)
    try:
        with EventProducer(kafka_bootstrap, topic_prefix=topic_prefix) as producer:
            producer.send(
                PredictionEvent(
                    decision_id="d0",
                    model="m",
                    model_version="v",
                    features={"x": 1.0},
                    timestamp=now,
                ),
                partition=0,
            )
            producer.send(
                OutcomeEvent(decision_id="d0", label=True, source="test", timestamp=now),
                partition=0,
            )
        _step_until(agent, lambda: agent.join.counts["joined"] == 1)
        # idle: a tick may advance both
        assert _clocks_read_to_end(agent, (PREDICTION_CLOCK, OUTCOME_CLOCK)) == (
            PREDICTION_CLOCK,
            OUTCOME_CLOCK,
        )

        # Outcomes the consumer has not fetched yet (paused: the end it cached stays as it was).
        outcomes = TopicPartition(OUTCOMES.full_name(topic_prefix), 0)
        agent.consumer.kafka.pause([outcomes])
        with EventProducer(kafka_bootstrap, topic_prefix=topic_prefix) as producer:
            for i in range(1, 6):
                producer.send(
                    OutcomeEvent(decision_id=f"d{i}", label=True, source="test", timestamp=now),
                    partition=0,
                )
        assert _clocks_read_to_end(agent, (PREDICTION_CLOCK,)) == (PREDICTION_CLOCK,)

        agent.consumer.kafka.resume([outcomes])
        _step_until(agent, lambda: agent.join.counts["outcomes"] == 6)
        assert _clocks_read_to_end(agent, (PREDICTION_CLOCK, OUTCOME_CLOCK)) == (
            PREDICTION_CLOCK,
            OUTCOME_CLOCK,
        )
    finally:
        for index in list(agent.outputs):
            agent._release(index)
        agent.consumer.close()
        agent.ends.close()


def test_an_event_from_the_future_is_a_dead_letter_and_expires_nothing(
    kafka_bootstrap, topic_prefix
):
    agent = JoinAgent(
        kafka_bootstrap,
        specs={"m": LearnerSpec(name="m", horizon_seconds=60)},
        partitions=3,
        prefix=topic_prefix,
        tick_seconds=None,
        max_future_seconds=300,
    )
    now = datetime.now(UTC)
    try:
        with EventProducer(kafka_bootstrap, topic_prefix=topic_prefix) as producer:
            producer.send(
                PredictionEvent(
                    decision_id="d0",
                    model="m",
                    model_version="v",
                    features={"x": 1.0},
                    timestamp=now,
                ),
                partition=0,
            )
            # An outcome from a year ahead (a broken clock, or on purpose): it would move the
            # outcomes clock past d0's deadline and expire it.
            producer.send(
                OutcomeEvent(
                    decision_id="poison",
                    label=True,
                    source="test",
                    timestamp=now + timedelta(days=365),
                ),
                partition=0,
            )
            producer.send(
                OutcomeEvent(
                    decision_id="d0",
                    label=False,
                    source="test",
                    timestamp=now + timedelta(seconds=5),
                ),
                partition=0,
            )
        _step_until(
            agent, lambda: agent.join.counts["joined"] == 1 and agent.consumer.dead_letters.counts
        )
        assert agent.join.counts["expired"] == 0
        assert dict(agent.consumer.dead_letters.counts) == {"rejected": 1}
    finally:
        for index in list(agent.outputs):
            agent._release(index)
        agent.consumer.close()
        agent.ends.close()
