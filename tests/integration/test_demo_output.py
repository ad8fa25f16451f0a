"""``adaptloop demo`` with its output in a file (CI logs, ``nohup``): it says what it is doing from
its start and every few seconds after, where a progress bar would print nothing until the end."""

from __future__ import annotations

import itertools
import os
import re
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.kafka

LONGEST_SILENCE = 30.0
"""Lines come every 5 s (adaptloop.progress.EVERY_SECONDS); 30 s leaves room for a loaded
machine."""


def test_the_demo_writing_to_a_file_is_never_silent_for_long(kafka_bootstrap, tmp_path):
    env = {
        **os.environ,
        "ADAPTLOOP_BOOTSTRAP": kafka_bootstrap,
        "ADAPTLOOP_HOME": str(tmp_path),
        "COLUMNS": "200",
    }
    out = tmp_path / "demo.txt"
    arrivals: list[tuple[float, str]] = []  # (seconds since start, line)
    with open(out, "w") as file:
        started = time.monotonic()
        demo = subprocess.Popen(
            [sys.executable, "-m", "adaptloop", "demo", "--decisions", "1200", "--rate", "100"],
            stdout=file,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        try:
            seen = 0
            while demo.poll() is None and time.monotonic() - started < 600:
                lines = out.read_text().splitlines()
                arrivals += [(time.monotonic() - started, line) for line in lines[seen:]]
                seen = len(lines)
                time.sleep(0.2)
        finally:
            if demo.poll() is None:
                demo.kill()
            demo.wait(60)
    lines = out.read_text().splitlines()
    arrivals += [(time.monotonic() - started, line) for line in lines[len(arrivals) :]]
    assert demo.returncode == 0, out.read_text()[-3000:]
    moments = [0.0] + [at for at, _ in arrivals]
    silences = [later - earlier for earlier, later in itertools.pairwise(moments)]
    assert max(silences) < LONGEST_SILENCE, arrivals
    text = "\n".join(lines)
    assert re.search(r"^serving: [\d,]+ of 1,200 \(\d+s\)", text, re.MULTILINE), text
    assert "serving: 1,200 of 1,200" in text and "adaptloop demo: the loop, end to end" in text, (
        text
    )
