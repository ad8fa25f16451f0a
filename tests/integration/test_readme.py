"""The README's quickstart, run as written: a worker with the README's model spec, and its service code."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from adaptloop.streams import ensure_topics

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


def test_the_readme_quickstart_runs_as_written(kafka_bootstrap, tmp_path):
    exports, code = quickstart()
    prefix = f"readme{uuid.uuid4().hex[:6]}."
    ensure_topics(kafka_bootstrap, prefix=prefix, partitions=2)
    env = {
        **os.environ,
        **exports,
        "ADAPTLOOP_BOOTSTRAP": kafka_bootstrap,
        "ADAPTLOOP_TOPIC_PREFIX": prefix,
        "ADAPTLOOP_HOME": str(tmp_path / "home"),
        "ADAPTLOOP_GROUP": f"readme{uuid.uuid4().hex[:6]}",
        "ADAPTLOOP_METRICS_PORT": "null",
        "ADAPTLOOP_SNAPSHOT_SECONDS": "null",
    }
    adaptloop = os.path.join(os.path.dirname(sys.executable), "adaptloop")
    with open(tmp_path / "worker.log", "wb") as log:
        worker = subprocess.Popen(
            [adaptloop, "worker"], cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        (tmp_path / "quickstart.py").write_text(code)
        result = subprocess.run(
            [sys.executable, "quickstart.py"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert worker.poll() is None, (tmp_path / "worker.log").read_text()[-3000:]
        assert result.returncode == 0, result.stderr[-3000:]
    finally:
        worker.terminate()
        worker.wait(60)
    match = re.fullmatch(r"serving ([0-9a-f]{16}): learned (\d+) examples, shadow accuracy (0\.\d{3})\n", result.stdout)
    assert match, result.stdout
    assert int(match.group(2)) == 3_000
    assert float(match.group(3)) > 0.8  # the churn rule is learnable
