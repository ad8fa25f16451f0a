"""Reading a topic's partitions and ends: a leader not serving yet is asked again, other errors raise."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from adaptloop.streams.versions import partitions_of, watermarks


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


class _Metadata:
    """What ``list_topics`` answers: topics by name, each with its partitions or its error."""

    def __init__(self, name: str, partitions: list[int], error: int | None) -> None:
        topic = type("TopicMetadata", (), {})()
        topic.partitions = dict.fromkeys(partitions)
        topic.error = None if error is None else KafkaError(error)
        self.topics = {name: topic}


class _Cluster:
    def __init__(self, answers: list[tuple[list[int], int | None]]) -> None:
        self.answers, self.asked = answers, 0

    def list_topics(self, name: str, timeout: float) -> _Metadata:
        self.asked += 1
        partitions, error = self.answers[min(self.asked, len(self.answers)) - 1]
        return _Metadata(name, partitions, error)


def test_a_topic_whose_leaders_are_being_chosen_is_asked_again_and_a_refusal_is_not_an_empty_topic():
    choosing = _Cluster([([], KafkaError.LEADER_NOT_AVAILABLE)] * 2 + [([2, 0, 1], None)])
    assert partitions_of(choosing, "t", timeout=10) == [0, 1, 2] and choosing.asked == 3  # type: ignore[arg-type]

    assert partitions_of(_Cluster([([], KafkaError.UNKNOWN_TOPIC_OR_PART)]), "t", timeout=10) is None  # type: ignore[arg-type]

    refused = _Cluster([([], KafkaError.TOPIC_AUTHORIZATION_FAILED)])
    with pytest.raises(KafkaException) as raised:
        partitions_of(refused, "t", timeout=10)  # type: ignore[arg-type]
    assert raised.value.args[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED and refused.asked == 1
