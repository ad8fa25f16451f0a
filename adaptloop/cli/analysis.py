"""``adaptloop snapshot``, ``audit``, ``report`` and ``schemas``: what analysts and other teams
read."""

from __future__ import annotations

import sys
from collections.abc import Callable
from datetime import UTC
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from adaptloop.cli.common import add_row, app, console, fail, plain, sub_app
from adaptloop.schemas.errors import AdaptloopError, ConfigError
from adaptloop.settings import Settings

if TYPE_CHECKING:
    from adaptloop.snapshots.archive import ParquetArchive
    from adaptloop.streams.status import ArchiveCut

snapshot_app = sub_app("snapshot", "Point-in-time DuckDB snapshots of the archive, for audits.")
schemas_app = sub_app("schemas", "Event contracts, for producers in other languages.")


class OutputFormat(str, Enum):
    TABLE = "table"
    CSV = "csv"
    PARQUET = "parquet"


def chosen_snapshot(snapshot: Path | None, settings: Settings) -> Path:
    """``snapshot``, or the newest one in ``<home>/snapshots``; a clear error if there is none."""
    from adaptloop.snapshots.snapshot import latest_snapshot

    path = snapshot or latest_snapshot(settings.snapshots_dir)
    if path is None or not path.exists():
        raise fail(
            ConfigError(
                f"no snapshot at {path or settings.snapshots_dir}; run 'adaptloop snapshot create'"
            )
        )
    return path


@snapshot_app.command("create")
def snapshot_create(
    out: Annotated[
        Path | None,
        typer.Option(
            metavar="FILE",
            help="The snapshot file; default: <home>/snapshots/snapshot-<UTC time>.duckdb.",
        ),
    ] = None,
    model_bytes: Annotated[
        bool, typer.Option(help="Copy the model bytes into the catalogue (else hashes only).")
    ] = True,
    self_contained: Annotated[
        bool,
        typer.Option(
            "--self-contained",
            help="Copy the rows into the file, so it opens anywhere (else views over the archive).",
        ),
    ] = False,
    flush: Annotated[
        bool,
        typer.Option(
            "--flush",
            help="First wait until the archive holds every record the topics had now (the "
            "archiver writes every "
            "archive_flush_seconds).",
        ),
    ] = False,
    flush_timeout: Annotated[
        float,
        typer.Option(
            min=1,
            metavar="SECONDS",
            help="Give up waiting for the archive (--flush) after this long.",
        ),
    ] = 180.0,
) -> None:
    """Write a point-in-time DuckDB snapshot of the archive and the model store, and say how far the
    archive had caught up with the topics."""
    from datetime import datetime

    from adaptloop.snapshots.archive import ParquetArchive
    from adaptloop.snapshots.snapshot import ARCHIVED_TOPICS, create_snapshot, snapshot_name

    settings = Settings()
    names = [topic.full_name(settings.topic_prefix) for topic in ARCHIVED_TOPICS]
    ends = _topic_ends(settings, names)
    if flush:
        if ends is None:
            raise fail(ConfigError("--flush needs the broker, to know where the topics end"))
        _wait_for_archive(
            settings, ends, flush_timeout, lambda: ParquetArchive(settings.archive_location), names
        )
    path = out or settings.snapshots_dir / snapshot_name(datetime.now(UTC))
    info = create_snapshot(
        settings.archive_location,
        settings.models_location,
        path,
        prefix=settings.topic_prefix,
        include_model_bytes=model_bytes,
        self_contained=self_contained,
    )
    cuts = _cuts(settings, info.offsets, ends)
    table = Table(
        "topic",
        "partitions",
        "rows",
        "archived up to",
        "topic ends at",
        "not archived",
        title=plain(f"snapshot {info.path}"),
    )
    for topic, offsets in info.offsets.items():
        cut = cuts.get(topic)
        add_row(
            table,
            topic,
            len(offsets),
            f"{info.rows[topic]:,}",
            " ".join(f"{p}:{o}" for p, o in offsets.items()) or "-",
            "?" if cut is None else " ".join(f"{p}:{o}" for p, o in cut.ends.items()) or "-",
            "?" if cut is None else _behind(cut),
        )
    console.print(table)
    behind = sorted(topic for topic, cut in cuts.items() if cut.waiting)
    if ends is None:
        console.print(
            "the broker did not answer: how far the archive had caught up is unknown", markup=False
        )
    elif behind:
        console.print(
            f"the archive had not caught up with {len(behind)} topic(s) "
            f"({', '.join(behind)}): it writes every "
            f"{settings.archive_flush_seconds:g}s (archive_flush_seconds); 'adaptloop "
            "snapshot create --flush' "
            "waits for it first",
            markup=False,
            soft_wrap=True,
        )
    else:
        console.print(
            "the archive held every record of the topics when the snapshot was taken", markup=False
        )
    console.print(f"open it with: [bold]duckdb -readonly {escape(str(info.path))}[/]")


def _behind(cut: ArchiveCut) -> str:
    if not cut.waiting:
        return "0"
    return f"{cut.behind:,} (partitions {', '.join(map(str, sorted(cut.waiting)))})"


def _topic_ends(settings: Settings, names: list[str]) -> dict[str, dict[int, int]] | None:
    """The topics' ends, or None if the broker does not answer (a snapshot needs only the
    archive)."""
    from confluent_kafka import KafkaException

    from adaptloop.streams.status import topic_ends

    try:
        return topic_ends(settings.connection(), names)
    except (KafkaException, AdaptloopError):
        return None


def _cuts(
    settings: Settings, archived: dict[str, dict[int, int]], ends: dict[str, dict[int, int]] | None
) -> dict[str, ArchiveCut]:
    from confluent_kafka import KafkaException

    from adaptloop.streams.status import archive_cuts

    if ends is None:
        return {}
    try:
        return {cut.topic: cut for cut in archive_cuts(settings.connection(), archived, ends)}
    except (KafkaException, AdaptloopError):
        return {}


def _wait_for_archive(
    settings: Settings,
    ends: dict[str, dict[int, int]],
    timeout: float,
    archive: Callable[[], ParquetArchive],
    names: list[str],
) -> None:
    """Wait until the archive holds every committed record below ``ends``, showing how far it is."""
    import time

    from adaptloop.progress import Steps
    from adaptloop.streams.status import archive_cuts

    deadline = time.monotonic() + timeout
    with Steps(console, "waiting for the archive to catch up with the topics") as steps:
        while True:
            current = archive()  # a fresh look at the files
            cuts = archive_cuts(
                settings.connection(), {name: current.next_offsets(name) for name in names}, ends
            )
            waiting = [cut for cut in cuts if cut.waiting]
            steps.update(
                status=f"{sum(cut.behind for cut in waiting):,} offsets of "
                f"{len(waiting)} topic(s) to go"
            )
            if not waiting:
                return
            if time.monotonic() > deadline:
                console.print(
                    f"the archive did not catch up within {timeout:g}s "
                    f"({', '.join(c.topic for c in waiting)}); is "
                    "the worker's archive role running? The snapshot shows where it stood",
                    markup=False,
                    soft_wrap=True,
                )
                return
            time.sleep(1.0)


def print_arrow(result: object, title: str) -> None:
    """A pyarrow Table as a rich table; columns of version ids are never cut."""
    import pyarrow as pa

    assert isinstance(result, pa.Table)
    out = Table(title=plain(title))
    for name in result.column_names:
        keep_whole = name in ("version", "model_version", "parent", "to_version", "decision_id")
        out.add_column(plain(name), no_wrap=keep_whole, min_width=16 if keep_whole else None)
    for row in result.to_pylist():
        add_row(out, *row.values())
    console.print(out)


@app.command("audit")
def audit(
    query: Annotated[
        str | None, typer.Argument(metavar="QUERY", help="SQL, or the name of a query from --list.")
    ] = None,
    snapshot: Annotated[
        Path | None,
        typer.Option(
            metavar="FILE", help="Snapshot file; default: the newest in <home>/snapshots."
        ),
    ] = None,
    param: Annotated[
        list[str] | None,
        typer.Option(metavar="NAME=VALUE", help="A value for $NAME in the query (repeatable)."),
    ] = None,
    output_format: Annotated[
        OutputFormat, typer.Option("--format", help="How to print the result.")
    ] = (OutputFormat.TABLE),
    output: Annotated[
        Path | None,
        typer.Option(metavar="FILE", help="Write csv/parquet here (csv defaults to stdout)."),
    ] = None,
    list_queries: Annotated[bool, typer.Option("--list", help="List the named queries.")] = False,
) -> None:
    """Run audit SQL, read-only, against a snapshot (views: predictions, training_examples,
    model_updates...)."""
    from adaptloop.snapshots.audit import NAMED_QUERIES, run_audit

    if list_queries or query is None:
        table = Table("name", "parameters", "what it answers", title="named audit queries")
        for name, named in NAMED_QUERIES.items():
            add_row(
                table, name, " ".join(f"--param {p}=..." for p in named.params), named.description
            )
        console.print(table)
        return
    settings = Settings()
    path = chosen_snapshot(snapshot, settings)
    try:
        params = dict(item.split("=", 1) for item in param or [])
    except ValueError:
        raise fail(ConfigError(f"--param takes NAME=VALUE, got {param}")) from None
    try:
        result = run_audit(
            path, query, params, seconds=settings.audit_seconds, memory_mb=settings.audit_memory_mb
        )
    except AdaptloopError as error:
        raise fail(error) from None
    # DuckDB's own errors (bad SQL, unknown column) are the caller's to fix
    except Exception as error:
        raise fail(error) from None
    if output_format is OutputFormat.TABLE:
        print_arrow(
            result,
            f"{query if len(query) < 40 else 'query'} @ {path.name} ({result.num_rows} rows)",
        )
    elif output_format is OutputFormat.CSV:
        import pyarrow.csv as pacsv

        pacsv.write_csv(result, output if output is not None else sys.stdout.buffer)
    else:
        import pyarrow.parquet as pq

        if output is None:
            raise fail(ConfigError("--format parquet needs --output FILE"))
        pq.write_table(result, output)
    if output is not None:
        console.print(f"{result.num_rows} rows written to {output}", markup=False)


@app.command("report")
def report(
    snapshot: Annotated[
        Path | None,
        typer.Option(
            metavar="FILE", help="Snapshot file; default: the newest in <home>/snapshots."
        ),
    ] = None,
    out: Annotated[Path, typer.Option(metavar="DIR", help="Directory for the PNG files.")] = Path(
        "report"
    ),
    html: Annotated[
        Path | None,
        typer.Option(
            metavar="FILE", help="Write one self-contained HTML page instead of PNG files."
        ),
    ] = None,
) -> None:
    """Plots from a snapshot: metrics over time with versions, rollbacks and drift alerts; agents'
    traffic and posteriors; dead letters (PNG files, or one HTML page)."""
    from adaptloop.snapshots.report import write_html_report, write_report

    chosen = chosen_snapshot(snapshot, Settings())
    if html is not None:
        console.print(f"wrote {write_html_report(chosen, html)}", markup=False)
        return
    for written in write_report(chosen, out):
        console.print(f"wrote {written}", markup=False)


@app.command("backtest")
def backtest_command(
    model: Annotated[
        str, typer.Argument(help="The model whose archived traffic the candidates learn.")
    ],
    candidate: Annotated[
        list[str],
        typer.Option(
            "--candidate",
            "-c",
            metavar="JSON",
            help='Spec fields a candidate changes (repeat), e.g. \'{"recipe": "hoeffding"}\' or '
            '\'{"drift": {"policy": "challenger"}}\'.',
        ),
    ],
    png: Annotated[
        Path | None, typer.Option(metavar="FILE", help="Also draw the rolling metric to FILE.")
    ] = None,
    window: Annotated[
        int, typer.Option(min=10, help="Examples in the rolling window of the chart.")
    ] = 500,
    store: Annotated[
        bool,
        typer.Option(
            "--store",
            help="Store each candidate's final model as a version, for adaptloop promote.",
        ),
    ] = False,
) -> None:
    """Evaluate candidate specs on a model's archived examples (progressive validation), beside the
    production spec and what its versions served; nothing in production changes."""
    import orjson

    from adaptloop.snapshots.backtest import backtest, candidate_spec, write_backtest_png

    settings = Settings()
    try:
        production = settings.specs.get(model)
        if production is None:
            raise ConfigError(f"no spec for model {model!r} in the settings")
        candidates = {}
        for text in candidate:
            try:
                changes = orjson.loads(text)
            except orjson.JSONDecodeError as error:
                raise ConfigError(f"--candidate {text!r} is not JSON: {error}") from None
            if not isinstance(changes, dict):
                raise ConfigError(f"--candidate {text!r}: give a JSON object of spec fields")
            try:
                candidates[text] = candidate_spec(production, changes)
            except ValueError as error:
                raise ConfigError(f"--candidate {text}: {error}") from None
        results = backtest(
            settings.archive_location,
            production,
            candidates,
            settings.topic_prefix,
            window=window,
            store=settings.worker_model_store() if store else None,
        )
    except AdaptloopError as error:
        raise fail(error) from None
    columns = ["evaluated", results[0].metric, "examples", "challengers promoted"] + (
        [("stored as")] if store else []
    )
    table = Table(*columns, title=plain(f"backtest of {model}"))
    for result in results:
        value = "-" if result.value is None else f"{result.value:.4f}"
        stored = [result.stored or ""] if store else []
        add_row(table, result.name, value, result.examples, result.promotions, *stored)
    console.print(table)
    if png is not None:
        console.print(
            f"wrote {write_backtest_png(results, png, f'backtest of {model}')}", markup=False
        )


evaluate_app = sub_app("evaluate", "Evaluate policies off-line, from what was logged.")


@evaluate_app.command("routing")
def evaluate_routing_command(
    agent: Annotated[str, typer.Option(help="The agent whose routing to evaluate.")],
    snapshot: Annotated[
        Path | None,
        typer.Option(
            metavar="FILE", help="Snapshot file; default: the newest in <home>/snapshots."
        ),
    ] = None,
) -> None:
    """What other routing policies would have earned on the logged routes and thumbs: IPS,
    self-normalised IPS and doubly robust estimates with 95% intervals."""
    from adaptloop.snapshots.routing import evaluate_routing

    try:
        results = evaluate_routing(chosen_snapshot(snapshot, Settings()), agent)
    except AdaptloopError as error:
        raise fail(error) from None
    console.print(routing_table(results, agent))


def routing_table(results: list, agent: str) -> Table:
    """The off-policy estimates as a table (also printed by the agents demo)."""
    table = Table(
        "policy",
        "estimator",
        "value",
        "95% interval",
        "effective n",
        title=plain(f"routing of {agent}, off-policy"),
    )
    for result in results:
        e = result.estimate
        add_row(
            table,
            result.policy,
            e.estimator,
            f"{e.value:.3f}",
            f"[{e.low:.3f}, {e.high:.3f}]",
            f"{e.effective_n:,.0f}",
        )
    return table


@schemas_app.command("export")
def schemas_export(
    directory: Annotated[
        Path, typer.Argument(metavar="DIR", help="Where to write <topic>.schema.json files.")
    ],
) -> None:
    """Write a JSON Schema per topic, and per model (its features and labels), for producers in
    other languages."""
    from adaptloop.schemas.export import export_json_schemas

    contracts = [spec.contract() for spec in Settings().models]
    table = Table("schema", "path")
    for path in export_json_schemas(directory, contracts):
        add_row(table, path.name.removesuffix(".schema.json"), path)
    console.print(table)
