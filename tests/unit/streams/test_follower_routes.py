"""Which reader of a process's shared follower of model-updates gets which record (``Routes``),
without Kafka: each reader its own key's records, each once, a late reader the partition's history
from its start."""

from __future__ import annotations

from adaptloop.streams.follower import Routes, Subscription


class Reader:
    def read(self, partition: int, offset: int, value: bytes | None) -> None:
        raise AssertionError("Routes only says whom to hand a record to")

    def caught_up(self) -> None:
        raise AssertionError("Routes only says who is caught up")


def handed(
    routes: Routes, records: list[tuple[int, int, bytes, bytes]]
) -> list[tuple[bytes, int, int]]:
    return [(s.key, partition, offset) for s, (partition, offset, _) in routes.records(records)]


def test_each_reader_gets_its_own_keys_records_once_its_partition_is_read_from_its_start():
    routes = Routes()
    a, b = routes.add(Subscription(b"a", 0, Reader())), routes.add(Subscription(b"b", 1, Reader()))
    history = [(0, 0, b"a", b"1"), (0, 1, b"c", b"1"), (1, 0, b"b", b"1"), (0, 2, b"a", b"2")]
    # read before their partitions were read from the start: not theirs
    assert handed(routes, history) == []
    routes.started([0])
    assert handed(routes, history) == [(b"a", 0, 0), (b"a", 0, 2)]
    routes.started([1])
    assert handed(routes, history) == [(b"b", 1, 0)]  # a has its records already
    assert routes.ended(0) == [a] and routes.ended(0) == [] and routes.ended(1) == [b]


def test_a_late_reader_reads_the_history_again_and_the_others_see_nothing_twice():
    routes = Routes()
    first = routes.add(Subscription(b"m", 0, Reader()))
    routes.started([0])
    assert handed(routes, [(0, o, b"m", b"v") for o in range(3)]) == [
        (b"m", 0, o) for o in range(3)
    ]
    assert routes.ended(0) == [first]
    second, third = (
        routes.add(Subscription(b"m", 0, Reader())),
        routes.add(Subscription(b"n", 0, Reader())),
    )
    assert handed(routes, [(0, 3, b"m", b"v")]) == [(b"m", 0, 3)]  # live, to the first only
    routes.started([0])
    again = [
        (0, 0, b"m", b"v"),
        (0, 1, b"n", b"v"),
        (0, 2, b"m", b"v"),
        (0, 3, b"m", b"v"),
        (0, 4, b"m", b"v"),
    ]
    got = [(s, offset) for s, (_, offset, _) in routes.records(again)]
    assert got == [(second, 0), (third, 1), (second, 2), (second, 3), (first, 4), (second, 4)]
    assert routes.ended(0) == [second, third]


def test_a_record_of_the_key_on_another_read_partition_is_handed_to_its_reader_to_judge():
    """The reader (NewestVersion) ignores a record of its model off its own partition: it must see
    it to say so."""
    routes = Routes()
    routes.add(Subscription(b"m", 0, Reader()))
    routes.add(Subscription(b"n", 1, Reader()))
    routes.started([0, 1])
    assert handed(routes, [(0, 0, b"m", b"v"), (1, 0, b"m", b"stray"), (1, 1, b"m", b"stray")]) == [
        (b"m", 0, 0),
        (b"m", 1, 0),
        (b"m", 1, 1),
    ]


def test_the_last_reader_of_a_partition_leaving_says_so_and_a_removed_reader_gets_nothing():
    routes = Routes()
    a, b = routes.add(Subscription(b"a", 0, Reader())), routes.add(Subscription(b"b", 0, Reader()))
    routes.started([0])
    assert routes.remove(a) is False  # b still reads partition 0
    assert handed(routes, [(0, 0, b"a", b"v"), (0, 1, b"b", b"v")]) == [(b"b", 0, 1)]
    assert routes.remove(b) is True and routes.remove(b) is False
    assert handed(routes, [(0, 2, b"b", b"v")]) == [] and routes.ended(0) == []
