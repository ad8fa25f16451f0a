"""A service folder with its own ``schemas.py`` and ``learners.py`` (common in FastAPI and pydantic
apps) runs a worker and a service: adaptloop installs one import name, so the folder's modules never
shadow its own."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import uuid

import orjson
import pytest

from adaptloop.streams import ensure_topics

pytestmark = pytest.mark.kafka

SERVICE = textwrap.dedent("""
    import random

    from schemas import Order          # the service's own module, not adaptloop's
    from learners import describe      # likewise
    from adaptloop import EventProducer, ModelClient, OutcomeEvent

    rng = random.Random(1)
    with ModelClient.from_settings("churn", wait=120) as model, EventProducer.from_settings() as events:
        for i in range(600):
            order = Order(amount=rng.uniform(0, 10))
            decision = model.predict({"amount": order.amount})
            events.send(OutcomeEvent(decision_id=decision.decision_id, label=order.amount > 5, source="clash"))
        events.flush()
        model.wait_for(lambda version: version.examples_seen >= 500, timeout=120)
    print(describe(), model.version.examples_seen)
""")


def test_a_worker_and_a_service_run_from_a_folder_with_its_own_schemas_module(
    kafka_bootstrap, tmp_path
):
    service = tmp_path / "service"
    service.mkdir()
    (service / "schemas.py").write_text(
        "from pydantic import BaseModel\n\nclass Order(BaseModel):\n    amount: float\n"
    )
    (service / "learners.py").write_text(
        "def describe() -> str:\n    return 'the service learners module'\n"
    )
    (service / "service.py").write_text(SERVICE)
    prefix = f"clash{uuid.uuid4().hex[:6]}."
    ensure_topics(kafka_bootstrap, prefix=prefix, partitions=2)
    spec = {
        "name": "churn",
        "recipe": "logistic",
        "checkpoint_every": 100,
        "checkpoint_seconds": 1.0,
        "default_prediction": False,
    }
    env = {
        **os.environ,
        "ADAPTLOOP_BOOTSTRAP": kafka_bootstrap,
        "ADAPTLOOP_TOPIC_PREFIX": prefix,
        "ADAPTLOOP_HOME": str(tmp_path / "home"),
        "ADAPTLOOP_MODELS": orjson.dumps([spec]).decode(),
        "ADAPTLOOP_GROUP": f"clash{uuid.uuid4().hex[:6]}",
        "ADAPTLOOP_METRICS_PORT": "null",
        "ADAPTLOOP_SNAPSHOT_SECONDS": "null",
    }
    adaptloop = str(os.path.join(os.path.dirname(sys.executable), "adaptloop"))
    with open(tmp_path / "worker.log", "wb") as log:
        worker = subprocess.Popen(
            [adaptloop, "worker"],
            cwd=service,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        result = subprocess.run(
            [sys.executable, "service.py"],
            cwd=service,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert worker.poll() is None, (tmp_path / "worker.log").read_text()[-3000:]
        assert result.returncode == 0, result.stderr[-3000:]
        described, learned = result.stdout.split()[-5:-1], int(result.stdout.split()[-1])
        assert " ".join(described) == "the service learners module"
        assert learned >= 500
    finally:
        worker.terminate()
        worker.wait(60)
    assert "ModuleNotFoundError" not in (tmp_path / "worker.log").read_text()
