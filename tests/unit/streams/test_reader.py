"""The short-lived reader's own logic, against a stand-in for the broker: where a read starts, when
it has reached the end, what counts as a topic that is not there, and which errors are asked
again."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, KafkaError, KafkaException, TopicPartition

from adaptloop.schemas.errors import TimedOut
from adaptloop.streams.connection import KafkaConnection
from adaptloop.streams.reader import Since, TopicReader, partitions_of, unread, watermarks


class _Broker:
    """Answers each partition's watermark query with the errors queued for it, then with its
    offsets."""

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
    assert watermarks(broker, "t", [0, 1, 2], timeout=10) == {0: (0, 7), 1: (3, 3), 2: (1, 40)}
    assert broker.asked == 6


def test_other_errors_and_a_leader_that_never_serves_raise():
    denied = _Broker({0: [KafkaError.TOPIC_AUTHORIZATION_FAILED]}, {0: (0, 1)})
    with pytest.raises(KafkaException) as raised:
        watermarks(denied, "t", [0], timeout=10)
    assert (
        raised.value.args[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED and denied.asked == 1
    )

    stuck = _Broker({0: [KafkaError.NOT_LEADER_FOR_PARTITION] * 1000}, {0: (0, 1)})
    with pytest.raises(KafkaException) as raised:
        watermarks(stuck, "t", [0], timeout=0.5)
    assert (
        raised.value.args[0].code() == KafkaError.NOT_LEADER_FOR_PARTITION
        and 2 <= stuck.asked <= 10
    )


class _TopicMetadata:
    def __init__(self, partitions: list[int], error: int | None) -> None:
        self.partitions = dict.fromkeys(partitions)
        self.error = None if error is None else KafkaError(error)


class _Metadata:
    """What ``list_topics`` answers: topics by name, each with its partitions or its error."""

    def __init__(self, name: str, partitions: list[int], error: int | None) -> None:
        self.topics = {name: _TopicMetadata(partitions, error)}


class _Cluster:
    def __init__(self, answers: list[tuple[list[int], int | None]]) -> None:
        self.answers, self.asked = answers, 0

    def list_topics(self, topic: str | None = None, timeout: float = -1) -> _Metadata:
        self.asked += 1
        partitions, error = self.answers[min(self.asked, len(self.answers)) - 1]
        return _Metadata(topic or "", partitions, error)


def test_a_topic_whose_leaders_are_being_chosen_is_asked_again_and_a_refusal_is_not_an_empty_topic():
    choosing = _Cluster([([], KafkaError.LEADER_NOT_AVAILABLE)] * 2 + [([2, 0, 1], None)])
    assert partitions_of(choosing, "t", timeout=10) == [0, 1, 2] and choosing.asked == 3  # type: ignore[arg-type]

    assert (
        partitions_of(_Cluster([([], KafkaError.UNKNOWN_TOPIC_OR_PART)]), "t", timeout=10) is None
    )  # type: ignore[arg-type]

    refused = _Cluster([([], KafkaError.TOPIC_AUTHORIZATION_FAILED)])
    with pytest.raises(KafkaException) as raised:
        partitions_of(refused, "t", timeout=10)  # type: ignore[arg-type]
    assert (
        raised.value.args[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED and refused.asked == 1
    )


def test_a_read_has_something_to_read_where_its_start_is_before_the_partitions_end():
    starts = {0: OFFSET_BEGINNING, 1: OFFSET_BEGINNING, 2: 5, 3: 9, 4: OFFSET_END, 5: 0}
    ends = {0: 3, 1: 0, 2: 9, 3: 9, 4: 9, 5: 1}
    assert unread(starts, ends) == {0: 3, 2: 9, 5: 1}


class _Message:
    def __init__(self, partition: int, offset: int, error: KafkaError | None = None) -> None:
        self._partition, self._offset, self._error = partition, offset, error

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def error(self) -> KafkaError | None:
        return self._error

    def value(self) -> bytes:
        return f"{self._partition}@{self._offset}".encode()


class _Log:
    """One topic's partitions as a consumer sees them: the offsets that hold a record (others are
    transaction markers or compacted away), each partition's end, and the offsets of records stamped
    at each time."""

    def __init__(
        self,
        records: dict[int, list[int]],
        ends: dict[int, int],
        *,
        batch: int = 2,
        delay: float = 0.0,
        error: int | None = None,
    ) -> None:
        self.records, self.end, self.batch, self.delay, self.error = (
            records,
            ends,
            batch,
            delay,
            error,
        )
        # partition -> offset of the first record at or after the asked time
        self.stamps: dict[int, int] = {}
        self.positions: dict[int, int] = {}
        self.assigned: list[tuple[int, int]] = []

    def list_topics(self, topic: str | None = None, timeout: float = -1) -> _Metadata:
        return _Metadata(topic or "", list(self.end), self.error)

    def get_watermark_offsets(self, tp: TopicPartition, timeout: float = -1) -> tuple[int, int]:
        return 0, self.end[tp.partition]

    def offsets_for_times(
        self, asked: list[TopicPartition], timeout: float = -1
    ) -> list[TopicPartition]:
        return [
            TopicPartition(tp.topic, tp.partition, self.stamps.get(tp.partition, -1))
            for tp in asked
        ]

    def assign(self, tps: list[TopicPartition]) -> None:
        for tp in tps:
            self.assigned.append((tp.partition, tp.offset))
            start = {OFFSET_BEGINNING: 0, OFFSET_END: self.end[tp.partition]}.get(
                tp.offset, tp.offset
            )
            self.positions[tp.partition] = start

    def consume(self, num_messages: int = 1, timeout: float = -1) -> list[_Message]:
        time.sleep(self.delay)
        found: list[_Message] = []
        for partition, position in self.positions.items():
            due = [o for o in self.records.get(partition, []) if o >= position][: self.batch]
            found += [_Message(partition, offset) for offset in due]
            # Past the last record, the consumer's position moves on over markers to the partition's
            # end.
            self.positions[partition] = due[-1] + 1 if due else max(position, self.end[partition])
        return found

    def position(self, tps: list[TopicPartition]) -> list[TopicPartition]:
        return [
            TopicPartition(tp.topic, tp.partition, self.positions.get(tp.partition, -1001))
            for tp in tps
        ]

    def append(self, partition: int, offset: int) -> None:
        self.records.setdefault(partition, []).append(offset)
        self.end[partition] = offset + 1

    def close(self) -> None:
        pass


@pytest.fixture
def reader_of() -> Iterator:
    readers: list[TopicReader] = []

    def make(log: _Log, **options) -> TopicReader:
        reader = TopicReader(KafkaConnection(bootstrap="127.0.0.1:1"), "t", **options)
        reader._consumer.close()
        reader._consumer = log  # type: ignore[assignment]
        readers.append(reader)
        return reader

    yield make
    for reader in readers:
        reader.close()


def _read(messages) -> list[tuple[int, int]]:
    return sorted((message.partition(), message.offset()) for message in messages)


def test_a_read_to_the_end_stops_at_the_ends_it_started_with_past_markers_and_empty_partitions(
    reader_of,
):
    # Partition 0 ends with a transaction marker at offset 3; partition 1 never held a record.
    log = _Log({0: [0, 1, 2], 1: [], 2: [0, 1]}, {0: 4, 1: 0, 2: 2})
    reader = reader_of(log)
    read = reader.to_end(timeout=5)
    first = next(read)
    log.append(2, 2)  # written after the read started: not part of it
    assert _read([first, *read]) == [(0, 0), (0, 1), (0, 2), (2, 0), (2, 1)]
    assert reader.unfinished == set()
    assert sorted(log.assigned) == [
        (0, OFFSET_BEGINNING),
        (1, OFFSET_BEGINNING),
        (2, OFFSET_BEGINNING),
    ]


def test_a_read_from_the_end_sees_only_what_comes_next(reader_of):
    log = _Log({0: [0, 1], 1: [0]}, {0: 2, 1: 1})
    reader = reader_of(log, start="end")
    assert reader.assign() == {0: 2, 1: 1}
    log.append(1, 1)
    assert list(reader.to_end(timeout=5)) == []
    assert _read(reader.poll(0)) == [(1, 1)]


def test_a_read_since_a_time_starts_at_each_partitions_first_record_since_then(reader_of):
    log = _Log({0: [0, 1, 2, 3], 1: [0, 1], 2: [0]}, {0: 4, 1: 2, 2: 1})
    log.stamps = {0: 2, 1: 1}  # partition 2: no record since
    reader = reader_of(log, start=Since(1_700_000_000.0))
    assert _read(reader.to_end(timeout=5)) == [(0, 2), (0, 3), (1, 1)]
    assert sorted(log.assigned) == [(0, 2), (1, 1), (2, OFFSET_END)]


def test_a_read_from_given_offsets_reads_only_the_partitions_named(reader_of):
    log = _Log({0: [0, 1, 2], 1: [0, 1, 2]}, {0: 3, 1: 3})
    reader = reader_of(log, start={1: 1, 7: 0})  # 7: no such partition
    assert _read(reader.to_end(timeout=5)) == [(1, 1), (1, 2)]
    assert log.assigned == [(1, 1)]


def test_a_partition_skipped_or_left_unread_by_the_deadline_is_unfinished_and_strict_raises(
    reader_of,
):
    def slow() -> _Log:
        return _Log(
            {0: list(range(100)), 1: list(range(100))}, {0: 100, 1: 100}, batch=1, delay=0.05
        )

    reader = reader_of(slow())
    read = reader.to_end(timeout=0.3)
    next(read)
    reader.skip(0)
    assert {message.partition() for message in read} == {1}
    assert reader.unfinished == {1}
    with pytest.raises(
        TimedOut,
        match=r"could not read t to its end within 0s \(partitions "
        r"\[0, 1\]\)",
    ):
        list(reader_of(slow()).to_end(timeout=0.3, strict=True))


def test_no_topic_reads_as_empty_and_a_refused_topic_raises(reader_of):
    missing = reader_of(_Log({}, {}, error=KafkaError.UNKNOWN_TOPIC_OR_PART))
    assert (
        missing.partitions() is None
        and list(missing.to_end(timeout=5)) == []
        and missing.ends() == {}
    )

    refused = reader_of(_Log({0: [0]}, {0: 1}, error=KafkaError.TOPIC_AUTHORIZATION_FAILED))
    with pytest.raises(KafkaException) as raised:
        list(refused.to_end(timeout=5))
    assert raised.value.args[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED


def test_waiting_for_a_topic_that_never_comes_says_what_to_do(reader_of):
    missing = reader_of(_Log({}, {}, error=KafkaError.UNKNOWN_TOPIC_OR_PART))
    with pytest.raises(TimedOut, match="start a worker"):
        missing.wait_for_partitions(0.1, "start a worker")
