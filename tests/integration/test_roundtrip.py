"""10,000 events of every type through the SDK into a real broker and back; malformed ones
dead-lettered."""

from __future__ import annotations

import time
import uuid
from collections import Counter, defaultdict

import pytest

from adaptloop.samples import MALFORMED_RECORDS, SAMPLERS, sample_events
from adaptloop.schemas import DeadLetter, OutcomeEvent, encode, topic_for
from adaptloop.schemas.topics import ALL_TOPICS, OUTCOMES
from adaptloop.streams import DeadLetters, EventConsumer, EventProducer

pytestmark = pytest.mark.kafka

PER_TYPE = 10_000
BAD_EACH = 25  # x 4 kinds = 100 malformed records


def test_every_type_round_trips_and_every_bad_record_is_a_dead_letter(
    kafka_bootstrap, topic_prefix
):
    sent = {
        event_type: list(sample_events(event_type, PER_TYPE, seed=11)) for event_type in SAMPLERS
    }
    bad = [
        (kind, value + b" " * i)
        for kind, value in MALFORMED_RECORDS.items()
        for i in range(BAD_EACH)
    ]
    with EventProducer(kafka_bootstrap, topic_prefix=topic_prefix) as producer:
        for events in sent.values():
            for event in events:
                producer.send(event)
        for i, (_, value) in enumerate(bad):
            producer.send_bytes(OUTCOMES.full_name(topic_prefix), f"bad-{i}".encode(), value)
    assert producer.delivered == producer.sent == PER_TYPE * len(SAMPLERS) + len(bad)

    received: dict[type, list] = defaultdict(list)
    ours: list[DeadLetter] = []
    dead = DeadLetters(
        EventProducer(kafka_bootstrap, topic_prefix=topic_prefix), consumer="roundtrip"
    )
    group = f"roundtrip-{uuid.uuid4().hex}"
    with EventConsumer(
        kafka_bootstrap, group, ALL_TOPICS, dead_letters=dead, prefix=topic_prefix
    ) as consumer:
        deadline = time.monotonic() + 120
        while (
            sum(map(len, received.values())) < PER_TYPE * len(SAMPLERS) or len(ours) < len(bad)
        ) and time.monotonic() < deadline:
            for record in consumer.poll(10_000, 0.5):
                event = record.event
                if isinstance(event, DeadLetter) and event.consumer == "roundtrip":
                    ours.append(event)
                else:
                    received[type(event)].append(event)
            consumer.commit()

    for event_type, events in sent.items():
        got = received[event_type]
        assert len(got) == PER_TYPE, event_type.__name__
        # Every field equal: compare the canonical encodings as multisets (order is per partition
        # only).
        assert sorted(map(encode, got)) == sorted(map(encode, events)), event_type.__name__
    assert len(ours) == len(bad) == 100
    assert Counter(letter.kind for letter in ours) == dict.fromkeys(MALFORMED_RECORDS, BAD_EACH)
    assert dead.counts == Counter(letter.kind for letter in ours)
    assert sorted(letter.value for letter in ours) == sorted(value for _, value in bad)
    assert {letter.source_topic for letter in ours} == {OUTCOMES.full_name(topic_prefix)}
    assert all(letter.reason for letter in ours)


def test_records_keep_their_key_and_per_key_order(kafka_bootstrap, topic_prefix):
    events = list(
        sample_events(
            next(t for t in SAMPLERS if topic_for(t).name == "agent-feedback"), 2000, seed=5
        )
    )
    with EventProducer(kafka_bootstrap, topic_prefix=topic_prefix) as producer:
        for event in events:
            producer.send(event)
    dead = DeadLetters(EventProducer(kafka_bootstrap, topic_prefix=topic_prefix), consumer="order")
    got = []
    topic = topic_for(events[0])
    with EventConsumer(
        kafka_bootstrap,
        f"order-{uuid.uuid4().hex}",
        [topic],
        dead_letters=dead,
        prefix=topic_prefix,
    ) as consumer:
        deadline = time.monotonic() + 120
        while len(got) < len(events) and time.monotonic() < deadline:
            got.extend(consumer.poll(5000, 0.5))
    assert all(record.key == record.event.session_id.encode() for record in got)
    by_session_sent = defaultdict(list)
    for event in events:
        by_session_sent[event.session_id].append(event.event_id)
    by_session_got = defaultdict(list)
    for record in got:
        by_session_got[record.event.session_id].append(record.event.event_id)
    assert by_session_got == by_session_sent


def test_the_lag_gauge_is_what_is_left_to_read(kafka_bootstrap, topic_prefix):
    """record_lag uses the watermarks of the last fetch (no blocking broker query): exact after a
    read."""
    from prometheus_client import REGISTRY

    from adaptloop.streams.metrics import record_lag

    with EventProducer(kafka_bootstrap, topic_prefix=topic_prefix) as producer:
        for event in sample_events(OutcomeEvent, 50, seed=12):
            producer.send(event, partition=0)
    dead = DeadLetters(EventProducer(kafka_bootstrap, topic_prefix=topic_prefix), consumer="lag")
    name = OUTCOMES.full_name(topic_prefix)
    with EventConsumer(
        kafka_bootstrap,
        f"lag-{uuid.uuid4().hex}",
        [OUTCOMES],
        dead_letters=dead,
        prefix=topic_prefix,
    ) as consumer:
        deadline, read = time.monotonic() + 120, 0
        while read < 20 and time.monotonic() < deadline:
            read += len(consumer.poll(20 - read, 0.5))
        assert read == 20
        record_lag("test", consumer.kafka)
    lag = REGISTRY.get_sample_value(
        "adaptloop_consumer_lag", {"role": "test", "topic": name, "partition": "0"}
    )
    assert lag == 30
