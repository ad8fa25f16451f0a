"""One bad record cannot break a model: a service in another language sends 100 outcomes labelled
"true" (a string) for a Hoeffding tree that learns booleans. Each is refused where it entered, the
model keeps serving and learning, the loop says it was sick while it was, and the final model is
River's on the valid examples only."""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request

import orjson
import pytest
from river import datasets, tree
from typer.testing import CliRunner

from adaptloop.cli import app
from adaptloop.learners.spec import LearnerSpec
from adaptloop.learners.store import ModelStore, model_bytes
from adaptloop.schemas import DeadLetter, DriftAlert, ModelHealth, ModelVersion, OutcomeEvent
from adaptloop.schemas.topics import (
    DEAD_LETTERS,
    DRIFT_ALERTS,
    MODEL_HEALTH,
    MODEL_UPDATES,
    OUTCOMES,
)
from adaptloop.streams import EventProducer, ModelClient
from adaptloop.testing import free_port

from .loop_helpers import loop_settings, read_until, running_worker

pytestmark = pytest.mark.kafka

BAD = range(100, 200)  # the decisions whose outcomes come from the other service, labelled "true"


def _watch_health(port: int, stop: threading.Event, seen: list[dict]) -> None:
    while not stop.is_set():
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
        except urllib.error.HTTPError as error:  # 503: the body says why
            seen.append(orjson.loads(error.read()))
        except OSError:
            pass
        stop.wait(0.2)


def test_a_string_label_for_a_tree_of_booleans_is_refused_and_the_model_never_breaks(
    kafka_bootstrap, tmp_path, monkeypatch
):
    spec = LearnerSpec(
        name="poison",
        recipe="hoeffding",
        metrics=["Accuracy"],
        checkpoint_every=100,
        checkpoint_seconds=None,
        min_examples=0,
    )
    port = free_port()
    settings = loop_settings(kafka_bootstrap, tmp_path / "home", [spec], partitions=1).model_copy(
        update={"metrics_port": port}
    )
    rows = list(datasets.Phishing())[:700]
    failures, sick_reports, stop = 0, [], threading.Event()
    with running_worker(settings, tmp_path / "worker.log") as worker:
        watcher = threading.Thread(
            target=_watch_health, args=(port, stop, sick_reports), daemon=True
        )
        watcher.start()
        with (
            ModelClient(
                "poison",
                bootstrap=kafka_bootstrap,
                store=ModelStore(settings.models_dir),
                prefix=settings.topic_prefix,
                wait=60,
            ) as client,
            EventProducer(kafka_bootstrap, topic_prefix=settings.topic_prefix) as producer,
        ):
            for i, (x, y) in enumerate(rows):
                try:
                    client.predict(x, decision_id=f"d{i}")
                except Exception:
                    failures += 1
                if i in BAD:  # as a service in another language writes it
                    producer.send_bytes(
                        OUTCOMES.full_name(settings.topic_prefix),
                        f"d{i}".encode(),
                        orjson.dumps(
                            {"decision_id": f"d{i}", "label": "true", "source": "node-service"}
                        ),
                    )
                else:
                    producer.send(OutcomeEvent(decision_id=f"d{i}", label=y, source="billing"))
                if i % 50 == 49:
                    producer.flush()
                    time.sleep(0.2)
        learned = len(rows) - len(BAD)
        versions = read_until(
            settings,
            [MODEL_UPDATES],
            lambda seen: any(
                isinstance(v, ModelVersion) and v.examples_seen == learned for v in seen
            ),
            timeout=120,
            worker=worker,
        )
        health = read_until(
            settings,
            [MODEL_HEALTH],
            lambda seen: any(
                isinstance(h, ModelHealth)
                and h.status == "ok"
                and h.window == 200
                and h.rejected == 0
                for h in seen
            ),
            timeout=120,
            worker=worker,
        )
        stop.set()
    assert failures == 0  # the service never saw a failed prediction

    final = next(v for v in versions if isinstance(v, ModelVersion) and v.examples_seen == learned)
    reference = tree.HoeffdingTreeClassifier()
    for i, (x, y) in enumerate(rows):
        if i not in BAD:
            reference.predict_proba_one(x)
            reference.learn_one(x, y)
    assert ModelStore(settings.models_dir).load_bytes("poison", final.version) == model_bytes(
        reference
    )

    letters = [
        d
        for d in read_until(settings, [DEAD_LETTERS], lambda s: len(s) >= len(BAD), timeout=120)
        if isinstance(d, DeadLetter)
    ]
    assert len(letters) == len(BAD) and len({d.offset for d in letters}) == len(BAD)
    assert {d.kind for d in letters} == {"rejected"}
    assert {d.reason for d in letters} == {
        ("label 'true' is a string; model 'poison' (binary) takes true or false")
    }

    alerts = [
        a
        for a in read_until(
            settings,
            [DRIFT_ALERTS],
            # The rejecting alert itself: another health signal (no outcomes yet, on a slow machine)
            # may come first.
            lambda s: any(
                isinstance(a, DriftAlert) and a.kind == "health" and a.signal == "rejecting"
                for a in s
            ),
            timeout=120,
        )
        if isinstance(a, DriftAlert)
    ]
    rejecting = [a for a in alerts if a.kind == "health" and a.signal == "rejecting"]
    assert len(rejecting) == 1 and rejecting[0].model == "poison"
    assert "label 'true' is a string" in (rejecting[0].reason or "")
    # While it rejected its outcomes, the worker's /health said so, naming the model.
    assert any(
        any("model poison is sick" in problem for problem in report["problems"])
        for report in sick_reports
    )
    sick = [h for h in health if isinstance(h, ModelHealth) and h.status == "sick"]
    assert sick and sick[0].reasons == ["rejecting"] and sick[0].rejected_total > 0
    # adaptloop status shows what the model refused, and the last reasons.
    for name, value in {
        "BOOTSTRAP": kafka_bootstrap,
        "TOPIC_PREFIX": settings.topic_prefix,
        "HOME": str(settings.home),
        "GROUP": settings.group,
    }.items():
        monkeypatch.setenv(f"ADAPTLOOP_{name}", value)
    monkeypatch.setenv("COLUMNS", "300")  # a wide terminal: the table's cells do not wrap
    status = CliRunner().invoke(app, ["status"])
    assert status.exit_code == 0, status.output
    row = next(
        line
        for line in status.output.splitlines()
        if line.startswith("│ poison") and " ok " in line
    )
    assert "0 of 200" in row and f"{len(BAD)}" in row
    assert "label 'true' is a string" in row  # the last reasons
