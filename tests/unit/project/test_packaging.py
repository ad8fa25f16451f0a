"""The wheel installs one import name, ``adaptloop``, with the layers as its subpackages."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def test_the_wheel_installs_only_adaptloop(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("adaptloop-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top_level = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert top_level == {"adaptloop"}
    for layer in ("schemas", "learners", "snapshots", "streams"):
        assert f"adaptloop/{layer}/__init__.py" in names
    assert "adaptloop/py.typed" in names
    assert "adaptloop/localkafka/pom.xml" in names


def test_the_image_copies_every_layer_and_compose_scrapes_the_worker():
    """Docker does not run here, so the image is not built in the suite; what would rot is checked instead."""
    import re
    import tomllib

    root = Path(__file__).resolve().parents[3]
    layers = set(tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"].values())
    copied = set(re.findall(r"^COPY (\w+) \1$", (root / "Dockerfile").read_text(), re.M))
    assert copied == layers
    compose = (root / "docker-compose.yml").read_text()
    assert "build: ." in compose and "./deploy/prometheus.yml" in compose
    from adaptloop.settings import Settings

    port = Settings.model_fields["metrics_port"].default
    assert f'"worker:{port}"' in (root / "deploy" / "prometheus.yml").read_text()
    assert f"{port}:{port}" in compose
