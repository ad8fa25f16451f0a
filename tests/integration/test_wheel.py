"""The package as a user gets it: the sdist and the wheel built from it, installed (not editable)
into a fresh venv, run from another folder with the repository off ``sys.path``.

The rest of the suite runs on an editable install, which sees every file of the checkout: a module
left out of the wheel, or a third-party import that only the ``dev`` extra installs, passes there
and breaks every user. This test installs only the base dependencies, so it catches both.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import adaptloop
from adaptloop.testing import free_ports
from tests.release import Release

# The demo starts a local broker (from the cached jars); a fresh venv installs slowly on a loaded
# machine.
pytestmark = [pytest.mark.kafka, pytest.mark.timeout(1800)]

ROOT = Path(__file__).resolve().parents[2]

# Run with the installed interpreter in isolated mode (-I: no PYTHONPATH, no user site, not the
# script's folder).
CHECK_IMPORTS = """
import importlib, json, pkgutil, sys
import adaptloop
names = {name: type(getattr(adaptloop, name)).__name__ for name in adaptloop.__all__}
modules = sorted(
    info.name for info in pkgutil.walk_packages(adaptloop.__path__, "adaptloop.") if info.name != "adaptloop.__main__"
)
for module in modules:
    importlib.import_module(module)
print(json.dumps({"file": adaptloop.__file__, "path": sys.path, "names": names, "modules": modules}))
"""


def source_modules() -> set[str]:
    """Every module of the checkout, named as it installs (the package-dir mapping of
    pyproject.toml): each ``.py`` file, and each compiled module by its ``.pyi`` stub
    (``adaptloop/_core.pyi``: the Rust core)."""
    package_dir = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-dir"
    ]
    modules = set()
    for package, folder in package_dir.items():
        for file in [*(ROOT / folder).rglob("*.py"), *(ROOT / folder).rglob("*.pyi")]:
            if "__pycache__" in file.parts:
                continue
            parts = file.relative_to(ROOT / folder).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            if parts != ("__main__",):
                modules.add(".".join((package, *parts)))
    return modules - {"adaptloop"}


@pytest.fixture(scope="module")
def installed(release: Release, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv holding the wheel built from the sdist (``python -m build``: sdist, then the
    wheel from it; built once for the session by the ``release`` fixture)."""
    assert release.sdist.name == f"adaptloop-{adaptloop.__version__}.tar.gz"
    venv = tmp_path_factory.mktemp("wheel") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [venv / "bin" / "pip", "install", "-q", str(release.wheel)], check=True, cwd=venv.parent
    )
    return venv


def run_installed(venv: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 120):
    """A command of the venv, from a folder outside the checkout, with nothing of the checkout's
    environment."""
    clean = {
        name: value
        for name, value in os.environ.items()
        if name not in ("PYTHONPATH", "VIRTUAL_ENV")
        # the broker's jars
        and (not name.startswith("ADAPTLOOP_") or name == "ADAPTLOOP_CACHE_DIR")
    }
    clean["PATH"] = f"{venv / 'bin'}:{clean['PATH']}"
    return subprocess.run(
        [str(venv / "bin" / args[0]), *args[1:]],
        cwd=venv.parent,
        env={**clean, "COLUMNS": "200", **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_the_installed_cli_reports_its_version(installed):
    result = run_installed(installed, "adaptloop", "--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"adaptloop {adaptloop.__version__}"


def test_every_public_name_and_every_module_imports_from_the_wheel(installed):
    result = run_installed(installed, "python", "-I", "-c", CHECK_IMPORTS)
    assert result.returncode == 0, result.stderr[-3000:]
    found = json.loads(result.stdout)
    site = installed / "lib"
    # the wheel's copy, not the checkout's
    assert Path(found["file"]).is_relative_to(site), found["file"]
    assert not any(Path(entry).resolve() == ROOT for entry in found["path"] if entry)
    assert set(found["names"]) == set(adaptloop.__all__)
    assert set(found["modules"]) == source_modules()  # none left out of the wheel, each importable


def test_a_short_demo_runs_from_the_wheel(installed, tmp_path):
    """``adaptloop demo`` as a user starts it: its own local broker (free ports, its own home), a
    worker, traffic."""
    if os.environ.get("ADAPTLOOP_SKIP_KAFKA_TESTS") == "1":
        pytest.skip("ADAPTLOOP_SKIP_KAFKA_TESTS=1: Kafka tests skipped on request")
    # (a secure port would make the demo's home a secured broker's)
    kafka, controller, metrics = free_ports(3)
    env = {
        "ADAPTLOOP_HOME": str(tmp_path / "home"),
        "ADAPTLOOP_KAFKA_PORT": str(kafka),
        "ADAPTLOOP_KAFKA_CONTROLLER_PORT": str(controller),
        "ADAPTLOOP_METRICS_PORT": str(metrics),
    }
    try:
        result = run_installed(
            installed,
            "adaptloop",
            "demo",
            "--decisions",
            "2000",
            "--rate",
            "1000",
            env=env,
            timeout=600,
        )
    finally:
        run_installed(installed, "adaptloop", "kafka", "down", env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    def row(name: str) -> str:
        match = re.search(rf"│ {re.escape(name)}\s+│\s+(.+?) │", result.stdout)
        assert match, f"no row {name!r} in:\n{result.stdout}"
        return match.group(1)

    assert row("decisions served (predictions)") == "2000"
    assert row("joined + expired + late") == "2000"
    # every joined example learned, the last version published
    assert row("examples learned") == row("joined")
    assert int(row("model versions published")) >= 1
    assert row("dead letters") == "malformed: 20"
