"""Where the model store keeps its files: a local directory, or an object store
(``s3://bucket/prefix``) that workers and services on other hosts share, through ``pyarrow.fs``.

Keys are ``/``-separated paths under the root. A write is atomic on either: a local file is written
aside and renamed over the old one, an object is replaced by one PUT. Object-store options go in the
URI's query, as ``pyarrow.fs`` reads them
(``s3://models/prod?endpoint_override=minio:9000&scheme=http``); credentials come from the usual AWS
environment variables or files.

>>> import tempfile
>>> storage = Storage(tempfile.mkdtemp())
>>> storage.write("churn/versions/ab.pkl", b"model")
>>> storage.read("churn/versions/ab.pkl"), [key for key, _ in storage.files("churn/versions", ".pkl")]
(b'model', ['churn/versions/ab.pkl'])
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import pyarrow.fs as pafs

from adaptloop.schemas.errors import StorageError


class Storage:
    """Files under ``root``: a directory, or ``s3://...`` (any URI ``pyarrow.fs`` opens)."""

    def __init__(self, root: str | Path) -> None:
        text = str(root)
        self.remote = "://" in text
        if self.remote:
            try:
                self.fs, base = pafs.FileSystem.from_uri(text)
            except Exception as error:  # pyarrow raises ValueError / OSError with the reason
                raise StorageError(f"cannot open the store {text!r}: {error}") from None
            self.base = base.rstrip("/")
            self.root = text.split("?", 1)[0].rstrip("/")
        else:
            self.fs, self.base = pafs.LocalFileSystem(), str(Path(text).absolute())
            self.root = self.base

    def __repr__(self) -> str:
        return f"Storage({self.root!r})"

    def _path(self, key: str) -> str:
        return f"{self.base}/{key}"

    def uri(self, key: str) -> str:
        """Where ``key`` is, for any host that can reach the store (a URI, or an absolute local
        path)."""
        return f"{self.root}/{key}"

    def local_path(self, key: str) -> Path | None:
        """The file of ``key`` on this host (None for an object store)."""
        return None if self.remote else Path(self._path(key))

    def read(self, key: str) -> bytes:
        """The bytes of ``key``; FileNotFoundError if there are none."""
        try:
            with self.fs.open_input_stream(self._path(key)) as stream:
                return bytes(stream.read())
        except FileNotFoundError:
            raise
        except OSError as error:
            if "not exist" in str(error) or "NoSuchKey" in str(error) or "Not Found" in str(error):
                raise FileNotFoundError(self.uri(key)) from None
            raise StorageError(f"cannot read {self.uri(key)}: {error}") from None

    def exists(self, key: str) -> bool:
        return bool(self.fs.get_file_info(self._path(key)).type != pafs.FileType.NotFound)

    def write(self, key: str, data: bytes | memoryview) -> None:
        """Replace ``key`` with ``data``, atomically."""
        if self.remote:
            try:
                with self.fs.open_output_stream(self._path(key)) as out:
                    out.write(data)
            except OSError as error:
                raise StorageError(f"cannot write {self.uri(key)}: {error}") from None
            return
        path = Path(self._path(key))
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(
            dir=path.parent, prefix=f".{path.name}.", delete=False
        ) as tmp:
            tmp.write(data)
            tmp.flush()
            os.fsync(tmp.fileno())
        os.replace(tmp.name, path)

    def touch(self, key: str, data: bytes, stamp_ns: int) -> None:
        """Make ``key`` (holding ``data``) the most recently stored: its time is ``stamp_ns``. An
        object store sets its own time, so the object is written again."""
        if self.remote:
            self.write(key, data)
        else:
            os.utime(self._path(key), ns=(stamp_ns, stamp_ns))

    def delete(self, key: str) -> None:
        try:
            self.fs.delete_file(self._path(key))
        except FileNotFoundError:
            pass
        except OSError as error:
            if "not exist" not in str(error) and "NoSuchKey" not in str(error):
                raise StorageError(f"cannot delete {self.uri(key)}: {error}") from None

    def files(
        self, directory: str, suffix: str, *, recursive: bool = False
    ) -> list[tuple[str, int]]:
        """(key, time stored in ns) of each file in ``directory`` (and below it, if ``recursive``)
        whose name ends with ``suffix``; files being written (their names start with ``.``) are left
        out."""
        return [
            (key, mtime) for key, mtime, _ in self.listing(directory, suffix, recursive=recursive)
        ]

    def listing(
        self, directory: str, suffix: str, *, recursive: bool = False
    ) -> list[tuple[str, int, int]]:
        """Like :meth:`files`, with each file's size: (key, time stored in ns, bytes)."""
        selector = pafs.FileSelector(
            self._path(directory), allow_not_found=True, recursive=recursive
        )
        found = []
        for info in self.fs.get_file_info(selector):
            if (
                info.type == pafs.FileType.File
                and info.base_name.endswith(suffix)
                and not info.base_name.startswith(".")
            ):
                mtime = info.mtime_ns if info.mtime_ns is not None else time.time_ns()
                key = (
                    info.path[len(self.base) + 1 :]
                    if recursive
                    else f"{directory}/{info.base_name}"
                )
                found.append((key, mtime, info.size or 0))
        return sorted(found)

    def move(self, key: str, new_key: str) -> None:
        """Rename ``key`` to ``new_key`` (on an object store: a copy, then the old object
        deleted)."""
        try:
            self.fs.move(self._path(key), self._path(new_key))
        except OSError as error:
            raise StorageError(f"cannot move {self.uri(key)} to {new_key}: {error}") from None

    def dataset_paths(self, keys: list[str]) -> list[str]:
        """The paths of ``keys`` as :attr:`fs` names them (what ``pyarrow.dataset`` takes with
        it)."""
        return [self._path(key) for key in keys]

    def directories(self) -> list[str]:
        """The names of the directories at the root (the models)."""
        selector = pafs.FileSelector(self.base, allow_not_found=True)
        return sorted(
            info.base_name
            for info in self.fs.get_file_info(selector)
            if info.type == pafs.FileType.Directory
        )
