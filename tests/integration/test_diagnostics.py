"""A refused login is said as such, naming the user and the mechanism (never the password), by
``adaptloop status``, by the worker and by each of its roles, which stop rather than wait: retrying
a wrong password cannot help."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from adaptloop.streams.outage import REFUSED_EXIT

pytestmark = pytest.mark.kafka

WRONG = "not-the-password"


def run(tmp_path: Path, args: list[str], bootstrap: str, kafka: dict[str, str]) -> tuple[int, str]:
    """``python *args`` as ``worker`` with a wrong password: exit status and output."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("ADAPTLOOP_")}
    env |= {
        "ADAPTLOOP_HOME": str(tmp_path / "home"),
        "ADAPTLOOP_BOOTSTRAP": bootstrap,
        "ADAPTLOOP_KAFKA": orjson.dumps({**kafka, "sasl.password": WRONG}).decode(),
        "ADAPTLOOP_MODELS": orjson.dumps([{"name": "churn"}]).decode(),
        "ADAPTLOOP_METRICS_PORT": "null",
        "PYTHONHASHSEED": "0",
        "COLUMNS": "400",
    }
    done = subprocess.run(
        [sys.executable, *args],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return done.returncode, done.stdout + done.stderr


def said_refused(output: str) -> list[str]:
    lines = [line for line in output.splitlines() if "authentication failed at Kafka" in line]
    assert "Traceback" not in output and WRONG not in output, output
    return lines


def test_status_says_the_login_was_refused(secure_kafka, tmp_path):
    address = secure_kafka.secure_bootstrap
    status, output = run(
        tmp_path, ["-m", "adaptloop", "status"], address, secure_kafka.client_properties("worker")
    )
    assert status == REFUSED_EXIT, output
    assert [line.strip() for line in output.splitlines() if line.strip()] == said_refused(output)
    assert said_refused(output)[0].startswith(
        f"error: authentication failed at Kafka {address} as user 'worker' with SASL "
        "SCRAM-SHA-512 over SASL_SSL: "
        "SASL authentication error: Authentication failed"
    )


def test_the_worker_stops_at_once_saying_the_login_was_refused(secure_kafka, tmp_path):
    kafka = secure_kafka.client_properties("worker")
    status, output = run(
        tmp_path,
        ["-m", "adaptloop", "worker", "--role", "archive"],
        secure_kafka.secure_bootstrap,
        kafka,
    )
    assert status == REFUSED_EXIT, output
    assert len(said_refused(output)) == 1, output
    assert "user 'worker' with SASL SCRAM-SHA-512" in said_refused(output)[0]


@pytest.mark.parametrize("role", ["archive", "learn", "join"])
def test_each_role_stops_with_the_refused_exit_naming_user_and_mechanism(
    secure_kafka, tmp_path, role
):
    """What a role does when its login is refused after the worker's own check passed (a password
    rotated)."""
    kafka = secure_kafka.client_properties("worker")
    code = f"from adaptloop.roles import run_role; run_role({role!r})"
    status, output = run(tmp_path, ["-c", code], secure_kafka.secure_bootstrap, kafka)
    assert status == REFUSED_EXIT, output  # the worker does not start it again
    [line] = said_refused(output)
    assert f"{role} ERROR adaptloop.roles: {role} stops: authentication failed" in line
    assert "as user 'worker' with SASL SCRAM-SHA-512 over SASL_SSL" in line


THREADS_AT_EXIT = """
import atexit, os, runpy, sys

def kafka_threads_at_exit():
    names = []
    for task in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{{task}}/comm") as comm:
                names.append(comm.read().strip())
        except OSError:
            pass  # ended meanwhile
    with open({path!r}, "w") as out:
        out.write(" ".join(sorted(name for name in names if name.startswith("rdk:"))))

atexit.register(kafka_threads_at_exit)
{run}
"""


@pytest.mark.parametrize(
    "run_it",
    [
        "sys.argv = ['adaptloop', 'status']; runpy.run_module('adaptloop', run_name='__main__')",
        "from adaptloop.roles import run_role; run_role('learn')",
    ],
    ids=["status", "learn-role"],
)
def test_a_refused_login_leaves_no_kafka_client_running_at_exit(secure_kafka, tmp_path, run_it):
    """The refused clients are destroyed before the process exits: a librdkafka thread still
    reconnecting over SASL_SSL when OpenSSL's exit cleanup frees its locks crashes the process
    (SIGSEGV instead of the refused exit). confluent-kafka keeps the exception its ``error_cb``
    raised, and with it every frame it passed through, so nothing is left to chance."""
    threads = tmp_path / "threads-at-exit.txt"
    code = THREADS_AT_EXIT.format(path=str(threads), run=run_it)
    status, output = run(
        tmp_path,
        ["-c", code],
        secure_kafka.secure_bootstrap,
        secure_kafka.client_properties("worker"),
    )
    assert status == REFUSED_EXIT, output
    assert said_refused(output), output
    left = threads.read_text()
    assert left == "", f"Kafka client threads still running at exit: {left}"
