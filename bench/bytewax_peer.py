"""The Bytewax peer: the whole loop as one Bytewax 0.21 dataflow with River, written as its docs
show.

Kafka input of predictions and outcomes (JSON) -> ``key_on`` the decision id -> ``stateful_map``
joins a decision's two events, in either order -> predict, learn, score -> a sink that drops
what it gets. State lives in memory (no recovery store: the peer's fastest setting), and nothing
is written back to Kafka: it has no transactional output, no versions, no checkpoints.
:func:`bench.peers.bytewax_loop` runs it with ``python -m bytewax.run bench.bytewax_peer:flow``
(one worker, as the docs start it) on a finite input (``tail=False``); it learns and reports with
:class:`bench.peer_learner.PeerLearner`, as the Quix Streams peer does.

Configured by environment: ``PEER_BOOTSTRAP``, ``PEER_TOPICS`` (predictions,outcomes), ``PEER_N``,
``PEER_RECIPE``, ``PEER_OUT``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import bytewax.operators as op
from bytewax.connectors.kafka import KafkaSource, KafkaSourceMessage
from bytewax.dataflow import Dataflow
from bytewax.outputs import DynamicSink, StatelessSinkPartition

from bench.peer_learner import PeerLearner


class _Discard(StatelessSinkPartition[Any]):
    def write_batch(self, items: list[Any]) -> None:
        pass


class Discard(DynamicSink[Any]):
    """A sink that keeps nothing: the dataflow's work is the learning before it."""

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _Discard:
        return _Discard()


def join(
    waiting: dict[str, Any] | None, message: KafkaSourceMessage
) -> tuple[dict[str, Any] | None, Any]:
    """A decision's prediction and outcome, in either order: (no state left, the pair) once both
    came."""
    event = json.loads(message.value)
    if waiting is None:
        return event, None
    prediction, outcome = (event, waiting) if "features" in event else (waiting, event)
    return None, (prediction["features"], outcome["label"])


def build_flow(bootstrap: str, topics: list[str], n: int, recipe: str, out: Path) -> Dataflow:
    learner = PeerLearner(recipe, n, out)

    def learn(pair: tuple[str, tuple[dict[str, Any], Any]]) -> None:
        learner.learn(*pair[1])

    def key(message: KafkaSourceMessage) -> str:
        learner.read()
        return message.key.decode()

    flow = Dataflow("adaptloop-peer")
    messages = op.input("in", flow, KafkaSource([bootstrap], topics, tail=False))
    keyed = op.key_on("decision", messages, key)
    pairs = op.filter(
        "joined", op.stateful_map("join", keyed, join), lambda pair: pair[1] is not None
    )
    op.output("out", op.map("learn", pairs, learn), Discard())
    return flow


if "PEER_BOOTSTRAP" in os.environ:
    env = os.environ
    flow = build_flow(
        env["PEER_BOOTSTRAP"],
        env["PEER_TOPICS"].split(","),
        int(env["PEER_N"]),
        env["PEER_RECIPE"],
        Path(env["PEER_OUT"]),
    )
