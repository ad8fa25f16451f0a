"""What the CLI prints of data (labels, reasons, query results) comes out as it is: text like
``[/x]`` or ``[bold]`` is never read as rich markup, which would end the command with a MarkupError
or eat the text."""

from __future__ import annotations

import orjson
import pytest
from typer.testing import CliRunner

from adaptloop.cli import app
from adaptloop.learners.spec import LearnerSpec
from adaptloop.samples import sample_events
from adaptloop.schemas import DeadLetter, ModelVersion
from adaptloop.schemas.system import ModelHealth
from adaptloop.snapshots.snapshot import create_snapshot
from adaptloop.streams import ensure_topics
from adaptloop.streams.producer import EventProducer

pytestmark = pytest.mark.kafka

CLOSING, OPENING = "label [/x] is not a class", "reason [bold]loud[/bold] and [red]red"


@pytest.fixture(autouse=True)
def _wide(monkeypatch):
    # rich's width where the output is not a terminal: no cell is wrapped
    monkeypatch.setenv("COLUMNS", "400")


def _cli(*args: str):
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, (result.output, result.exception)
    return result.output


@pytest.fixture
def loop(kafka_bootstrap, topic_prefix, tmp_path, monkeypatch):
    ensure_topics(kafka_bootstrap, prefix=topic_prefix, partitions=1)
    spec = LearnerSpec(name="churn")
    for env, value in {
        "BOOTSTRAP": kafka_bootstrap,
        "TOPIC_PREFIX": topic_prefix,
        "HOME": str(tmp_path),
        "MODELS": orjson.dumps([spec.model_dump(mode="json")]).decode(),
    }.items():
        monkeypatch.setenv(f"ADAPTLOOP_{env}", value)
    return kafka_bootstrap, topic_prefix


def test_dead_letters_with_markup_in_their_reasons_are_listed_as_they_are(loop):
    bootstrap, prefix = loop
    with EventProducer(bootstrap, topic_prefix=prefix) as producer:
        for reason in (CLOSING, OPENING):
            producer.send(
                DeadLetter(
                    source_topic=f"{prefix}outcomes",
                    partition=0,
                    offset=0,
                    key=None,
                    value=b"{}",
                    kind="invalid",
                    reason=reason,
                    consumer="join",
                )
            )
    output = _cli("deadletters", "list")
    assert "dead letters (2)" in output
    rows = [line for line in output.splitlines() if "join" in line]
    assert len(rows) == 2
    assert any(CLOSING in row for row in rows) and any(OPENING in row for row in rows), output


def test_status_prints_health_reasons_with_markup_as_they_are(loop):
    bootstrap, prefix = loop
    version = next(iter(sample_events(ModelVersion, 1))).model_copy(update={"model": "churn"})
    health = ModelHealth(
        model="churn",
        status="sick",
        reasons=["[/x]"],
        window=10,
        learned=5,
        rejected=5,
        errors=0,
        rejected_total=5,
        last_rejections=[CLOSING, OPENING],
    )
    with EventProducer(bootstrap, topic_prefix=prefix) as producer:
        producer.send(version)
        producer.send(health)
    output = _cli("status")
    assert "sick: [/x]" in output
    assert CLOSING in output and OPENING in output
    assert version.version in output


def test_audit_prints_query_results_and_column_names_with_markup_as_they_are(tmp_path):
    snapshot = create_snapshot(tmp_path / "archive", None, tmp_path / "s.duckdb").path
    output = _cli(
        "audit",
        f"SELECT '{CLOSING}' AS \"[/x]\", '{OPENING}' AS opening",
        "--snapshot",
        str(snapshot),
    )
    cells = [
        [cell.strip() for cell in line[1:-1].split(line[-1])] for line in output.splitlines()[2:6:2]
    ]
    assert cells == [["[/x]", "opening"], [CLOSING, OPENING]], output


def test_an_error_quoting_markup_is_printed_as_it_is(tmp_path):
    snapshot = create_snapshot(tmp_path / "archive", None, tmp_path / "s.duckdb").path
    result = CliRunner().invoke(app, ["audit", 'SELECT * FROM "[/x]"', "--snapshot", str(snapshot)])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), (
        result.output,
        result.exception,
    )
    assert result.output == "error: Catalog Error: Table with name [/x] does not exist!\n"
