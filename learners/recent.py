"""The decision ids a learner learned last: duplicates are recognised, and checkpoints stay
cheap."""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Iterable, Iterator

import orjson

RECENT_IDS = 100_000


class RecentIds:
    """The last ``limit`` ids added, oldest first, with membership in O(1).

    It is checkpointed with every model version (every 1,000 examples by default), and pickling
    100,000 ids one by one takes 30-50 ms: a third of a learner's time. So a pickle holds byte
    chunks: the ids added since the previous pickle are serialised once, into a new chunk (3 ms),
    and a chunk goes when all of its ids are out of the window.

    >>> recent = RecentIds(limit=3)
    >>> for decision_id in "abcd":
    ...     recent.add(decision_id)
    >>> "a" in recent, "d" in recent, list(recent)
    (False, True, ['b', 'c', 'd'])
    >>> import pickle
    >>> list(pickle.loads(pickle.dumps(recent)))
    ['b', 'c', 'd']
    """

    def __init__(self, ids: Iterable[str] = (), limit: int = RECENT_IDS) -> None:
        self.limit = limit
        self._ids: OrderedDict[str, None] = OrderedDict()
        # (how many ids, their JSON list), oldest first
        self._chunks: deque[tuple[int, bytes]] = deque()
        self._in_chunks = 0  # ids in the chunks, those already out of the window included
        self._fresh: list[str] = []  # added since the last pickle
        for decision_id in ids:
            self.add(decision_id)

    def add(self, decision_id: str) -> None:
        """Remember ``decision_id`` (already remembered: nothing changes); forget the oldest beyond
        ``limit``."""
        ids = self._ids
        if decision_id in ids:
            return
        ids[decision_id] = None
        self._fresh.append(decision_id)
        if len(ids) > self.limit:
            ids.popitem(last=False)

    def __contains__(self, decision_id: object) -> bool:
        return decision_id in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def __iter__(self) -> Iterator[str]:
        return iter(self._ids)

    def __getstate__(self) -> dict[str, object]:
        # The window is always the last len(self) ids added (each add appends; the oldest goes
        # first), so the chunks, in order, end with it.
        if self._fresh:
            self._chunks.append((len(self._fresh), orjson.dumps(self._fresh)))
            self._in_chunks += len(self._fresh)
            self._fresh = []
        while self._chunks and self._in_chunks - self._chunks[0][0] >= len(self._ids):
            self._in_chunks -= self._chunks.popleft()[0]
        return {"limit": self.limit, "chunks": [chunk for _, chunk in self._chunks]}

    def __setstate__(self, state: dict[str, object]) -> None:
        self.limit = state["limit"]  # type: ignore[assignment]
        chunks = [orjson.loads(chunk) for chunk in state["chunks"]]  # type: ignore[attr-defined]
        self._chunks = deque((len(ids), chunk) for ids, chunk in zip(chunks, state["chunks"]))  # type: ignore[call-overload]
        self._in_chunks = sum(len(ids) for ids in chunks)
        everything = [decision_id for ids in chunks for decision_id in ids]
        self._ids = OrderedDict.fromkeys(everything[max(0, len(everything) - self.limit) :])
        self._fresh = []
