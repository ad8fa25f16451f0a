"""The codebase's own checks: ruff (lint and format) and mypy (strict on the core) are clean, and
the layers import only what they may."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
BIN = Path(sys.executable).parent
LAYERS = {
    "schemas": "adaptloop.schemas",
    "learners": "adaptloop.learners",
    "snapshots": "adaptloop.snapshots",
    "streams": "adaptloop.streams",
}
ALLOWED = {  # a layer imports only the layers above it (DESIGN.md)
    "schemas": set(),
    "learners": {"schemas"},
    "snapshots": {"schemas", "learners"},
    "streams": {"schemas", "learners", "snapshots"},
}


def run(*command: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=False)


def test_ruff_finds_nothing():
    result = run(str(BIN / "ruff"), "check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format_leaves_every_file_as_it_is():
    result = run(str(BIN / "ruff"), "format", "--check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_is_clean(tmp_path):
    # mypy cannot follow an editable install's import hook: give it the installed layout as links
    # (adaptloop/ with the layers' folders as its subpackages).
    package = tmp_path / "adaptloop"
    package.mkdir()
    for item in (ROOT / "adaptloop").iterdir():
        if item.name != "__pycache__":
            (package / item.name).symlink_to(item)
    for folder in LAYERS:
        (package / folder).symlink_to(ROOT / folder)
    result = run(
        str(BIN / "mypy"),
        "--config-file",
        str(ROOT / "pyproject.toml"),
        "--cache-dir",
        str(ROOT / ".mypy_cache"),
        "-p",
        "adaptloop",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _imported_layers(path: Path) -> set[str]:
    layers = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = (
            [node.module or ""]
            if isinstance(node, ast.ImportFrom)
            else ([alias.name for alias in node.names] if isinstance(node, ast.Import) else [])
        )
        for name in names:
            parts = name.split(".")
            if parts[:2] == ["adaptloop", "_core"]:
                # the compiled core (core/, Rust) imports nothing of adaptloop: any layer may use it
                continue
            if parts[0] == "adaptloop" and len(parts) > 1 and parts[1] in LAYERS:
                layers.add(parts[1])
            elif parts[0] == "adaptloop":
                layers.add("adaptloop")
    return layers


@pytest.mark.parametrize("layer", list(ALLOWED))
def test_each_layer_imports_only_the_layers_above_it(layer):
    wrong = {}
    for path in sorted((ROOT / layer).glob("*.py")):
        found = _imported_layers(path) - ALLOWED[layer] - {layer}
        if found:
            wrong[path.name] = sorted(found)
    assert not wrong, f"{layer}/ imports what it may not: {wrong}"


def test_the_core_runs_without_kafka():
    code = (
        "import sys, adaptloop.schemas, adaptloop.learners.online, adaptloop.learners.join, "
        "adaptloop.snapshots.snapshot; print(sorted(m for m in sys.modules if "
        "m.startswith('confluent_kafka')))"
    )
    result = run(sys.executable, "-c", code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_the_front_door_exports_what_it_lists():
    import adaptloop

    assert set(adaptloop.__all__) == set(adaptloop._EXPORTS) | {"__version__"}
    for name in adaptloop._EXPORTS:
        assert getattr(adaptloop, name).__name__ == name


def test_few_lines_are_longer_than_100_characters():
    """ruff formats code to 100 characters (the anchors' width); what it cannot wrap (a doctest's
    line, a long literal in an example) may reach 120, ruff's E501 limit, but stays rare: at most 1%
    of the product's lines."""
    lines = [
        line
        for folder in ("adaptloop", *LAYERS)
        for path in (ROOT / folder).rglob("*.py")
        for line in path.read_text().splitlines()
    ]
    long = [line for line in lines if len(line) > 100]
    assert len(long) <= len(lines) // 100, (
        f"{len(long)} of {len(lines)} lines are over 100 characters"
    )
