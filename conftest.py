"""Doctests of the installed package, collected once each under their import names.

The layers' folders (``schemas/``, ``learners/``, ...) install as ``adaptloop.schemas``,
``adaptloop.learners``, ...: a doctest module is imported by that name, so its classes are the
ones every other module uses (importing ``schemas/codec.py`` by its path would make a second,
different ``DecodeError``).
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

import pytest
from _pytest.doctest import DoctestModule

ROOT = Path(__file__).parent
PACKAGE_DIRS = {
    "adaptloop": "adaptloop",
    "schemas": "adaptloop.schemas",
    "learners": "adaptloop.learners",
    "snapshots": "adaptloop.snapshots",
    "streams": "adaptloop.streams",
}


def module_name(path: Path) -> str | None:
    """The import name of a file of the package, or None for files outside it."""
    try:
        parts = path.resolve().relative_to(ROOT).with_suffix("").parts
    except ValueError:
        return None
    if not parts or parts[0] not in PACKAGE_DIRS:
        return None
    names = [PACKAGE_DIRS[parts[0]], *parts[1:]]
    if names[-1] == "__init__":
        names.pop()
    return ".".join(names)


class InstalledDoctestModule(DoctestModule):
    """A doctest module imported by its installed name."""

    def _getobj(self) -> ModuleType:
        name = module_name(self.path)
        assert name is not None
        module = importlib.import_module(name)
        if Path(module.__file__ or "").resolve() != self.path.resolve():
            raise pytest.UsageError(
                f"{name} is imported from {module.__file__}, not {self.path}: reinstall "
                "with `pip install -e .`"
            )
        return module


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    if (
        file_path.suffix == ".py"
        and file_path.name != "__main__.py"
        and module_name(file_path) is not None
    ):
        return InstalledDoctestModule.from_parent(parent, path=file_path)
    return None
