"""The Parquet archive of every event topic: atomic, append-only files that say which offsets they
hold.

Layout, in a directory or an object store (``s3://bucket/archive``) that workers and analysts on
other hosts share (:class:`~adaptloop.learners.storage.Storage`)::

    <root>/topic=<topic>/date=<YYYY-MM-DD>/p<partition>-<first offset>-<last offset>.parquet

A file holds a contiguous run of one partition's records (its date is the broker
date of its first record). It appears whole or not at all: a local file is written
aside and renamed, an object is one PUT. The archive is its own checkpoint: a writer that
restarts resumes each partition after the highest offset already stored, so a
batch replayed after a crash adds no duplicate and leaves no gap.

DuckDB reads a local archive's files itself (:meth:`ParquetArchive.rows_sql`); an object store's are
handed to it as a ``pyarrow`` dataset over the store's filesystem, so no DuckDB extension is needed
to query one.

>>> import tempfile
>>> from adaptloop.schemas.topics import OUTCOMES
>>> archive = ParquetArchive(Path(tempfile.mkdtemp()))
>>> good = b'{"decision_id": "d1", "label": true, "source": "s"}'
>>> archive.write(OUTCOMES, "outcomes", 0, [RawRecord(0, 0, 1767225600000, b"d1", good)])
'topic=outcomes/date=2026-01-01/p000-000000000000-000000000000.parquet'
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
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

import duckdb
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from adaptloop.learners.storage import Storage
from adaptloop.schemas.errors import StorageError
from adaptloop.schemas.topics import Topic
from adaptloop.snapshots.columns import RawRecord, to_table

log = logging.getLogger(__name__)

_FILE = re.compile(r"^p(\d+)-(\d+)-(\d+)\.parquet$")
UNTRUSTED_SUFFIX = ".untrusted"


def topic_dir(root: Path | str, topic_name: str) -> Path:
    """The directory of a topic's files in a local archive."""
    return Path(root) / f"topic={topic_name}"


def topic_glob(root: Path | str, topic_name: str) -> str:
    """The glob of every file of a topic in a local archive (what DuckDB's ``read_parquet``
    takes)."""
    return str(topic_dir(root, topic_name) / "date=*" / "*.parquet")


def _sql_string(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def count_archived(
    root: Path | str, topic_name: str, where: str = "true", params: Sequence[object] = ()
) -> int:
    """How many archived records of a topic match ``where`` (SQL over its columns, written by the
    caller; values go in ``params``, one per ``?``); 0 before its first file.

    It queries through a connection of its own: DuckDB's default connection is one per process,
    shared by every thread and caller, and a result left half-read on it fails the next query there.
    """
    with duckdb.connect() as db:
        source = ParquetArchive(root).rows_sql(db, topic_name)
        if source is None:
            return 0
        row = db.execute(f"SELECT count(*) FROM {source} WHERE {where}", list(params)).fetchone()
    return int(row[0]) if row else 0


class ParquetArchive:
    """Append-only Parquet files per topic, partition and date under ``root`` (a directory or an
    object store's URI)."""

    def __init__(self, root: Path | str, compression: str = "zstd") -> None:
        self.root = root
        self.storage = Storage(root)
        self.compression = compression
        self._next: dict[str, dict[int, int]] = {}

    def files(self, topic_name: str) -> list[str]:
        """The keys of a topic's files, in order of name (partition, then offsets, within a
        date)."""
        return [
            key
            for key, _ in self.storage.files(f"topic={topic_name}", ".parquet", recursive=True)
            if _FILE.match(PurePosixPath(key).name)
            and PurePosixPath(key).parent.name.startswith("date=")
        ]

    def rows_sql(self, db: duckdb.DuckDBPyConnection, topic_name: str) -> str | None:
        """What to put after ``FROM`` on ``db`` to read every archived row of a topic (None before
        its first file).

        A local archive: a ``read_parquet`` of its files (a literal, so a snapshot's view can keep
        it). An object store: the files as of now, as a dataset registered on ``db`` (it lives as
        long as the connection). Files written by other versions of adaptloop are read by column
        name; a column a file lacks is null.
        """
        keys = self.files(topic_name)
        if not keys:
            return None
        if not self.storage.remote:
            return (
                f"read_parquet({_sql_string(topic_glob(self.storage.base, topic_name))}, "
                "hive_partitioning = false, union_by_name = true)"
            )
        paths = self.storage.dataset_paths(keys)
        schema = pa.unify_schemas(
            [pq.read_schema(path, filesystem=self.storage.fs) for path in paths]
        )
        name = "archived_" + re.sub(r"\W", "_", topic_name)
        db.register(
            name, ds.dataset(paths, schema=schema, format="parquet", filesystem=self.storage.fs)
        )
        return name

    def next_offsets(self, topic_name: str) -> dict[int, int]:
        """Per partition, the offset after the last one archived (read from the file names once)."""
        if topic_name not in self._next:
            found: dict[int, int] = {}
            for key in self.files(topic_name):
                match = _FILE.match(PurePosixPath(key).name)
                if match:
                    partition, last = int(match[1]), int(match[3])
                    found[partition] = max(found.get(partition, 0), last + 1)
            self._next[topic_name] = found
        return self._next[topic_name]

    def resume(self, topic_name: str, partition: int, start: int) -> list[str]:
        """Archive ``partition`` again from offset ``start``: files holding offsets from ``start``
        on are set aside (renamed ``*.untrusted``, out of every query) and their records will be
        written again; return them. The start comes from what the archiver committed to Kafka, not
        from file names, which anyone who can write a file here could forge."""
        aside = []
        for key in self.files(topic_name):
            match = _FILE.match(PurePosixPath(key).name)
            if match and int(match[1]) == partition and int(match[3]) >= start:
                self.storage.move(key, key + UNTRUSTED_SUFFIX)
                aside.append(key + UNTRUSTED_SUFFIX)
        self.next_offsets(topic_name)[partition] = start
        return aside

    def remove_partial_files(self) -> int:
        """Delete the temporary files a crashed writer left behind in a local archive; return how
        many. (An object store has none: an object appears whole when its upload completes.)"""
        if self.storage.remote:
            return 0
        leftovers = list(Path(self.storage.base).glob("topic=*/date=*/.*"))
        for path in leftovers:
            path.unlink(missing_ok=True)
        return len(leftovers)

    def usage(self) -> dict[str, tuple[int, int]]:
        """Per topic, its files and their bytes."""
        found: dict[str, tuple[int, int]] = {}
        for key, _, size in self.storage.listing("", ".parquet", recursive=True):
            parts = PurePosixPath(key).parts
            if len(parts) == 3 and parts[0].startswith("topic=") and _FILE.match(parts[2]):
                files, total = found.get(parts[0].removeprefix("topic="), (0, 0))
                found[parts[0].removeprefix("topic=")] = (files + 1, total + size)
        return dict(sorted(found.items()))

    def write(
        self, topic: Topic, topic_name: str, partition: int, records: Sequence[RawRecord]
    ) -> str | None:
        """Archive one partition's records (in offset order) as one file; skip what is already
        archived.

        Returns the key of the file written, or None if every record was already there.
        """
        start = self.next_offsets(topic_name).get(partition, 0)
        fresh = [record for record in records if record.offset >= start]
        if not fresh:
            return None
        first, last = fresh[0].offset, fresh[-1].offset
        if any(b.offset <= a.offset for a, b in itertools.pairwise(fresh)):
            raise StorageError(
                f"{topic_name}[{partition}]: records must come in increasing offset order"
            )
        stamp = fresh[0].timestamp_ms
        day = (
            datetime.fromtimestamp(stamp / 1000 if stamp is not None else 0, tz=UTC)
            .date()
            .isoformat()
        )
        key = f"topic={topic_name}/date={day}/p{partition:03d}-{first:012d}-{last:012d}.parquet"
        sink = pa.BufferOutputStream()
        pq.write_table(to_table(topic, topic_name, fresh), sink, compression=self.compression)
        self.storage.write(key, memoryview(sink.getvalue()))  # the buffer itself, not a copy
        self.next_offsets(topic_name)[partition] = last + 1
        return key
