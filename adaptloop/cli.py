"""The ``adaptloop`` command line: local Kafka, topics, schemas, the worker, the demo, and audits."""

from __future__ import annotations

import logging
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from adaptloop.localkafka import LocalKafka
from adaptloop.settings import Settings
from schemas.errors import AdaptloopError

app = typer.Typer(help="adaptloop: production events in, online learners updated, new model versions served.",
                  no_args_is_help=True, pretty_exceptions_show_locals=False)
kafka_app = typer.Typer(help="The local single-node Kafka broker (KRaft, from Maven Central jars).", no_args_is_help=True)
topics_app = typer.Typer(help="adaptloop's Kafka topics.", no_args_is_help=True)
schemas_app = typer.Typer(help="Event contracts.", no_args_is_help=True)
app.add_typer(kafka_app, name="kafka")
app.add_typer(topics_app, name="topics")
app.add_typer(schemas_app, name="schemas")
snapshot_app = typer.Typer(help="Point-in-time DuckDB snapshots of the archive, for audits.", no_args_is_help=True)
app.add_typer(snapshot_app, name="snapshot")

console = Console()


def _fail(error: Exception) -> typer.Exit:
    console.print(f"[bold red]error:[/] {error}")
    return typer.Exit(code=1)


@app.callback()
def _main(verbose: bool = typer.Option(False, "--verbose", "-v", help="Log at INFO level.")) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


@kafka_app.command("install")
def kafka_install() -> None:
    """Fetch the broker's jars from Maven Central into the cache (once)."""
    try:
        lib = LocalKafka.from_settings(Settings()).install()
    except AdaptloopError as error:
        raise _fail(error) from None
    console.print(f"Kafka jars in {lib}")


@kafka_app.command("up")
def kafka_up() -> None:
    """Start the local broker (idempotent) and wait until it answers."""
    try:
        status = LocalKafka.from_settings(Settings()).up()
    except AdaptloopError as error:
        raise _fail(error) from None
    word = "already running" if status.already_running else "started"
    console.print(f"Kafka {word} at [bold]{status.bootstrap}[/] (pid {status.pid}, data {status.data_dir}, log {status.log_file})")


@kafka_app.command("down")
def kafka_down() -> None:
    """Stop the local broker; its data is kept for the next ``up``."""
    stopped = LocalKafka.from_settings(Settings()).down()
    console.print("Kafka stopped" if stopped else "Kafka was not running")


@kafka_app.command("status")
def kafka_status() -> None:
    """Tell whether the local broker runs."""
    status = LocalKafka.from_settings(Settings()).status()
    if status.running:
        console.print(f"Kafka running at [bold]{status.bootstrap}[/] (pid {status.pid}, data {status.data_dir})")
    else:
        console.print(f"Kafka not running (data {status.data_dir})")
        raise typer.Exit(code=3)


@topics_app.command("create")
def topics_create() -> None:
    """Create adaptloop's topics (idempotent) on the configured broker."""
    from streams.admin import ensure_topics

    settings = Settings()
    try:
        created = ensure_topics(settings.bootstrap_address, prefix=settings.topic_prefix, partitions=settings.partitions)
    except AdaptloopError as error:
        raise _fail(error) from None
    console.print(f"created {len(created)} topic(s): {', '.join(created) or '(all existed)'}")


@topics_app.command("delete")
def topics_delete(
    prefix: str = typer.Option(..., help="Delete the topics whose names start with this, e.g. a demo's 'demo-81cf29.'."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
) -> None:
    """Delete a run's topics (a demo's, a test's): their records are gone; the archive's files stay."""
    from streams.admin import delete_topics, wait_for_broker

    settings = Settings()
    if not prefix:
        raise typer.BadParameter("an empty prefix would match every topic", param_hint="--prefix")
    try:
        names = sorted(n for n in wait_for_broker(settings.bootstrap_address).list_topics(timeout=30).topics
                       if n.startswith(prefix))
        if not names:
            console.print(f"no topic starts with {prefix!r}")
            return
        console.print(f"{len(names)} topic(s): {', '.join(names)}")
        if not yes and not typer.confirm("delete them?"):
            raise typer.Exit(code=1)
        deleted = delete_topics(settings.bootstrap_address, prefix)
    except AdaptloopError as error:
        raise _fail(error) from None
    console.print(f"deleted {len(deleted)} topic(s)")


@schemas_app.command("export")
def schemas_export(directory: Path = typer.Argument(..., help="Where to write <topic>.schema.json files.")) -> None:
    """Write a JSON Schema per topic, for producers in other languages."""
    from schemas.export import export_json_schemas

    table = Table("topic schema", "path")
    for path in export_json_schemas(directory):
        table.add_row(path.name.removesuffix(".schema.json"), str(path))
    console.print(table)


@app.command("worker")
def worker(role: str = typer.Option("all", help="all, join (predictions + outcomes), learn (learner), archive (Parquet) or agents (guardrails, preference stores).")) -> None:
    """Run the loop's agents until stopped; several workers with the same settings share the work."""
    from adaptloop.worker import ensure_reproducible_hashing, run_worker

    if role not in ("all", "join", "learn", "archive", "agents"):
        raise _fail(ValueError(f"--role must be all, join, learn, archive or agents, not {role!r}"))
    ensure_reproducible_hashing()
    try:
        run_worker(Settings(), role)  # type: ignore[arg-type]
    except AdaptloopError as error:
        raise _fail(error) from None


@app.command("demo")
def demo(
    scenario: str = typer.Argument("loop", help="loop (predictions, outcomes, learners) or agents (routing, guardrails)."),
    decisions: int = typer.Option(12_000, help="Decisions to serve (loop)."),
    rate: float = typer.Option(400.0, help="Decisions per second (loop)."),
    policy: str = typer.Option("alert", help="Drift policy of the loop's model: alert, challenger or rollback."),
    sessions: int = typer.Option(3000, help="Agent sessions (agents)."),
) -> None:
    """End to end on a local broker (unless one is set): a worker, traffic, and the final tables."""
    try:
        if scenario == "agents":
            from adaptloop.agents_demo import AgentScenario, run_agents_demo

            run_agents_demo(Settings(), console, AgentScenario(sessions=sessions))
            return
        if scenario != "loop":
            raise ValueError(f"the scenario is loop or agents, not {scenario!r}")
        if policy not in ("alert", "challenger", "rollback"):
            raise ValueError(f"--policy must be alert, challenger or rollback, not {policy!r}")
        from adaptloop.demo import Scenario, run_demo

        run_demo(Settings(), console, Scenario(decisions=decisions, rate=rate, policy=policy))
    except (AdaptloopError, ValueError) as error:
        raise _fail(error) from None


@snapshot_app.command("create")
def snapshot_create(
    out: Path = typer.Option(None, help="The snapshot file; default: <home>/snapshots/snapshot-<UTC time>.duckdb."),
    model_bytes: bool = typer.Option(True, help="Copy the model bytes into the catalogue (else hashes only)."),
) -> None:
    """Write a point-in-time DuckDB snapshot of the archive and the model store."""
    from datetime import datetime, timezone

    from snapshots.snapshot import create_snapshot, snapshot_name

    settings = Settings()
    path = out or settings.snapshots_dir / snapshot_name(datetime.now(timezone.utc))
    info = create_snapshot(settings.archive_dir, settings.models_dir, path, prefix=settings.topic_prefix,
                           include_model_bytes=model_bytes)
    table = Table("topic", "partitions", "rows", "next offsets", title=f"snapshot {info.path}")
    for topic, offsets in info.offsets.items():
        table.add_row(topic, str(len(offsets)), f"{info.rows[topic]:,}", " ".join(f"{p}:{o}" for p, o in offsets.items()))
    console.print(table)
    console.print(f"open it with: [bold]duckdb -readonly {info.path}[/]")


def _print_arrow(table, title: str) -> None:  # noqa: ANN001 (a pyarrow Table)
    out = Table(*table.column_names, title=title)
    for row in table.to_pylist():
        out.add_row(*("" if value is None else str(value) for value in row.values()))
    console.print(out)


@app.command("audit")
def audit(
    query: str = typer.Argument(None, help="SQL, or the name of a query from --list."),
    snapshot: Path = typer.Option(None, help="Snapshot file; default: the newest in <home>/snapshots."),
    param: list[str] = typer.Option([], help="name=value for a $name in the query (repeatable)."),
    output_format: str = typer.Option("table", "--format", help="table, csv or parquet."),
    output: Path = typer.Option(None, help="Write csv/parquet here (csv defaults to stdout)."),
    list_queries: bool = typer.Option(False, "--list", help="List the named queries."),
) -> None:
    """Run audit SQL, read-only, against a snapshot (views: predictions, training_examples, model_updates...)."""
    from snapshots.audit import NAMED_QUERIES, run_audit
    from snapshots.snapshot import latest_snapshot

    if list_queries or query is None:
        table = Table("name", "parameters", "what it answers", title="named audit queries")
        for name, named in NAMED_QUERIES.items():
            table.add_row(name, " ".join(f"--param {p}=..." for p in named.params), named.description)
        console.print(table)
        return
    if output_format not in ("table", "csv", "parquet"):
        raise _fail(ValueError(f"--format must be table, csv or parquet, not {output_format!r}"))
    settings = Settings()
    path = snapshot or latest_snapshot(settings.snapshots_dir)
    if path is None or not path.exists():
        raise _fail(FileNotFoundError(f"no snapshot at {path or settings.snapshots_dir}; run `adaptloop snapshot create`"))
    try:
        params = dict(item.split("=", 1) for item in param)
    except ValueError:
        raise _fail(ValueError(f"--param takes name=value, got {param}")) from None
    try:
        result = run_audit(path, query, params)
    except (KeyError, ValueError) as error:
        raise _fail(error) from None
    except Exception as error:  # DuckDB's own errors (bad SQL, unknown column) are the caller's to fix
        raise _fail(error) from None
    if output_format == "table":
        _print_arrow(result, f"{query if len(query) < 40 else 'query'} @ {path.name} ({result.num_rows} rows)")
    elif output_format == "csv":
        import pyarrow.csv as pacsv

        if output is None:
            import sys

            pacsv.write_csv(result, sys.stdout.buffer)
        else:
            pacsv.write_csv(result, output)
    else:
        import pyarrow.parquet as pq

        if output is None:
            raise _fail(ValueError("--format parquet needs --output FILE"))
        pq.write_table(result, output)
    if output is not None:
        console.print(f"{result.num_rows} rows written to {output}")


@app.command("rollback")
def rollback(
    model: str = typer.Argument(..., help="The model to roll back."),
    to: str = typer.Option(..., "--to", help="The stored version to serve again (see `adaptloop audit lineage`)."),
    reason: str = typer.Option("", help="Why: recorded with the rollback."),
    actor: str = typer.Option(None, help="Who: recorded with the rollback (default: $USER)."),
    timeout: float = typer.Option(60.0, help="Seconds to wait for the learner's confirmation (0: do not wait)."),
) -> None:
    """Serve a stored version again and keep learning from it; the rollback is recorded with who and why."""
    import getpass

    from learners.store import ModelStore
    from streams.rollback import request_rollback

    settings = Settings()
    try:
        version = request_rollback(settings.bootstrap_address, ModelStore(settings.models_dir), model, to,
                                   actor=actor or getpass.getuser(), reason=reason, prefix=settings.topic_prefix,
                                   timeout=timeout or None)
    except AdaptloopError as error:
        raise _fail(error) from None
    if version is None:
        console.print(f"rollback of {model} to {to} requested; the learner carries it out when it reads the command")
    else:
        console.print(f"{model} rolled back to [bold]{version.version}[/] (was {version.parent}); serving follows "
                      f"model-updates and swaps within seconds; learning continues from it")


@app.command("replay")
def replay(
    model: str = typer.Argument(..., help="The model to rebuild."),
    until: str = typer.Option(..., "--until", help="The version to rebuild."),
) -> None:
    """Rebuild a version from the archived training examples and check its bytes hash to it; store it again if pruned."""
    from adaptloop.worker import ensure_reproducible_hashing
    from learners.store import ModelStore
    from snapshots.replay import replay as replay_version

    ensure_reproducible_hashing()
    settings = Settings()
    spec = settings.specs.get(model)
    if spec is None:
        raise _fail(ValueError(f"no learner spec for {model!r} in the settings (known: {', '.join(settings.specs) or 'none'})"))
    store = ModelStore(settings.models_dir)
    was_stored = until in store.versions(model)
    try:
        steps = replay_version(settings.archive_dir, store, spec, until, prefix=settings.topic_prefix, restore=True)
    except AdaptloopError as error:
        raise _fail(error) from None
    table = Table("version", "reason", "examples", "bytes identical", "dataset hash", title=f"replay of {model} to {until}")
    for step in steps:
        table.add_row(step.version, step.reason, f"{step.examples_seen:,}", "yes" if step.reproduced else "[red]NO[/]",
                      "matches" if step.dataset_hash_matches else "[red]differs[/]")
    console.print(table)
    if not steps[-1].reproduced:
        raise _fail(AdaptloopError(f"replay did not reproduce {until}: the archive or the code differs"))
    console.print(f"[green]{until} reproduced byte for byte[/] from {steps[-1].examples_seen:,} archived examples")
    if not was_stored:
        console.print(f"{until} was no longer in the model store (pruned): stored again, so "
                      f"`adaptloop rollback {model} --to {until}` can serve it")


@app.command("status")
def status() -> None:
    """Models, current versions, metrics, drift alerts, each role's lag, and what is kept on disk."""
    from datetime import datetime, timezone

    from snapshots.usage import disk_usage
    from streams.status import loop_status

    settings = Settings()
    try:
        state = loop_status(settings.bootstrap_address, settings.topic_prefix, settings.group)
    except AdaptloopError as error:
        raise _fail(error) from None
    table = Table("model", "version", "reason", "examples", "shadow acc.", "production acc.", "published",
                  "drift alerts", title=f"adaptloop status ({settings.bootstrap_address}, prefix {settings.topic_prefix!r})")
    now = datetime.now(timezone.utc)
    for name, version in sorted(state.versions.items()):
        metrics = version.metrics
        table.add_row(name, version.version, version.reason, f"{version.examples_seen:,}",
                      f"{metrics.get('shadow.Accuracy', float('nan')):.3f}",
                      f"{metrics.get('production.Accuracy', float('nan')):.3f}",
                      f"{(now - version.timestamp).total_seconds():.0f}s ago", str(state.drift_alerts.get(name, 0)))
    if not state.versions:
        table.add_row("(none published yet)", "", "", "", "", "", "", "")
    console.print(table)
    lag = Table("role", "consumer group lag (records)", title="lag")
    for role, records in state.lag.items():
        lag.add_row(role, "no commits yet" if records is None else records if isinstance(records, str) else f"{records:,}")
    console.print(lag)
    disk = Table("what", "files", "MB", "kept", title=f"on disk ({settings.home})")
    for what, used in disk_usage(settings.models_dir, settings.archive_dir, settings.snapshots_dir).items():
        if what.startswith("models/"):
            spec = settings.specs.get(what.removeprefix("models/"))
            kept = f"newest {spec.keep_versions:,}" if spec else "(no spec in these settings)"
        else:
            kept = f"newest {settings.keep_snapshots}" if what == "snapshots" and settings.keep_snapshots else "all"
        disk.add_row(what, f"{used.files:,}", f"{used.bytes / 1e6:,.1f}", kept)
    console.print(disk)


@app.command("report")
def report(
    snapshot: Path = typer.Option(None, help="Snapshot file; default: the newest in <home>/snapshots."),
    out: Path = typer.Option(Path("report"), help="Directory for the PNG files."),
) -> None:
    """PNG plots from a snapshot: metric over time with versions and drift alerts, agent traffic share."""
    from snapshots.report import write_report
    from snapshots.snapshot import latest_snapshot

    settings = Settings()
    path = snapshot or latest_snapshot(settings.snapshots_dir)
    if path is None or not path.exists():
        raise _fail(FileNotFoundError(f"no snapshot at {path or settings.snapshots_dir}; run `adaptloop snapshot create`"))
    for written in write_report(path, out):
        console.print(f"wrote {written}")
