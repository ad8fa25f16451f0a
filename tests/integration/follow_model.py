"""Run as a separate process: follow one model and print each version it starts serving, with the
lag, until its standard input closes (the test closes it, or ends)."""

from __future__ import annotations

import sys
from pathlib import Path

import orjson

from adaptloop.learners.store import ModelStore
from adaptloop.schemas.system import ModelVersion
from adaptloop.streams.model_client import ModelClient


def report(version: ModelVersion, lag: float | None) -> None:
    if lag is not None:  # a refresh, not the catch-up at start
        print(orjson.dumps({"version": version.version, "lag": lag}).decode(), flush=True)


def main(bootstrap: str, prefix: str, models_dir: str, model: str) -> None:
    with ModelClient(
        model,
        bootstrap=bootstrap,
        store=ModelStore(Path(models_dir)),
        prefix=prefix,
        on_swap=report,
    ) as client:
        print(orjson.dumps({"ready": client.version.version}).decode(), flush=True)
        # Following for as long as the test needs, however slow the machine: no timer of its own.
        sys.stdin.read()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4])
