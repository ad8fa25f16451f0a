from __future__ import annotations

from adaptloop.schemas import DeadLetter, OutcomeEvent, decode, encode
from adaptloop.schemas.topics import DEAD_LETTERS, OUTCOMES
from adaptloop.streams.deadletter import DeadLetters


class RecordingProducer:
    def __init__(self) -> None:
        self.sent: list = []

    def send(self, event) -> None:
        self.sent.append(event)


def test_good_records_pass_and_bad_ones_become_dead_letters_with_original_bytes():
    producer = RecordingProducer()
    dead = DeadLetters(producer, consumer="test", max_record_bytes=2000)
    good = OutcomeEvent(decision_id="d", label=1, source="s")
    assert dead.decode(OUTCOMES, "p.outcomes", 2, 10, b"d", encode(good)) == good
    assert dead.decode(OUTCOMES, "p.outcomes", 2, 11, b"k", b"\xff\xfe") is None
    assert dead.decode(OUTCOMES, "p.outcomes", 2, 12, None, b"x" * 5000) is None
    first, second = producer.sent
    assert (first.source_topic, first.partition, first.offset, first.key, first.value) == (
        "p.outcomes",
        2,
        11,
        b"k",
        b"\xff\xfe",
    )
    assert first.kind == "malformed" and first.consumer == "test"
    assert second.kind == "too_large" and len(second.value) == 1024 and "truncated" in second.reason
    assert dict(dead.counts) == {"malformed": 1, "too_large": 1}
    # The dead letter itself survives the wire, binary payload included.
    assert decode(DEAD_LETTERS, encode(first)) == first
    assert isinstance(first, DeadLetter)
