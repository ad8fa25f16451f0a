"""A transactional producer whose ``send_offsets_to_transaction`` never returns (librdkafka waits for
a group coordinator it lost track of after a single broker restarted: confluentinc/librdkafka#5456):
the commit raises an outage in bounded time, instead of holding its role for ever."""

from __future__ import annotations

import threading
import time

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from adaptloop.schemas.errors import TimedOut
from adaptloop.streams import producer as sdk
from adaptloop.streams.outage import classify


class FakeTransactions:
    """The transactional calls of a librdkafka producer; ``send_offsets`` says what sending the
    offsets does each time it is called (an exception to raise, or ``"hang"``)."""

    def __init__(self, *send_offsets: BaseException | str | None) -> None:
        self.send_offsets = list(send_offsets)
        self.calls: list[str] = []
        self.release = threading.Event()

    def begin_transaction(self) -> None:
        self.calls.append("begin")

    def send_offsets_to_transaction(self, offsets, metadata, timeout) -> None:
        self.calls.append("send_offsets")
        what = self.send_offsets.pop(0)
        if what == "hang":
            self.release.wait()
        elif isinstance(what, BaseException):
            raise what

    def commit_transaction(self, timeout) -> None:
        self.calls.append("commit")

    def abort_transaction(self, timeout) -> None:
        self.calls.append("abort")  # librdkafka would refuse it while another call is under way

    def flush(self, timeout=None) -> int:
        return 0

    def __len__(self) -> int:
        return 0


def producer_with(fake: FakeTransactions) -> sdk.EventProducer:
    producer = sdk.EventProducer("127.0.0.1:9")  # (never connects: its client is replaced)
    producer._producer = fake
    return producer


OFFSETS = [TopicPartition("loop.predictions", 0, 42)]


def test_offsets_that_never_reach_the_transaction_are_an_outage_soon_after_the_timeout(
    monkeypatch,
):
    monkeypatch.setattr(sdk, "STUCK_CALL_GRACE_SECONDS", 0.5)
    fake = FakeTransactions("hang")
    producer = producer_with(fake)
    started = time.monotonic()
    try:
        with pytest.raises(TimedOut, match="send_offsets_to_transaction has not returned") as error:
            producer.commit_transaction(OFFSETS, object(), timeout=1.0)
        assert 1.4 < time.monotonic() - started < 10
        assert classify(error.value) == "outage"  # the worker starts the role again
        assert fake.calls == ["begin", "send_offsets"]  # never committed
        producer.abort_transaction()  # a stuck producer is not asked again: nothing is called
        assert fake.calls == ["begin", "send_offsets"]
    finally:
        fake.release.set()


def test_what_sending_the_offsets_raises_reaches_the_caller_and_retriable_errors_are_retried():
    retriable = KafkaException(
        KafkaError(KafkaError._TIMED_OUT, "no coordinator yet", retriable=True)
    )
    fake = FakeTransactions(retriable, None)
    producer_with(fake).commit_transaction(OFFSETS, object(), timeout=5.0)
    assert fake.calls == ["begin", "send_offsets", "send_offsets", "commit"]

    fatal = KafkaException(KafkaError(KafkaError.INVALID_TXN_STATE, "fenced", fatal=True))
    fake = FakeTransactions(fatal)
    with pytest.raises(KafkaException) as error:
        producer_with(fake).commit_transaction(OFFSETS, object(), timeout=5.0)
    assert error.value is fatal
    assert fake.calls == ["begin", "send_offsets"]
