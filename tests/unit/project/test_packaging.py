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
