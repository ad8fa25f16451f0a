"""Run as a separate process: follow one model and print each version it starts serving, with the
lag."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import orjson

from adaptloop.learners.store import ModelStore
from adaptloop.schemas.system import ModelVersion
from adaptloop.streams.model_client import ModelClient


def report(version: ModelVersion, lag: float | None) -> None:
    if lag is not None:  # a refresh, not the catch-up at start
        print(orjson.dumps({"version": version.version, "lag": lag}).decode(), flush=True)


def main(bootstrap: str, prefix: str, models_dir: str, model: str, seconds: float) -> None:
    with ModelClient(
        model,
        bootstrap=bootstrap,
        store=ModelStore(Path(models_dir)),
        prefix=prefix,
        on_swap=report,
    ) as client:
        print(orjson.dumps({"ready": client.version.version}).decode(), flush=True)
        time.sleep(seconds)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], float(sys.argv[5]))
