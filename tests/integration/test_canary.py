"""Canary versions on a running loop: a worse canary is rolled back, a better one promoted, each on
the exact outcomes of the decisions its versions served; ModelClient and `adaptloop serve` split
decisions by id."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import UTC, datetime

import httpx
import pytest
from river.datasets import synth

from adaptloop.learners.canary_split import in_canary
from adaptloop.learners.spec import CanarySpec, DriftSpec, LearnerSpec
from adaptloop.learners.store import ModelStore
from adaptloop.schemas import ModelVersion, OutcomeEvent, TrainingExample
from adaptloop.schemas.topics import MODEL_UPDATES
from adaptloop.streams import EventProducer
from adaptloop.streams.model_client import ModelClient
from adaptloop.testing import free_port
from adaptloop.worker import settings_env

from .loop_helpers import TopicReader, loop_settings, running_worker, wait_for

pytestmark = pytest.mark.kafka

# examples sent to the learner before serving: 1,000 right, then 1,000 with wrong labels
LEARNED_FIRST = 2000
# decisions served: their outcomes right, then the world's labels flipped
CLEAN, FLIPPED = 600, 1400
SHARE = 0.25


def _serve(
    client: ModelClient,
    producer: EventProducer,
    rows,
    first: int,
    served: list[tuple[str, bool, bool]],
):
    """A decision and its outcome for each row, at about 400 a second; (version, prediction, label)
    of each."""
    for n, (x, y) in enumerate(rows, first):
        answer = client.predict(x, decision_id=f"d{n}")
        producer.send(OutcomeEvent(decision_id=answer.decision_id, label=y, source="test"))
        served.append((answer.model_version, bool(answer.prediction), y))
        if n % 50 == 0:
            producer.flush()
            time.sleep(0.1)
    producer.flush()


def _round_of(records: list[ModelVersion], gate: ModelVersion) -> list[ModelVersion]:
    """The running records of the round ``gate`` ended: those since the last record that ran no
    canary."""
    before = records[: records.index(gate)]
    start = (
        max(i for i, r in enumerate(before) if r.canary is None or r.canary.state != "running") + 1
    )
    return before[start:]


def _expected_figures(gate: ModelVersion, records, served) -> tuple[int, int, float, float]:
    """(canary outcomes, stable outcomes, canary error, stable error) over the decisions the gate
    had learned: decision n is the learner's example LEARNED_FIRST + n + 1; the round counts those
    learned after its first canary version was published, the stable version's from the first
    outcome of a canary version on."""
    assert gate.canary is not None
    running = _round_of(records, gate)
    line, start = {r.version for r in running}, running[0].examples_seen
    errors: dict[str, list[float]] = {"canary": [], "stable": []}
    for n, (version, prediction, label) in enumerate(served):
        if start < LEARNED_FIRST + n + 1 <= gate.examples_seen:
            group = (
                "canary" if version in line else "stable" if version == gate.canary.stable else None
            )
            if group == "canary" or (group == "stable" and errors["canary"]):
                errors[group].append(float(prediction != label))
    canary, stable = errors["canary"], errors["stable"]
    return len(canary), len(stable), sum(canary) / len(canary), sum(stable) / len(stable)


def test_a_worse_canary_is_rolled_back_and_a_better_one_promoted_with_exact_counts(
    kafka_bootstrap, tmp_path
):
    spec = LearnerSpec(
        name="plane",
        recipe="logistic",
        min_examples=1000,
        metrics=["Accuracy"],
        checkpoint_every=200,
        checkpoint_seconds=2.0,  # so a version says when the learner has learned everything sent
        drift=DriftSpec(concept=False, data=False),
        canary=CanarySpec(share=SHARE, min_outcomes=50, confidence=0.99),
    )
    settings = loop_settings(kafka_bootstrap, tmp_path / "home", [spec], partitions=1)
    rows = [
        ({f"x{k}": float(v) for k, v in x.items()}, bool(y))
        for x, y in synth.Hyperplane(seed=7, n_features=4).take(LEARNED_FIRST + CLEAN + FLIPPED)
    ]
    # decision n: (the version that served it, its prediction, label)
    served: list[tuple[str, bool, bool]] = []

    with (
        running_worker(settings, tmp_path / "worker.log") as worker,
        EventProducer(kafka_bootstrap, topic_prefix=settings.topic_prefix) as producer,
        TopicReader(settings, MODEL_UPDATES) as updates,
    ):

        def versions() -> list[ModelVersion]:
            return [e for e in updates.read() if isinstance(e, ModelVersion) and e.model == "plane"]

        def learned(count: int) -> ModelVersion | None:
            return next((v for v in versions() if v.examples_seen == count), None)

        now = datetime.now(UTC)
        for i, (x, y) in enumerate(rows[:LEARNED_FIRST]):  # a good model, then a bad update to it
            label = y if i < LEARNED_FIRST // 2 else not y
            example = TrainingExample(
                model="plane",
                decision_id=f"t{i}",
                model_version="none",
                features=x,
                label=label,
                predicted_at=now,
            )
            producer.send(example)
        producer.flush()
        canary = wait_for(lambda: learned(LEARNED_FIRST), worker=worker)
        assert canary is not None and canary.canary is not None and canary.canary.state == "running"
        stable = next(v for v in versions() if v.servable)  # the first version that may serve
        assert stable.canary is None and canary.canary.stable == stable.version

        with ModelClient(
            "plane",
            bootstrap=kafka_bootstrap,
            store=ModelStore(settings.models_dir),
            prefix=settings.topic_prefix,
            producer=producer,
            wait=60,
        ) as client:
            assert client.wait_for_version(canary.version, timeout=60)
            _serve(client, producer, rows[LEARNED_FIRST : LEARNED_FIRST + CLEAN], 0, served)
            flipped = [(x, not y) for x, y in rows[LEARNED_FIRST + CLEAN :]]
            _serve(client, producer, flipped, CLEAN, served)
        last = wait_for(
            lambda: learned(LEARNED_FIRST + CLEAN + FLIPPED), timeout=300, worker=worker
        )
        records = versions()
        assert last is not None, [
            (r.examples_seen, r.reason, r.canary and r.canary.state) for r in records
        ]

        # adaptloop serve splits as ModelClient does, by the decisions' ids alone.
        assert last.canary is not None and last.canary.state == "running", [
            (r.examples_seen, r.reason, r.canary and r.canary.state) for r in records
        ]
        by_http = _predict_over_http(settings, [f"http-{n}" for n in range(200)])
        expected = {
            f"http-{n}": last.version if in_canary(f"http-{n}", SHARE) else last.canary.stable
            for n in range(200)
        }
        assert by_http == expected and 30 < sum(v == last.version for v in by_http.values()) < 70

    gates = [r for r in records if r.canary is not None and r.canary.state != "running"]
    assert [(g.canary.state, g.reason, g.actor) for g in gates][:2] == [  # type: ignore[union-attr]
        ("rolled_back", "rollback", "policy:canary"),
        ("promoted", "promotion", "policy:canary"),
    ], [(r.examples_seen, r.reason, r.canary and r.canary.state) for r in records]
    rolled_back, promoted = gates[0], gates[1]
    assert rolled_back.canary is not None and promoted.canary is not None

    # Every decision was served by exactly one version; a version of a canary line only served
    # decisions in the canary's share.
    assert len(served) == CLEAN + FLIPPED
    lines = {r.version for r in records if r.canary is not None and r.canary.state == "running"}
    stables = {r.canary.stable for r in records if r.canary is not None}
    assert not lines & stables
    in_share = [in_canary(f"d{n}", SHARE) for n in range(len(served))]
    assert all(in_share[n] for n, (version, _, _) in enumerate(served) if version in lines)
    assert sum(version in lines for version, _, _ in served) > 200

    # The worse canary: back to the stable version, on the exact outcomes of what each group served.
    figures = _expected_figures(rolled_back, records, served)
    gate = rolled_back.canary
    assert (gate.canary_outcomes, gate.stable_outcomes) == figures[
        :2
    ] and gate.canary_outcomes >= 50
    assert (gate.canary_error, gate.stable_error) == pytest.approx(figures[2:])
    assert gate.canary_error > gate.stable_error and gate.evidence_worse >= gate.bound  # type: ignore[operator]
    assert gate.paired_canary_error > gate.paired_stable_error  # type: ignore[operator]
    assert rolled_back.version == gate.stable == stable.version and rolled_back.parent in lines
    assert f"its newest version {gate.canary} stays in the store" in (rolled_back.note or "")
    assert gate.canary in ModelStore(settings.models_dir).versions("plane")

    # The better canary (the world changed; the stable version did not): promoted, to every
    # decision.
    figures = _expected_figures(promoted, records, served)
    gate = promoted.canary
    assert (gate.canary_outcomes, gate.stable_outcomes) == figures[:2]
    assert (gate.canary_error, gate.stable_error) == pytest.approx(figures[2:])
    # (Over the whole round, the line's first versions still served the world as it was: the pairs,
    # served at about the same time, compare like with like.)
    assert gate.paired_canary_error < gate.paired_stable_error  # type: ignore[operator]
    assert gate.evidence_better >= gate.bound  # type: ignore[operator]
    after = records[records.index(promoted) + 1]
    # the next round judges against it
    assert after.canary is not None and after.canary.stable == promoted.version


def _predict_over_http(settings, decision_ids: list[str]) -> dict[str, str]:
    """The version `adaptloop serve` answers each decision with."""
    port = free_port()
    with open(settings.home / "serve.log", "wb") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "adaptloop", "serve", "--port", str(port)],
            env={**os.environ, **settings_env(settings)},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:

            def ready() -> bool:
                try:
                    return http.get("/v1/models/plane").json().get("ready", False)
                except httpx.TransportError:
                    assert server.poll() is None, (settings.home / "serve.log").read_text()
                    return False

            assert wait_for(ready, timeout=120), (settings.home / "serve.log").read_text()
            features = {"x0": 0.5, "x1": 0.5, "x2": 0.5, "x3": 0.5}
            return {
                decision_id: http.post(
                    "/v1/models/plane:predict",
                    json={"features": features, "decision_id": decision_id},
                ).json()["model_version"]
                for decision_id in decision_ids
            }
    finally:
        server.terminate()
        server.wait(30)
