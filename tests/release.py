"""The package as released, built once per test session from this checkout: its sdist, and the
wheel built from that sdist (``python -m build``), which is what users install.

Three tests need a build of the package: the wheel's contents (tests/unit/project/
test_packaging.py), the wheel installed into a fresh venv (tests/integration/test_wheel.py), and
the Dockerfile's build stage replayed (tests/integration/test_image_install.py). The session's
``release`` fixture (tests/conftest.py) compiles the Rust core (``core/``) once, for the first two;
the image's ``pip wheel`` runs with the same cargo target folder (``cargo_env``), where cargo finds
the crates compiled from the same sources fresh (it checks each source file against them) and
compiles none again.

The core's dependencies (pyo3, serde_json...: crates of the registry, the same whoever builds them)
are taken from the checkout's own build (``core/target``, made by ``pip install -e``): compiling
them again took longer than compiling the core (the release's build of a wheel from the sdist on a
loaded 2-core machine: 72 s with an empty target folder, 31 s with theirs). The core itself is
compiled from the sdist's sources, as a user's build compiles it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Release:
    """The sdist and its wheel, and the environment that builds the core into their cargo target
    folder."""

    sdist: Path
    wheel: Path
    cargo_env: dict[str, str]


def export_source(dest: Path) -> Path:
    """The checkout's files as a fresh clone holds them (tracked, or new and not ignored), copied to
    ``dest``.

    A wheel built in the checkout itself would pick up whatever an earlier build left in
    ``build/lib`` (and an sdist, the old ``*.egg-info/SOURCES.txt``), and so could hold a module
    that the configuration leaves out.
    """
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    for name in filter(None, listed.split("\0")):
        if (ROOT / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dest / name)
    return dest


def cargo_env(target: Path) -> dict[str, str]:
    """The environment of a build whose compiled crates cargo keeps in ``target``, for the next
    build of the same sources to reuse.

    ``PYO3_PYTHON`` names one interpreter for every build: setuptools-rust otherwise passes the
    build's own (``python -m build`` makes a venv per build, at a new path each time), and pyo3's
    build script runs again when that path changes, and with it every crate of pyo3 and the core.
    The builds' venvs are all made from this interpreter, so pyo3 reads the same configuration
    (version, ABI) from it.
    """
    return {"CARGO_TARGET_DIR": str(target), "PYO3_PYTHON": sys.executable}


CORE_OUTPUTS = ("adaptloop-core-*", "_core*", "lib_core*")
"""What cargo keeps of the core crate itself in a target folder (its fingerprint, its library, its
incremental state): none is taken from the checkout's build."""


def dependencies_built(target: Path) -> Path:
    """``target`` holding the core's dependencies as the checkout's build compiled them, and nothing
    of the core: cargo finds them fresh (same crates, same profile, same ``PYO3_PYTHON``: pip's
    interpreter, which is this one when pytest runs from the same venv; with any other, cargo
    compiles them again) and compiles the core from the sources it is given. Empty if the checkout
    has no build of its own."""
    built = ROOT / "core" / "target"
    if not built.is_dir():
        target.mkdir(parents=True)
        return target
    shutil.copytree(built, target, ignore=shutil.ignore_patterns(*CORE_OUTPUTS), symlinks=True)
    return target


def build_release(work: Path) -> Release:
    """The checkout's sdist and the wheel built from it, in ``work/dist``; the core is compiled
    from the sdist's sources, its dependencies taken from the checkout's build."""
    source, dist = export_source(work / "source"), work / "dist"
    env = cargo_env(dependencies_built(work / "cargo-target"))
    built = subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(dist), str(source)],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
    )
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    # cargo's own line (setuptools-rust runs it verbose): the core was not found fresh anywhere
    assert "Compiling adaptloop-core" in built.stdout + built.stderr
    (sdist,) = dist.glob("adaptloop-*.tar.gz")
    (wheel,) = dist.glob("adaptloop-*.whl")
    return Release(sdist=sdist, wheel=wheel, cargo_env=env)
