"""Which record of a model's partition of model-updates a ModelClient serves (``NewestVersion``),
without Kafka: the highest sequence wins whatever the read order, then the later offset; a version
that does not load gives way to the next newest; records on another partition, of another model or
unreadable never serve."""

from __future__ import annotations

import logging

import pytest

from adaptloop.schemas import ModelVersion
from adaptloop.streams.model_client import CATCH_UP_CANDIDATES, NewestVersion
from adaptloop.streams.versions import home_partition

PARTITIONS = 3
HOME = home_partition("m", PARTITIONS)


def version(
    sequence: int | None, name: str | None = None, *, model: str = "m", servable: bool = True
) -> ModelVersion:
    return ModelVersion(
        model=model,
        version=name or f"{sequence or 0:016x}",
        examples_seen=10,
        sha256="ab" * 32,
        uri="u",
        size_bytes=1,
        sequence=sequence,
        servable=servable,
    )


def raw(record: ModelVersion) -> bytes:
    return record.model_dump_json().encode()


class Serving:
    """A stand-in for ModelClient's swap: records what it served, refuses the versions named
    broken."""

    def __init__(self, broken: set[str] = frozenset()) -> None:  # type: ignore[assignment]
        self.broken, self.served, self.tried = broken, [], []

    def __call__(self, record: ModelVersion) -> None:
        self.tried.append(record.version)
        if record.version in self.broken:
            raise ValueError("unsigned")
        self.served.append((record.version, record.sequence, record.reason))


def caught_up_on(records: list[ModelVersion], serving: Serving) -> NewestVersion:
    newest = NewestVersion("m", PARTITIONS, serve=serving)
    for offset, record in enumerate(records):
        newest.read(HOME, offset, raw(record))
    assert not newest.ready.is_set()  # nothing serves before the history's end
    newest.caught_up()
    return newest


def test_the_highest_sequence_serves_whatever_the_read_order_and_only_it_is_loaded():
    serving = Serving()
    newest = caught_up_on([version(s) for s in (2, 5, 3, 1, 4)], serving)
    assert serving.served == [(f"{5:016x}", 5, "checkpoint")]
    assert newest.latest is not None and newest.latest.sequence == 5 and newest.ready.is_set()


def test_the_same_sequence_read_later_wins_and_unnumbered_records_are_older_than_numbered_ones():
    serving = Serving()
    republished = version(3, "cccccccccccccccc").model_copy(update={"reason": "rollback"})
    caught_up_on(
        [version(3, "aaaaaaaaaaaaaaaa"), republished, version(None, "dddddddddddddddd")], serving
    )
    assert serving.served == [("cccccccccccccccc", 3, "rollback")]
    among_unnumbered = Serving()
    caught_up_on(
        [version(None, "aaaaaaaaaaaaaaaa"), version(None, "bbbbbbbbbbbbbbbb")], among_unnumbered
    )
    assert among_unnumbered.served == [("bbbbbbbbbbbbbbbb", None, "checkpoint")]


def test_a_version_that_does_not_load_gives_way_to_the_next_newest(caplog):
    serving = Serving(broken={f"{4:016x}", f"{3:016x}"})
    with caplog.at_level(logging.ERROR):
        newest = caught_up_on([version(s) for s in (1, 2, 3, 4)], serving)
    assert serving.tried == [f"{4:016x}", f"{3:016x}", f"{2:016x}"]
    assert serving.served == [(f"{2:016x}", 2, "checkpoint")]
    assert newest.latest is not None and newest.latest.sequence == 2
    assert caplog.text.count("cannot load m version") == 2


def test_catching_up_tries_only_the_newest_candidates_however_long_the_history():
    records = [version(s) for s in range(1, 201)]
    serving = Serving(broken={record.version for record in records})  # none loads
    newest = caught_up_on(records, serving)
    # the newest first, and no more than twice the candidates: the history is cut to them as it
    # grows
    assert CATCH_UP_CANDIDATES <= len(serving.tried) <= 2 * CATCH_UP_CANDIDATES
    assert serving.tried == [f"{s:016x}" for s in range(200, 200 - len(serving.tried), -1)]
    assert newest.latest is None and not newest.ready.is_set()


def test_after_catching_up_a_newer_record_serves_and_an_older_one_is_ignored(caplog):
    serving = Serving()
    newest = caught_up_on([version(2)], serving)
    with caplog.at_level(logging.WARNING):
        newest.read(HOME, 10, raw(version(1)))
        newest.read(HOME, 11, raw(version(4)))
        newest.read(HOME, 12, raw(version(3)))
    assert [sequence for _, sequence, _ in serving.served] == [2, 4]
    assert newest.latest is not None and newest.latest.sequence == 4
    assert caplog.text.count("ignored m version") == 2


def test_records_elsewhere_of_other_models_or_unreadable_never_serve(caplog):
    serving = Serving()
    elsewhere = (HOME + 1) % PARTITIONS
    with caplog.at_level(logging.WARNING):
        newest = NewestVersion("m", PARTITIONS, serve=serving)
        newest.read(HOME, 0, raw(version(1)))
        newest.read(elsewhere, 0, raw(version(9)))  # not where the model's learner writes
        # another model's record under this key
        newest.read(HOME, 1, raw(version(8, model="other")))
        newest.read(HOME, 2, b"{not json")
        newest.read(HOME, 3, None)  # a tombstone
        newest.caught_up()
        newest.read(elsewhere, 5, raw(version(7)))
    assert serving.served == [(f"{1:016x}", 1, "checkpoint")]
    assert "ignored a record of model m on partition" in caplog.text
    assert caplog.text.count("cannot read the m record") == 3


def test_a_version_that_may_not_serve_yet_is_the_latest_but_is_not_served():
    serving = Serving()
    newest = caught_up_on([version(1), version(2, servable=False)], serving)
    # the newest may not serve: it is the model's latest (its contract) alone
    assert serving.served == []
    assert newest.latest is not None and newest.latest.sequence == 2 and newest.ready.is_set()
    newest.read(HOME, 5, raw(version(3)))
    assert [sequence for _, sequence, _ in serving.served] == [3]


def test_a_model_with_no_record_yet_is_ready_with_its_first_one():
    serving = Serving()
    newest = caught_up_on([], serving)
    assert not newest.ready.is_set()
    newest.read(HOME, 0, raw(version(1)))
    assert newest.ready.is_set() and [sequence for _, sequence, _ in serving.served] == [1]


def test_nothing_is_taken_after_stop():
    serving = Serving()
    newest = caught_up_on([version(1)], serving)
    newest.stop()
    newest.read(HOME, 1, raw(version(2)))
    assert [sequence for _, sequence, _ in serving.served] == [1]


@pytest.mark.parametrize("again", [1, 2])
def test_catching_up_again_changes_nothing(again):
    serving = Serving()
    newest = caught_up_on([version(1), version(2)], serving)
    for _ in range(again):
        newest.caught_up()
    assert [sequence for _, sequence, _ in serving.served] == [2]
