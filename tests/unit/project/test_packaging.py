"""The wheel installs one import name, ``adaptloop``, with the layers as its subpackages."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


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


def test_the_wheel_installs_only_adaptloop(tmp_path):
    source = export_source(tmp_path / "source")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path), str(source)],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("adaptloop-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top_level = {
        name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")
    }
    assert top_level == {"adaptloop"}
    for layer in ("schemas", "learners", "snapshots", "streams"):
        assert f"adaptloop/{layer}/__init__.py" in names
    assert "adaptloop/py.typed" in names
    assert "adaptloop/localkafka/pom.xml" in names
    assert set(names) >= package_files()  # every module and data file of every (sub)package


def package_files() -> set[str]:
    """Every file of the packages' folders as the wheel holds it (the package-dir mapping
    applied)."""
    import tomllib

    package_dir = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-dir"
    ]
    files = set()
    for package, folder in package_dir.items():
        for file in (ROOT / folder).rglob("*"):
            if file.is_file() and "__pycache__" not in file.parts and file.suffix != ".pyc":
                files.add("/".join((*package.split("."), *file.relative_to(ROOT / folder).parts)))
    return files


def test_the_image_copies_every_layer_and_compose_scrapes_the_worker():
    """Docker does not run here, so the image is not built in the suite; what would rot is checked
    instead."""
    import re
    import tomllib

    root = Path(__file__).resolve().parents[3]
    layers = set(
        tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"][
            "package-dir"
        ].values()
    )
    copied = set(re.findall(r"^COPY (\w+) \1$", (root / "Dockerfile").read_text(), re.M))
    assert copied == layers | {"core"}  # and the compiled core's crate
    compose = (root / "docker-compose.yml").read_text()
    assert "build: ." in compose and "./deploy/prometheus.yml" in compose
    from adaptloop.settings import Settings

    port = Settings.model_fields["metrics_port"].default
    assert f'"worker:{port}"' in (root / "deploy" / "prometheus.yml").read_text()
    assert f"{port}:{port}" in compose
