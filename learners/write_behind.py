"""Writes that finish behind the caller: one writer thread, in the order they were asked for.

A learner's checkpoint is two files written with ``fsync`` (the model's bytes, then the checkpoint
that names them), 2-30 ms on a local disk and more on an object store, during which the learner
would wait with nothing to do. The bytes are made on the learner's thread (so they are exactly the
state at the example checkpointed); only their writing waits here, while the learner goes on. The
waits release the GIL, so on two cores the learning and the writing overlap.

>>> behind = WriteBehind()
>>> done = []
>>> behind.submit(lambda: done.append(1)); behind.submit(lambda: done.append(2))
>>> behind.wait(); done
[1, 2]
>>> def broken() -> None:
...     raise OSError("disk full")
>>> behind.submit(broken); behind.submit(lambda: done.append(3))
>>> behind.wait()
Traceback (most recent call last):
...
OSError: disk full
>>> done  # not written after a failed write
[1, 2]
>>> behind.close()
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor


class WriteBehind:
    """A writer thread and the writes queued on it; :meth:`wait` returns once they are all done,
    and raises the first one's error."""

    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="adaptloop-writer")
        self._pending: list[Future[None]] = []
        self._writer: int | None = None  # the writer thread's ident, once it ran a write
        # A write failed: those queued after it are not run (a checkpoint must never name model
        # bytes that were not written), until :meth:`wait` has raised its error.
        self._failed: BaseException | None = None

    def submit(self, write: Callable[[], None]) -> None:
        """Queue ``write`` after those already queued."""
        self._pending.append(self._executor.submit(self._run, write))

    def _run(self, write: Callable[[], None]) -> None:
        self._writer = threading.get_ident()
        if self._failed is not None:
            raise self._failed
        try:
            write()
        except BaseException as error:
            self._failed = error
            raise

    @property
    def pending(self) -> bool:
        """Whether writes are queued or running."""
        return bool(self._pending)

    def on_writer_thread(self) -> bool:
        return threading.get_ident() == self._writer

    def wait(self) -> None:
        """Wait for every queued write; raise the first one's error (those after it did not
        run)."""
        pending, self._pending = self._pending, []
        for future in pending:
            future.exception()
        error, self._failed = self._failed, None
        if error is not None:
            raise error

    def close(self) -> None:
        """Wait for the queued writes (their errors are the caller's to have seen) and stop the
        thread."""
        self._executor.shutdown(wait=True)
