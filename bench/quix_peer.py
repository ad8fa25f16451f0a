"""The Quix Streams peer: the loop's stages as a Quix Streams 3 app with River, written as its docs
show.

- ``learn``: a ``StreamingDataFrame`` over ``training-examples`` (JSON): predict, learn, score.
- ``loop``: predictions and outcomes concatenated (co-partitioned by decision id), joined per key in
  RocksDB state (``apply(stateful=True)``), then predict, learn, score.

Both run with ``processing_guarantee="exactly-once"``, as adaptloop does. Quix Streams pins
confluent-kafka < 2.13 and pydantic < 2.14, older than adaptloop's, so this file runs in a venv of
its own (:func:`bench.peers.quix_python` makes it) and imports nothing of adaptloop. It learns and
reports with :class:`bench.peer_learner.PeerLearner`, as the Bytewax peer does.

``python -m bench.quix_peer MODE BOOTSTRAP TOPIC[,TOPIC] N RECIPE OUT STATE_DIR``
"""

from __future__ import annotations

import sys
import uuid
from pathlib import Path
from typing import Any

from bench.peer_learner import PeerLearner


def main(
    mode: str, bootstrap: str, topics: str, n: int, recipe: str, out: Path, state_dir: str
) -> None:
    from quixstreams import Application, State

    app = Application(
        broker_address=bootstrap,
        consumer_group=f"quix-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        processing_guarantee="exactly-once",
        state_dir=state_dir,
    )
    learner = PeerLearner(recipe, n, out)

    def learn(example: tuple[dict[str, Any], Any]) -> None:
        if learner.learn(*example):
            app.stop()

    def read(value: dict[str, Any]) -> dict[str, Any]:
        learner.read()
        return value

    if mode == "learn":
        sdf = app.dataframe(app.topic(topics, value_deserializer="json")).apply(read)
        sdf = sdf.apply(lambda value: (value["features"], value["label"]))
    else:
        predictions, outcomes = (
            app.topic(name, value_deserializer="json") for name in topics.split(",")
        )

        def join(value: dict[str, Any], state: State) -> tuple[dict[str, Any], Any] | None:
            """A decision's prediction and outcome, in either order: the pair once both came."""
            side, other = ("p", "o") if "features" in value else ("o", "p")
            waiting = state.get(other)
            if waiting is None:
                state.set(side, value)
                return None
            state.delete(other)
            prediction, outcome = (value, waiting) if side == "p" else (waiting, value)
            return prediction["features"], outcome["label"]

        sdf = app.dataframe(predictions).concat(app.dataframe(outcomes)).apply(read)
        sdf = sdf.apply(join, stateful=True).filter(lambda pair: pair is not None)
    sdf = sdf.update(learn)
    app.run()


if __name__ == "__main__":
    mode, bootstrap, topics, n, recipe, out, state_dir = sys.argv[1:8]
    main(mode, bootstrap, topics, int(n), recipe, Path(out), state_dir)
