"""Reading a topic's ends: a partition whose leader is not serving yet is asked again, other errors raise."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from adaptloop.streams.versions import watermarks


class _Broker:
    """Answers each partition's watermark query with the errors queued for it, then with its offsets."""

    def __init__(self, errors: dict[int, list[int]], offsets: dict[int, tuple[int, int]]) -> None:
        self.errors, self.offsets, self.asked = errors, offsets, 0

    def get_watermark_offsets(self, tp: TopicPartition, timeout: float) -> tuple[int, int]:
        self.asked += 1
        if self.errors.get(tp.partition):
            raise KafkaException(KafkaError(self.errors[tp.partition].pop(0)))
        return self.offsets[tp.partition]


def test_a_partition_without_a_serving_leader_is_asked_again_until_it_answers():
    broker = _Broker(
        {
            0: [KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE],
            2: [KafkaError.NOT_LEADER_FOR_PARTITION],
        },
        {0: (0, 7), 1: (3, 3), 2: (1, 40)},
    )
    assert watermarks(broker, "t", [0, 1, 2], timeout=10) == {0: (0, 7), 1: (3, 3), 2: (1, 40)}  # type: ignore[arg-type]
    assert broker.asked == 6


def test_other_errors_and_a_leader_that_never_serves_raise():
    denied = _Broker({0: [KafkaError.TOPIC_AUTHORIZATION_FAILED]}, {0: (0, 1)})
    with pytest.raises(KafkaException) as raised:
        watermarks(denied, "t", [0], timeout=10)  # type: ignore[arg-type]
    assert raised.value.args[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED and denied.asked == 1

    stuck = _Broker({0: [KafkaError.NOT_LEADER_FOR_PARTITION] * 1000}, {0: (0, 1)})
    with pytest.raises(KafkaException) as raised:
        watermarks(stuck, "t", [0], timeout=0.5)  # type: ignore[arg-type]
    assert raised.value.args[0].code() == KafkaError.NOT_LEADER_FOR_PARTITION and 2 <= stuck.asked <= 10
