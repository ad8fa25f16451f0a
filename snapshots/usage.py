"""What the loop keeps: each model's stored versions, each topic's archive files (on disk or in an
object store), the snapshots.

The store and the snapshots are pruned (``keep_versions``, ``keep_snapshots``); the archive is kept
whole, and its file count is what its queries pay for. ``adaptloop status`` shows this table.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from adaptloop.learners.storage import Storage
from adaptloop.snapshots.archive import ParquetArchive


@dataclass(frozen=True)
class Usage:
    files: int
    bytes: int


def files_usage(paths: Iterable[Path]) -> Usage:
    """How many of ``paths`` are files, and their bytes."""
    files = total = 0
    for path in paths:
        try:
            size = path.stat().st_size
        except FileNotFoundError:  # pruned or compacted meanwhile
            continue
        files, total = files + 1, total + size
    return Usage(files, total)


def disk_usage(models: Path | str, archive: Path | str, snapshots_dir: Path) -> dict[str, Usage]:
    """``models/<model>``, ``archive/<topic>`` and ``snapshots``, each with its files and bytes (the
    model store and the archive where they are: a directory or an object store).

    >>> import tempfile
    >>> home = Path(tempfile.mkdtemp())
    >>> (home / "models" / "churn" / "versions").mkdir(parents=True)
    >>> _ = (home / "models" / "churn" / "versions" / "0a1b.pkl").write_bytes(b"x" * 10)
    >>> (home / "archive" / "topic=outcomes" / "date=2026-01-01").mkdir(parents=True)
    >>> _ = (home / "archive" / "topic=outcomes" / "date=2026-01-01" / "p000-0-9.parquet").write_bytes(b"y" * 5)
    >>> for what, used in disk_usage(home / "models", home / "archive", home / "snapshots").items():
    ...     print(what, used)
    models/churn Usage(files=1, bytes=10)
    archive/outcomes Usage(files=1, bytes=5)
    snapshots Usage(files=0, bytes=0)
    """
    usage = {}
    store = Storage(models)
    for model in store.directories():
        versions = store.listing(f"{model}/versions", ".pkl")
        if versions:
            usage[f"models/{model}"] = Usage(len(versions), sum(size for _, _, size in versions))
    for topic, (files, total) in ParquetArchive(archive).usage().items():
        usage[f"archive/{topic}"] = Usage(files, total)
    usage["snapshots"] = files_usage(snapshots_dir.glob("snapshot-*.duckdb"))
    return usage
