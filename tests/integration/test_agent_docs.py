"""docs/agentops.md for an agent team: its 20 lines run as written against a worker, which routes,
counts the steps and feedback and raises the guardrail alert the page describes; its settings table
is the code's."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import orjson
import pytest

from adaptloop.learners.guardrails import GuardrailLimits
from adaptloop.schemas import AgentFeedbackEvent, GuardrailAlert
from adaptloop.schemas.topics import AGENT_FEEDBACK, GUARDRAIL_ALERTS
from adaptloop.streams.notify import Webhook
from adaptloop.worker import settings_env

from .loop_helpers import loop_settings, read_until, running_worker

pytestmark = pytest.mark.kafka

PAGE = Path(__file__).resolve().parents[2] / "docs" / "agentops.md"


def test_the_agent_teams_twenty_lines_run_as_written(kafka_bootstrap, tmp_path):
    section = PAGE.read_text().split("## For an agent team", 1)[1].split("\n## ", 1)[0]
    code = re.search(r"```python\n(.*?)```", section, re.S)[1]
    assert len(code.strip().splitlines()) <= 20
    settings = loop_settings(kafka_bootstrap, tmp_path / "home", [], partitions=1)
    # A worker whose session cost limit is below the page's step's cost: the step breaches it; its
    # notify role posts the alert to a webhook (a server on 127.0.0.1 here).
    posted: list[dict] = []

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            posted.append(orjson.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    webhook = Webhook(url=f"http://127.0.0.1:{server.server_address[1]}/hook")
    worker_settings = settings.model_copy(
        update={"guardrails": GuardrailLimits(session_cost=0.001), "webhooks": [webhook]}
    )
    with running_worker(worker_settings, tmp_path / "w.log"):
        env = {**os.environ, **settings_env(settings)}
        done = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr
        events = read_until(
            settings,
            [AGENT_FEEDBACK, GUARDRAIL_ALERTS],
            lambda seen: any(isinstance(e, GuardrailAlert) for e in seen),
            timeout=120,
        )
        deadline = time.monotonic() + 120
        while not posted and time.monotonic() < deadline:
            time.sleep(0.2)
    server.shutdown()
    assert posted == [
        {"text": (":warning: guardrail session_cost on s-1: 0.002 > 0.001 (agent support)")}
    ]
    feedback = [e for e in events if isinstance(e, AgentFeedbackEvent)]
    assert [e.kind for e in feedback] == ["route", "step", "thumbs"]
    assert feedback[0].variant == feedback[1].variant and 0 < feedback[0].value <= 1
    (alert,) = [e for e in events if isinstance(e, GuardrailAlert)]
    assert (alert.rule, alert.subject, alert.observed) == ("session_cost", "s-1", 0.002)


def test_the_guardrail_table_is_the_codes():
    rows = dict(re.findall(r"^\| `(\w+)` \| `(.*?)` \|", PAGE.read_text(), re.M))
    assert {name: repr(field.default) for name, field in GuardrailLimits.model_fields.items()} == {
        name: rows[name] for name in GuardrailLimits.model_fields
    }
