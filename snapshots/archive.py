"""The Parquet archive of every event topic: atomic, append-only files that say which offsets they hold.

Layout::

    <root>/topic=<topic>/date=<YYYY-MM-DD>/p<partition>-<first offset>-<last offset>.parquet

A file holds a contiguous run of one partition's records (its date is the broker
date of its first record). It is written under a temporary name and renamed, so a
reader never sees half a file. The archive is its own checkpoint: a writer that
restarts resumes each partition after the highest offset already on disk, so a
batch replayed after a crash adds no duplicate and leaves no gap.

>>> import tempfile
>>> from adaptloop.schemas.topics import OUTCOMES
>>> archive = ParquetArchive(Path(tempfile.mkdtemp()))
>>> good = b'{"decision_id": "d1", "label": true, "source": "s"}'
>>> archive.write(OUTCOMES, "outcomes", 0, [RawRecord(0, 0, 1767225600000, b"d1", good)]).name
'p000-000000000000-000000000000.parquet'
>>> archive.next_offsets("outcomes")
{0: 1}
>>> archive.write(OUTCOMES, "outcomes", 0, [RawRecord(0, 0, 1767225600000, b"d1", good)]) is None  # already there
True
>>> count_archived(archive.root, "outcomes", "label AND source = ?", ["s"])
1
"""

from __future__ import annotations

import itertools
import logging
import os
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pyarrow.parquet as pq

from adaptloop.schemas.errors import StorageError
from adaptloop.schemas.topics import Topic
from adaptloop.snapshots.columns import RawRecord, to_table

log = logging.getLogger(__name__)

_FILE = re.compile(r"^p(\d+)-(\d+)-(\d+)\.parquet$")
TEMP_SUFFIX = ".tmp"
UNTRUSTED_SUFFIX = ".untrusted"


def topic_dir(root: Path, topic_name: str) -> Path:
    return root / f"topic={topic_name}"


def topic_glob(root: Path, topic_name: str) -> str:
    """The glob of every archived file of a topic (what DuckDB's ``read_parquet`` takes)."""
    return str(topic_dir(root, topic_name) / "date=*" / "*.parquet")


def count_archived(root: Path, topic_name: str, where: str = "true", params: Sequence[object] = ()) -> int:
    """How many archived records of a topic match ``where`` (SQL over its columns, written by the caller; values
    go in ``params``, one per ``?``); 0 before its first file.

    It queries through a connection of its own: DuckDB's default connection is one per process, shared by
    every thread and caller, and a result left half-read on it fails the next query there.
    """
    if not any(topic_dir(root, topic_name).glob("date=*/*.parquet")):
        return 0
    with duckdb.connect() as db:
        row = db.execute(
            f"SELECT count(*) FROM read_parquet(?, union_by_name = true) WHERE {where}",
            [topic_glob(root, topic_name), *params],
        ).fetchone()
    return int(row[0]) if row else 0


class ParquetArchive:
    """Append-only Parquet files per topic, partition and date under ``root``."""

    def __init__(self, root: Path, compression: str = "zstd") -> None:
        self.root = root
        self.compression = compression
        self._next: dict[str, dict[int, int]] = {}

    def files(self, topic_name: str) -> list[Path]:
        return sorted(topic_dir(self.root, topic_name).glob("date=*/*.parquet"))

    def next_offsets(self, topic_name: str) -> dict[int, int]:
        """Per partition, the offset after the last one archived (read from the file names once)."""
        if topic_name not in self._next:
            found: dict[int, int] = {}
            for path in self.files(topic_name):
                match = _FILE.match(path.name)
                if match:
                    partition, last = int(match[1]), int(match[3])
                    found[partition] = max(found.get(partition, 0), last + 1)
            self._next[topic_name] = found
        return self._next[topic_name]

    def resume(self, topic_name: str, partition: int, start: int) -> list[Path]:
        """Archive ``partition`` again from offset ``start``: files holding offsets from ``start`` on are set
        aside (renamed ``*.untrusted``, out of every query) and their records will be written again; return
        them. The start comes from what the archiver committed to Kafka, not from file names, which anyone who
        can write a file here could forge."""
        aside = []
        for path in self.files(topic_name):
            match = _FILE.match(path.name)
            if match and int(match[1]) == partition and int(match[3]) >= start:
                target = path.with_name(path.name + UNTRUSTED_SUFFIX)
                os.replace(path, target)
                aside.append(target)
        self.next_offsets(topic_name)[partition] = start
        return aside

    def remove_partial_files(self) -> int:
        """Delete temporary files a crashed writer left behind; return how many."""
        leftovers = list(self.root.glob(f"topic=*/date=*/*{TEMP_SUFFIX}"))
        for path in leftovers:
            path.unlink(missing_ok=True)
        return len(leftovers)

    def write(self, topic: Topic, topic_name: str, partition: int, records: Sequence[RawRecord]) -> Path | None:
        """Archive one partition's records (in offset order) as one file; skip what is already archived.

        Returns the file written, or None if every record was already there.
        """
        start = self.next_offsets(topic_name).get(partition, 0)
        fresh = [record for record in records if record.offset >= start]
        if not fresh:
            return None
        first, last = fresh[0].offset, fresh[-1].offset
        if any(b.offset <= a.offset for a, b in itertools.pairwise(fresh)):
            raise StorageError(f"{topic_name}[{partition}]: records must come in increasing offset order")
        stamp = fresh[0].timestamp_ms
        day = datetime.fromtimestamp(stamp / 1000 if stamp is not None else 0, tz=UTC).date().isoformat()
        path = topic_dir(self.root, topic_name) / f"date={day}" / f"p{partition:03d}-{first:012d}-{last:012d}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = path.with_name(path.name + TEMP_SUFFIX)
        pq.write_table(to_table(topic, topic_name, fresh), temp, compression=self.compression)
        with open(temp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(temp, path)
        self.next_offsets(topic_name)[partition] = last + 1
        return path
