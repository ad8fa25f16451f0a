"""The join's decoding alone: what one prediction and one outcome cost to decode and validate, per
decision.

The join decodes each record of its inputs with ``schemas.codec.decode``: the compiled core
(``adaptloop._core``, validating with the contract's exported JSON Schema) and the event made from
its fields. Before the core, pydantic's strict JSON validator did it (``validate_json``, kept here
as the reference). Both decode the same bytes (sample decisions, their features as the bench's
streams have them), in interleaved rounds, the ratio taken within each round (CPU time of the
process).

Run: ``python -m bench.decode_floor`` (``--decisions N --rounds R``).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

from adaptloop.samples import sample_events
from adaptloop.schemas import OutcomeEvent, PredictionEvent
from adaptloop.schemas.codec import decode, encode
from adaptloop.schemas.topics import OUTCOMES, PREDICTIONS, Topic

Records = list[tuple[Topic, bytes]]


def records(decisions: int) -> Records:
    predictions = sample_events(PredictionEvent, decisions, seed=11)
    outcomes = sample_events(OutcomeEvent, decisions, seed=12)
    return [
        pair
        for prediction, outcome in zip(predictions, outcomes)
        for pair in ((PREDICTIONS, encode(prediction)), (OUTCOMES, encode(outcome)))
    ]


def by_pydantic(topic: Topic, data: bytes) -> object:
    return topic.event.__pydantic_validator__.validate_json(data)


def by_core(topic: Topic, data: bytes) -> object:
    return decode(topic, data)


def per_decision_us(decoder: Callable[[Topic, bytes], object], batch: Records) -> float:
    start = time.process_time()  # CPU: the machine is shared, wall time is not this process's
    for topic, data in batch:
        decoder(topic, data)
    return (time.process_time() - start) / (len(batch) / 2) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--decisions", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    batch = records(args.decisions)
    by_core(*batch[0])  # the core's contracts compile at first use
    rows: list[tuple[float, float]] = []
    for _ in range(args.rounds):
        pydantic, core = per_decision_us(by_pydantic, batch), per_decision_us(by_core, batch)
        rows.append((pydantic, core))
    print(
        f"decode + validate, µs per decision (a prediction and an outcome), {args.rounds} "
        "interleaved rounds"
    )
    print(f"  pydantic validate_json: median {statistics.median(r[0] for r in rows):.2f}")
    print(f"  compiled core (decode): median {statistics.median(r[1] for r in rows):.2f}")
    ratios = [r[0] / r[1] for r in rows]
    print(
        f"  pydantic / core within each round: median {statistics.median(ratios):.2f}x "
        f"(min {min(ratios):.2f}, max {max(ratios):.2f})"
    )


if __name__ == "__main__":
    main()
