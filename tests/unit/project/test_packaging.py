"""The wheel installs one import name, ``adaptloop``, with the layers as its subpackages."""

from __future__ import annotations

import zipfile
from pathlib import Path

from tests.release import Release

ROOT = Path(__file__).resolve().parents[3]


def test_the_wheel_installs_only_adaptloop(release: Release):
    """The wheel built from the sdist (what users install) holds the one package, whole."""
    names = zipfile.ZipFile(release.wheel).namelist()
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
