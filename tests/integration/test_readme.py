"""The README's quickstart, run as written: a worker with the README's model spec, and its service
code."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from adaptloop.streams import ensure_topics
from adaptloop.streams.versions import published_versions

pytestmark = pytest.mark.kafka

README = Path(__file__).resolve().parents[2] / "README.md"


def quickstart() -> tuple[dict[str, str], str]:
    """The environment the quickstart's worker command sets, and its Python code."""
    section = README.read_text().split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    shell = re.search(r"```bash\n(.*?)```", section, re.S)
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert shell and code, "the README's quickstart has a bash and a python block"
    exports = dict(re.findall(r"^export (\w+)='(.*)'$", shell.group(1), re.M))
    assert "adaptloop worker" in shell.group(1)
    return exports, code.group(1)


def test_the_readme_quickstart_runs_as_written_and_serves_what_it_learns(kafka_bootstrap, tmp_path):
    exports, code = quickstart()
    prefix = f"readme{uuid.uuid4().hex[:6]}."
    ensure_topics(kafka_bootstrap, prefix=prefix, partitions=2)
    # one user's environment: no home is set, so the worker and the service take the user's default
    env = {
        **{name: value for name, value in os.environ.items() if name != "ADAPTLOOP_HOME"},
        **exports,
        "XDG_DATA_HOME": str(tmp_path / "data"),
        "ADAPTLOOP_BOOTSTRAP": kafka_bootstrap,
        "ADAPTLOOP_TOPIC_PREFIX": prefix,
        "ADAPTLOOP_GROUP": f"readme{uuid.uuid4().hex[:6]}",
        "ADAPTLOOP_METRICS_PORT": "null",
        "ADAPTLOOP_SNAPSHOT_SECONDS": "null",
    }
    home = tmp_path / "data" / "adaptloop"
    # each run from a folder of its own
    worker_folder, service_folder = tmp_path / "worker", tmp_path / "service"
    worker_folder.mkdir()
    service_folder.mkdir()
    adaptloop = os.path.join(os.path.dirname(sys.executable), "adaptloop")
    with open(tmp_path / "worker.log", "wb") as log:
        worker = subprocess.Popen(
            [adaptloop, "worker"],
            cwd=worker_folder,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        # As a user would, the service starts once the worker runs: it has published the model's
        # first version.
        deadline = time.monotonic() + 300
        while "churn" not in published_versions(kafka_bootstrap, prefix):
            assert worker.poll() is None and time.monotonic() < deadline, (
                tmp_path / "worker.log"
            ).read_text()[-3000:]
            time.sleep(0.5)
        (service_folder / "quickstart.py").write_text(code)
        result = subprocess.run(
            [sys.executable, "quickstart.py"],
            cwd=service_folder,
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        assert worker.poll() is None, (tmp_path / "worker.log").read_text()[-3000:]
        assert result.returncode == 0, result.stderr[-3000:]
    finally:
        worker.terminate()
        worker.wait(60)
    # one line at start
    assert f"home {home} (ADAPTLOOP_HOME)" in (tmp_path / "worker.log").read_text()
    waves = re.findall(
        r"^wave (\d): served by (\S+), production accuracy ([01]\.\d{3})$", result.stdout, re.M
    )
    assert [int(wave) for wave, _, _ in waves] == [
        1,
        2,
        3,
        4,
    ] and "no new version" not in result.stdout, result.stdout
    served = {version: float(accuracy) for _, version, accuracy in waves}
    fallback = served.pop("default")  # wave 1 only: no version had learned anything yet
    assert waves[0][1] == "default" and len(served) == 3, result.stdout
    # Each learned version, served from the worker's home, answers better than the fallback (the
    # non-churners).
    assert all(accuracy > fallback + 0.2 for accuracy in served.values()), result.stdout
    assert all(
        (home / "models" / "churn" / "versions" / f"{version}.pkl").is_file() for version in served
    )
    # The CLI, from a folder of its own, finds the same home.
    shown = subprocess.run(
        [adaptloop, "settings"], cwd=tmp_path, env=env, capture_output=True, text=True, check=True
    )
    assert f'home = "{home}"' in shown.stdout.splitlines()
