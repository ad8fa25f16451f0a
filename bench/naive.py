"""The naive peer: the learning job written the obvious way, as one faust agent, one event at a
time.

JSON decode, then ``predict_proba_one`` and ``learn_one`` on each training example:
no validation, no dead letters, no dedup, no checkpoints, no metrics. It runs in a
process of its own (faust owns its event loop); :func:`naive_rate` starts it and
reads the rate it writes when it has learned ``n`` examples.

Needs the ``bench`` extra (``pip install -e '.[bench]'``) for faust-streaming.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from adaptloop.streams.admin import delete_topics


def naive_rate(bootstrap: str, topic: str, n: int, recipe: str, timeout: float = 300.0) -> float:
    """Examples/s of the naive faust agent over the first ``n`` records of ``topic``."""
    out = Path(tempfile.mkdtemp()) / "rate"
    app_id = f"naive-{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        "NAIVE_BOOTSTRAP": bootstrap,
        "NAIVE_TOPIC": topic,
        "NAIVE_N": str(n),
        "NAIVE_RECIPE": recipe,
        "NAIVE_OUT": str(out),
        "NAIVE_APP": app_id,
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.naive", "worker", "--loglevel", "error"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + timeout
        while not out.exists():
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"the naive faust peer stopped or timed out (exit {process.poll()})"
                )
            time.sleep(0.2)
        time.sleep(0.1)  # the file is written in one call; let it land
        return float(out.read_text())
    finally:
        process.kill()
        process.wait()
        delete_topics(bootstrap, f"{app_id}-")  # faust's own topics


def _app():
    import faust

    from adaptloop.learners.recipes import build_model
    from adaptloop.learners.spec import LearnerSpec

    env = os.environ
    n, out = int(env["NAIVE_N"]), Path(env["NAIVE_OUT"])
    app = faust.App(
        env["NAIVE_APP"],
        broker=f"kafka://{env['NAIVE_BOOTSTRAP']}",
        store="memory://",
        web_enabled=False,
        consumer_auto_offset_reset="earliest",
        topic_replication_factor=1,
        broker_session_timeout=10.0,
    )
    source = app.topic(env["NAIVE_TOPIC"], key_serializer="raw", value_serializer="raw")
    model = build_model(LearnerSpec(name="naive", recipe=env["NAIVE_RECIPE"]))
    seen = {"n": 0, "start": 0.0}

    @app.agent(source)
    async def learn(values):
        async for value in values:
            if not seen["n"]:
                seen["start"] = time.perf_counter()
            event = json.loads(value)
            model.predict_proba_one(event["features"])
            model.learn_one(event["features"], event["label"])
            seen["n"] += 1
            if seen["n"] == n:
                out.write_text(str(n / (time.perf_counter() - seen["start"])))

    return app


if __name__ == "__main__":
    _app().main()
