"""Long commands show they are alive: a bar on a terminal, a plain line every few seconds in a file
or a pipe."""

from __future__ import annotations

import io
import re
import time

from rich.console import Console

from adaptloop.progress import Steps, StepsInTurn


def _lines(out: io.StringIO) -> list[str]:
    return out.getvalue().splitlines()


def test_a_step_waiting_on_one_long_call_prints_a_line_every_few_seconds_to_a_file():
    out = io.StringIO()
    with Steps(Console(file=out, width=200), "waiting for the worker", every=0.2):
        deadline = time.monotonic() + 60
        while len(_lines(out)) < 4 and time.monotonic() < deadline:  # no update: the ticker prints
            time.sleep(0.05)
    lines = _lines(out)
    assert len(lines) >= 5 and lines[-1].endswith(" done")
    assert all(re.fullmatch(r"waiting for the worker: \(\d+s\)( done)?", line) for line in lines), (
        lines
    )
    assert [int(re.search(r"\((\d+)s\)", line)[1]) for line in lines] == sorted(
        int(re.search(r"\((\d+)s\)", line)[1]) for line in lines
    )


def test_counts_and_status_are_printed_as_they_are_markup_included():
    out = io.StringIO()
    with StepsInTurn(Console(file=out, width=200), every=3600) as report:
        report("sending [/x]", 0, 1250)
        report("sending [/x]", 1250, 1250)
        report("archived", 0, None)
    assert _lines(out) == [
        "sending [/x]: 0 of 1,250 (0s)",
        "sending [/x]: 1,250 of 1,250 (0s) done",
        "archived: (0s)",
        "archived: (0s) done",
    ]


def test_on_a_terminal_the_bar_prints_no_lines_of_its_own():
    out = io.StringIO()
    with Steps(
        Console(file=out, force_terminal=True, width=100), "serving", total=10, every=0.1
    ) as steps:
        steps.update(completed=5, status="version ab12")
        time.sleep(0.3)
    assert "serving: " not in out.getvalue()  # the bar (transient) and no plain line
