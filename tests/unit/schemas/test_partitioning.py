"""The join finds a decision where Java's default partitioner puts its decision_id: murmur2 as Kafka
computes it."""

from __future__ import annotations

import ctypes

import pytest

from adaptloop.schemas.topics import murmur2, partition_for


# Kafka's own UtilsTest vectors (signed 32-bit, as Java prints them).
@pytest.mark.parametrize(
    ("key", "java"),
    [
        (b"21", -973932308),
        (b"foobar", -790332482),
        (b"a-little-bit-long-string", -985981536),
        (b"a-little-bit-longer-string", -1486304829),
        (b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971),
        (b"abc", 479470107),
    ],
)
def test_murmur2_is_javas(key: bytes, java: int) -> None:
    assert ctypes.c_int32(murmur2(key)).value == java


# Partitions among 1,000 as the Java client's partitioner gives them (kafka-python's compatibility
# vectors).
@pytest.mark.parametrize(
    ("key", "partition"),
    [(b"", 681), (b"a", 524), (b"ab", 434), (b"abc", 107), (b"123456789", 566), (b"\x00 ", 742)],
)
def test_partition_for_is_javas_default_partitioner(key: bytes, partition: int) -> None:
    assert partition_for(key, 1000) == partition
