"""Early mistakes are said once: one line, no traceback, a non-zero exit, and soon (``adaptloop``
run as a user runs it, in a process of its own; nothing listens where these point)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import orjson

from adaptloop.testing import free_port


def run(tmp_path: Path, *args: str, **settings: str) -> tuple[int, list[str], float]:
    """``adaptloop *args`` with only these ADAPTLOOP_ settings: exit status, output lines, seconds
    taken."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("ADAPTLOOP_")}
    env |= {"ADAPTLOOP_HOME": str(tmp_path / "home"), "PYTHONHASHSEED": "0", "COLUMNS": "200"}
    env |= {f"ADAPTLOOP_{name.upper()}": value for name, value in settings.items()}
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "adaptloop", *args],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    return done.returncode, lines, time.monotonic() - started


CLIENT_TIMEOUT = 30.0
"""Seconds a Kafka client waits by default: a command whose first client waits it out before the
command says anything runs at least this long beyond its start-up, however loaded the machine."""


def start_up(tmp_path: Path, *args: str) -> float:
    """Seconds ``adaptloop *args`` takes to load what it loads and stop at a setting that is not
    JSON, before it does anything: the part of a run that a loaded machine stretches several times
    over (River's imports alone take seconds there), measured as the run it is compared with is,
    right after it."""
    status, lines, seconds = run(tmp_path, *args, models="not json")
    assert status == 78, lines
    return seconds


def test_a_misspelt_recipe_stops_the_worker_at_once_in_one_line(tmp_path):
    models = orjson.dumps([{"name": "churn", "recipe": "logisitc"}]).decode()
    status, lines, seconds = run(
        tmp_path, "worker", bootstrap=f"127.0.0.1:{free_port()}", models=models
    )
    assert status == 78  # EX_CONFIG: a supervisor need not start it again
    assert lines == [
        (
            "error: model 'churn': recipe 'logisitc' is unknown; choices: logistic, "
            "hoeffding, linear, "
            "hoeffding_regressor, or 'module:function' returning a River estimator"
        )
    ]
    # Before any role or broker: no wait beyond its start-up, where it crashed for 70 s or waited
    # for ever for the broker.
    assert seconds - start_up(tmp_path, "worker") < CLIENT_TIMEOUT
    assert not (tmp_path / "home" / "metrics").exists()  # no role was started


def test_a_setting_pydantic_refuses_is_one_line_naming_the_field_the_value_and_the_choices(
    tmp_path,
):
    models = orjson.dumps([{"name": "churn", "drift": {"policy": "rollbak"}}]).decode()
    status, lines, _ = run(tmp_path, "worker", bootstrap=f"127.0.0.1:{free_port()}", models=models)
    assert (status, lines) == (
        78,
        [
            (
                "error: Settings: models[0].drift.policy = 'rollbak': Input should be 'alert', "
                "'challenger' or 'rollback'"
            )
        ],
    )


def test_status_says_in_one_line_within_seconds_that_nothing_answers(tmp_path):
    address = f"127.0.0.1:{free_port()}"
    status, lines, seconds = run(tmp_path, "status", bootstrap=address)
    assert status == 1
    assert len(lines) == 1, lines  # not librdkafka's line per attempt, not a traceback
    line = lines[0]
    assert line.startswith(
        f"error: no Kafka at {address}; run 'adaptloop kafka up' or set ADAPTLOOP_BOOTSTRAP ("
    )
    tried = re.search(
        r"\(tried for (\d+)s, no login \(PLAINTEXT\): Connect to ipv4#\S+ failed: "
        r"Connection refused",
        line,
    )
    # 5 s, and a loaded machine's lateness
    assert tried is not None and 5 <= int(tried[1]) <= 10, line
    # 5 s of trying (said in the line) beyond its start-up, and no client's timeout waited out
    assert seconds - start_up(tmp_path, "status") < CLIENT_TIMEOUT


def test_every_kafka_command_fails_fast_the_same_way(tmp_path):
    address = f"127.0.0.1:{free_port()}"
    for command in (["topics", "create"], ["deadletters", "list"]):
        status, lines, seconds = run(tmp_path, *command, bootstrap=address)
        assert status == 1, (command, lines)
        assert len(lines) == 1 and lines[0].startswith(f"error: no Kafka at {address};"), (
            command,
            lines,
        )
        assert seconds - start_up(tmp_path, *command) < CLIENT_TIMEOUT, command


def test_a_command_that_needs_no_kafka_does_not_check_it(tmp_path):
    status, lines, _ = run(tmp_path, "settings", bootstrap=f"127.0.0.1:{free_port()}")
    assert status == 0, lines


def test_a_setting_that_is_not_json_is_one_line(tmp_path):
    status, lines, _ = run(tmp_path, "status", models="not json")
    assert status == 78
    assert lines == [
        (
            'error: error parsing value for field "models" from source "EnvSettingsSource": '
            "Expecting value: line 1 "
            """column 1 (char 0) (a list or table setting takes JSON, e.g. ADAPTLOOP_MODELS='[{"name": "churn"}]')"""
        )
    ]


def test_serve_refuses_a_model_the_settings_do_not_name_and_a_port_out_of_range(tmp_path):
    models = orjson.dumps([{"name": "churn"}, {"name": "fraud"}]).decode()
    status, lines, _ = run(
        tmp_path, "serve", "--model", "chrun", bootstrap=f"127.0.0.1:{free_port()}", models=models
    )
    assert (status, lines) == (
        1,
        [("error: no model 'chrun' in ADAPTLOOP_MODELS; choices: churn, fraud")],
    )
    status, lines, _ = run(tmp_path, "serve", "--port", "80000", models=models)
    assert status == 2, lines
    assert any(
        "Invalid value for '--port': Input should be less than or equal to 65535" in line
        for line in lines
    )


def test_a_model_spec_with_a_typo_is_refused_in_one_line_before_anything_is_sent(tmp_path):
    # Nothing listens at the broker's address: the spec is checked before Kafka is asked anything.
    broker = f"127.0.0.1:{free_port()}"
    status, lines, _ = run(
        tmp_path, "models", "add", "churn", "--recipe", "logisitc", bootstrap=broker
    )
    assert status == 78
    assert lines == [
        (
            "error: model 'churn': recipe 'logisitc' is unknown; choices: logistic, "
            "hoeffding, linear, "
            "hoeffding_regressor, or 'module:function' returning a River estimator"
        )
    ]
    status, lines, _ = run(
        tmp_path, "models", "add", "churn", "--set", "drift.polcy=challenger", bootstrap=broker
    )
    assert (status, lines) == (
        78,
        [("error: model 'churn': drift.polcy = 'challenger': Extra inputs are not permitted")],
    )
    status, lines, _ = run(
        tmp_path, "models", "add", "churn", "--param", "grace_period", bootstrap=broker
    )
    assert (status, lines) == (78, ["error: --param 'grace_period': expected NAME=VALUE"])
