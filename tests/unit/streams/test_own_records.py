"""``adaptloop status`` shows each served version's own record: the one that first published it."""

from __future__ import annotations

from adaptloop.schemas.system import ModelVersion, VersionReason
from adaptloop.streams.status import own_records


def _record(sequence: int, version: str, reason: VersionReason, examples: int) -> ModelVersion:
    return ModelVersion(
        model="m",
        version=version * 16,
        sequence=sequence,
        reason=reason,
        examples_seen=examples,
        sha256="ab" * 32,
        uri="u",
        size_bytes=1,
    )


LEARNED = [_record(1, "a", "initial", 0), _record(2, "b", "checkpoint", 500)]


def test_a_promoted_challengers_version_is_its_promotions_own_record():
    # the default policy's promotion: a version no record published before
    promotion = _record(3, "c", "promotion", 815)
    assert own_records([*LEARNED, promotion], None, "") == {"m": promotion}


def test_a_version_a_rollback_serves_again_is_its_first_record():
    rollback = _record(3, "a", "rollback", 815)
    assert own_records([*LEARNED, rollback], None, "") == {"m": LEARNED[0]}


def test_a_version_promoted_again_is_its_first_record_not_the_later_promotion():
    # the challenger wins (c), the replaced champion wins back (b), then c again
    swaps = [_record(3, "c", "promotion", 815), _record(4, "b", "promotion", 900)]
    again = _record(5, "c", "promotion", 990)
    assert own_records([*LEARNED, *swaps, again], None, "") == {"m": swaps[0]}


def test_a_swap_whose_history_was_compacted_away_has_no_known_record_without_the_archive():
    # the records before it are gone: the version may have been published before them
    promotion = _record(3, "c", "promotion", 815)
    assert own_records([LEARNED[1], promotion], None, "") == {"m": None}
