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


STUCK_COMMIT = """
import threading
from concurrent.futures import ThreadPoolExecutor
from confluent_kafka import TopicPartition
from adaptloop.streams import producer as sdk

sdk.STUCK_CALL_GRACE_SECONDS = 0.5

class Stuck:  # librdkafka waiting for a group coordinator it lost track of
    def begin_transaction(self): pass
    def send_offsets_to_transaction(self, *args): threading.Event().wait()
    def commit_transaction(self, *args): pass
    def flush(self, timeout=None): return 0
    def __len__(self): return 0

output = sdk.EventProducer("127.0.0.1:9")
output._producer = Stuck()
# as the join commits: in a pool's (non-daemon) thread, waited for by the role's thread
committer = ThreadPoolExecutor(1)
try:
    committer.submit(
        output.commit_transaction, [TopicPartition("t", 0, 1)], object(), 1.0
    ).result()
finally:
    output.abort_transaction()
    committer.shutdown()
""".strip()


def test_a_transaction_stuck_in_librdkafka_stops_the_role_as_an_outage_and_its_process_ends(
    tmp_path,
):
    body = STUCK_COMMIT.replace("\n", "\n        ")
    status, log = run_role(tmp_path, body)
    assert status == OUTAGE_EXIT, log
    assert "archive stops: Kafka does not answer (librdkafka's send_offsets_to_transaction" in log
