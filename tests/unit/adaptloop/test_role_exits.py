"""How a role's process ends, by what stopped it: the worker restarts an outage without counting it,
and never restarts a refusal. Each case runs a real role process whose agent raises what Kafka
raised."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from adaptloop.streams.outage import OUTAGE_EXIT, REFUSED_EXIT

AGENT = """
import adaptloop.roles as roles
from confluent_kafka import KafkaError, KafkaException
from adaptloop.schemas.errors import AuthenticationFailed

def archive(settings, stop):
    try:
        {body}
    finally:
        {closing}

roles.wait_patiently = lambda *args, **kwargs: None  # this process has no broker: the agent is what is tested
roles.AGENTS["archive"] = archive
roles.run_role("archive")
"""


def run_role(tmp_path: Path, body: str, closing: str = "pass") -> tuple[int, str]:
    env = {name: value for name, value in os.environ.items() if not name.startswith("ADAPTLOOP_")}
    env["ADAPTLOOP_HOME"] = str(tmp_path)
    code = AGENT.replace("{body}", body).replace("{closing}", closing)
    done = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return done.returncode, done.stderr


@pytest.mark.parametrize(
    ("body", "closing"),
    [
        # The archive after a broker restart: its commit finds no coordinator, and so does
        # Consumer.close(), which raises a bare KafkaError (no `except` clause with a class catches
        # it).
        (
            "raise KafkaException(KafkaError(KafkaError._WAIT_COORD, 'Commit failed'))",
            (
                "raise KafkaError(KafkaError._WAIT_COORD, 'Commit failed: Local: Waiting for "
                "coordinator')"
            ),
        ),
        ("raise KafkaException(KafkaError(KafkaError.NOT_COORDINATOR))", "pass"),
        ("pass", "raise KafkaError(KafkaError.NOT_COORDINATOR, 'Commit failed')"),
    ],
)
def test_a_coordinator_moving_is_an_outage_however_it_is_raised(tmp_path, body, closing):
    status, log = run_role(tmp_path, body, closing)
    assert status == OUTAGE_EXIT, log
    assert "archive stops: Kafka does not answer" in log and "Traceback" not in log


def test_a_refused_login_stops_the_role_for_good_in_one_line(tmp_path):
    status, log = run_role(
        tmp_path,
        "raise AuthenticationFailed('b:9094', \"user 'worker' with SASL PLAIN over "
        "SASL_SSL\", 'refused')",
    )
    assert status == REFUSED_EXIT, log
    [line] = [line for line in log.splitlines() if line.strip()]
    assert line.endswith(
        "archive ERROR adaptloop.roles: archive stops: authentication failed at Kafka "
        "b:9094 as user 'worker' with "
        "SASL PLAIN over SASL_SSL: refused; check the kafka setting's sasl.username, "
        "sasl.password and "
        "sasl.mechanism (ADAPTLOOP_KAFKA__SASL_USERNAME, ...)"
    )


def test_a_bug_is_a_crash_with_its_traceback(tmp_path):
    status, log = run_role(tmp_path, "raise ZeroDivisionError('a bug')")
    assert status == 1
    assert "Traceback" in log and "ZeroDivisionError: a bug" in log
