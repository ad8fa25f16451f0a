"""docs/agentops.md for an agent team: its 20 lines run as written against a worker, which routes, counts the
steps and feedback and raises the guardrail alert the page describes; its settings table is the code's."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from adaptloop.learners.guardrails import GuardrailLimits
from adaptloop.schemas import AgentFeedbackEvent, GuardrailAlert
from adaptloop.schemas.topics import AGENT_FEEDBACK, GUARDRAIL_ALERTS
from adaptloop.worker import settings_env

from .loop_helpers import loop_settings, read_until, running_worker

pytestmark = pytest.mark.kafka

PAGE = Path(__file__).resolve().parents[2] / "docs" / "agentops.md"


def test_the_agent_teams_twenty_lines_run_as_written(kafka_bootstrap, tmp_path):
    section = PAGE.read_text().split("## For an agent team", 1)[1].split("\n## ", 1)[0]
    code = re.search(r"```python\n(.*?)```", section, re.S)[1]
    assert len(code.strip().splitlines()) <= 20
    settings = loop_settings(kafka_bootstrap, tmp_path / "home", [], partitions=1)
    # A cost limit below the step's cost: the page's step breaches it.
    env = {**os.environ, **settings_env(settings), "ADAPTLOOP_GUARDRAILS__SESSION_COST": "0.001"}
    with running_worker(
        settings.model_copy(update={"guardrails": GuardrailLimits(session_cost=0.001)}), tmp_path / "w.log"
    ):
        done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        events = read_until(
            settings,
            [AGENT_FEEDBACK, GUARDRAIL_ALERTS],
            lambda seen: any(isinstance(e, GuardrailAlert) for e in seen),
            timeout=60,
        )
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
