"""Dead letters are counted once, across a crash of the worker, and can be replayed once a fix is
in."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from typer.testing import CliRunner

from adaptloop.cli import app
from adaptloop.learners.spec import LearnerSpec
from adaptloop.schemas import (
    DeadLetter,
    DeadLetterReplay,
    ModelVersion,
    OutcomeEvent,
    PredictionEvent,
)
from adaptloop.schemas.topics import DEAD_LETTER_REPLAYS, DEAD_LETTERS, MODEL_UPDATES
from adaptloop.streams import EventProducer
from adaptloop.worker import kill_worker_process, stop_worker_process

from .loop_helpers import Worker, loop_settings, read_until

pytestmark = pytest.mark.kafka


def _decisions(producer: EventProducer, model: str, ids: range, label: object = None) -> None:
    at = datetime.now(UTC)
    for i in ids:
        producer.send(
            PredictionEvent(
                decision_id=f"{model}-{i}",
                model=model,
                model_version="v",
                features={"x": i / 10},
                timestamp=at + timedelta(milliseconds=i),
            )
        )
        producer.send(
            OutcomeEvent(
                decision_id=f"{model}-{i}",
                label=label if label is not None else i % 3 == 0,
                source="test",
                timestamp=at + timedelta(milliseconds=i),
            )
        )
    producer.flush()


def _letters(settings, source: str, count: int, worker: Worker | None = None) -> list[DeadLetter]:
    seen = read_until(
        settings,
        [DEAD_LETTERS],
        lambda s: (
            sum(isinstance(d, DeadLetter) and d.source_topic.endswith(source) for d in s) >= count
        ),
        timeout=90,
        worker=worker,
    )
    return [d for d in seen if isinstance(d, DeadLetter) and d.source_topic.endswith(source)]


def _learned(settings, count: int, worker: Worker) -> None:
    def done(seen: list) -> bool:
        return any(
            isinstance(v, ModelVersion) and v.model == "once" and v.examples_seen >= count
            for v in seen
        )

    assert done(read_until(settings, [MODEL_UPDATES], done, timeout=120, worker=worker)), (
        f"{count} never learned"
    )


def test_a_crash_does_not_dead_letter_a_record_twice_and_a_fixed_record_is_replayed_once(
    kafka_bootstrap, tmp_path, monkeypatch
):
    spec = LearnerSpec(
        name="once",
        recipe="logistic",
        metrics=["Accuracy"],
        checkpoint_every=100,
        # no version between the ghosts and the crash: the restart reads them again
        checkpoint_seconds=None,
        min_examples=0,
    )
    settings = loop_settings(kafka_bootstrap, tmp_path / "home", [spec], partitions=1)
    worker = Worker(settings, tmp_path / "worker-1.log")
    try:
        with EventProducer(kafka_bootstrap, topic_prefix=settings.topic_prefix) as producer:
            _decisions(producer, "once", range(150))
            _learned(settings, 100, worker)
            # a model without a spec: the learner dead-letters each
            _decisions(producer, "ghost", range(80))
            # integers for a binary model: the join refuses
            _decisions(producer, "once", range(150, 160), label=1)
            assert len(_letters(settings, "training-examples", 80, worker)) == 80
            assert len(_letters(settings, "outcomes", 10, worker)) == 10
        # after the ghosts' letters, before a checkpoint covers them
        kill_worker_process(worker.process)
        # The operator widens the contract (0 and 1 are labels too) and restarts the worker.
        fixed = settings.model_copy(
            update={
                "models": [spec.model_copy(update={"labels_01": True, "checkpoint_seconds": 1.0})]
            }
        )
        worker = Worker(fixed, tmp_path / "worker-2.log")
        with EventProducer(kafka_bootstrap, topic_prefix=settings.topic_prefix) as producer:
            _decisions(producer, "once", range(160, 250))
        _learned(settings, 240, worker)
        # Each ghost is still one dead letter, though the restarted learner read them all again.
        letters = _letters(settings, "training-examples", 80, worker)
        assert len(letters) == 80 and len({d.offset for d in letters}) == 80

        for name, value in {
            "BOOTSTRAP": kafka_bootstrap,
            "TOPIC_PREFIX": settings.topic_prefix,
            "HOME": str(settings.home),
        }.items():
            monkeypatch.setenv(f"ADAPTLOOP_{name}", value)
        monkeypatch.setenv("COLUMNS", "300")  # a wide terminal: the table's cells do not wrap
        listed = CliRunner().invoke(app, ["deadletters", "list"])
        assert listed.exit_code == 0, listed.output
        assert "label … is an integer; model '…' (binary) takes true or false" in listed.output
        replay = [
            "deadletters",
            "replay",
            "--reason",
            "is an integer",
            "--note",
            "labels_01 set",
            "--yes",
        ]
        first = CliRunner().invoke(app, replay, terminal_width=250)
        assert first.exit_code == 0, first.output
        assert "replayed 10 record(s)" in first.output
        # the ten outcomes joined their predictions and were learned
        _learned(settings, 250, worker)
        again = CliRunner().invoke(app, replay, terminal_width=250)
        assert "10 letter(s) chosen, 10 replayed before" in again.output
        replays = read_until(settings, [DEAD_LETTER_REPLAYS], lambda s: len(s) >= 10, timeout=120)
        assert len({r.letter for r in replays if isinstance(r, DeadLetterReplay)}) == 10
        assert {r.note for r in replays if isinstance(r, DeadLetterReplay)} == {"labels_01 set"}
    finally:
        stop_worker_process(worker.process)
    versions = read_until(
        settings,
        [MODEL_UPDATES],
        lambda s: any(isinstance(v, ModelVersion) and v.examples_seen == 250 for v in s),
        timeout=120,
    )
    # learned once each
    assert max(v.examples_seen for v in versions if isinstance(v, ModelVersion)) == 250
