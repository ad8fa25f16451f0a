"""How a long command shows that it is alive: rich's progress bar on a terminal, a plain line every
few seconds when its output goes to a file or a pipe (where a bar would print nothing until the end,
or escape codes).

>>> import io
>>> from rich.console import Console
>>> out = io.StringIO()
>>> with Steps(Console(file=out), "serving", total=3) as steps:
...     steps.update(completed=3, status="version ab12")
>>> print(out.getvalue().strip())
serving: 0 of 3 (0s)
serving: 3 of 3 (0s) version ab12, done
"""

from __future__ import annotations

import threading
import time
from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

EVERY_SECONDS = 5.0
"""A plain line at most this often: enough to see that a command in a CI log or under ``nohup`` is
not stuck."""


class Steps:
    """The progress of one long step (``description``), counted to ``total`` if it is known.

    Each :meth:`update` sets the count and a status text; on a terminal the bar follows at once,
    elsewhere a line is printed when the step starts, then every ``every`` seconds (from a thread of
    its own, so a step that waits on one long call is seen alive too), and when it ends.
    """

    def __init__(
        self,
        console: Console,
        description: str,
        total: int | None = None,
        every: float = EVERY_SECONDS,
    ):
        self.console, self.description, self.total, self.every = console, description, total, every
        self.completed, self.status = 0, ""
        self._bar: Progress | None = None
        self._task: TaskID | None = None
        self._started = self._printed = time.monotonic()
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None

    def __enter__(self) -> Steps:
        self._started = time.monotonic()
        if self.console.is_terminal:
            self._bar = Progress(
                SpinnerColumn(),
                TextColumn("{task.description}", markup=False),
                BarColumn(),
                *([MofNCompleteColumn()] if self.total is not None else []),
                TimeElapsedColumn(),
                TextColumn("{task.fields[status]}", markup=False),
                console=self.console,
                transient=True,
            )
            self._bar.start()
            self._task = self._bar.add_task(self.description, total=self.total, status="")
        else:
            self._line()
            self._ticker = threading.Thread(target=self._tick, name="progress", daemon=True)
            self._ticker.start()
        return self

    def _tick(self) -> None:
        while not self._stop.wait(min(1.0, self.every)):
            if time.monotonic() - self._printed >= self.every:
                self._line()

    def update(
        self, completed: int | None = None, status: str | None = None, total: int | None = None
    ) -> None:
        """Set the count done so far, the status text (data: printed as it is) and/or the total,
        once known."""
        if completed is not None:
            self.completed = completed
        if status is not None:
            self.status = status
        if total is not None:
            self.total = total
        if self._bar is not None and self._task is not None:
            self._bar.update(
                self._task, completed=self.completed, status=self.status, total=self.total
            )

    def _line(self, end: str = "") -> None:
        self._printed = now = time.monotonic()
        count = "" if self.total is None else f"{self.completed:,} of {self.total:,} "
        status = ", ".join(part for part in (self.status, end) if part)
        line = (
            f"{self.description}: "
            f"{count}({now - self._started:.0f}s){f' {status}' if status else ''}"
        )
        self.console.print(line, markup=False, highlight=False, soft_wrap=True)

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join()
        if self._bar is not None:
            self._bar.stop()
        elif kind is None:
            self._line("done")


class StepsInTurn:
    """One :class:`Steps` after another, as a long function reports them: called ``(step, done,
    total)``, it ends the step before when a new one starts. Use it as a context manager, so the
    last step ends too.

    >>> import io
    >>> from rich.console import Console
    >>> out = io.StringIO()
    >>> with StepsInTurn(Console(file=out)) as report:
    ...     report("sending", 0, 2); report("sending", 2, 2); report("archiving", 0, None)
    >>> print(out.getvalue().strip())
    sending: 0 of 2 (0s)
    sending: 2 of 2 (0s) done
    archiving: (0s)
    archiving: (0s) done
    """

    def __init__(self, console: Console, every: float = EVERY_SECONDS) -> None:
        self.console, self.every = console, every
        self._current: Steps | None = None

    def __call__(self, step: str, done: int, total: int | None) -> None:
        if self._current is None or self._current.description != step:
            self.close()
            self._current = Steps(self.console, step, total, self.every).__enter__()
        self._current.update(completed=done, total=total)

    def close(self) -> None:
        if self._current is not None:
            self._current.__exit__(None, None, None)
            self._current = None

    def __enter__(self) -> StepsInTurn:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
