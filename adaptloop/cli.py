"""The ``adaptloop`` command line: local Kafka, topics, schemas, and the demo."""

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


@schemas_app.command("export")
def schemas_export(directory: Path = typer.Argument(..., help="Where to write <topic>.schema.json files.")) -> None:
    """Write a JSON Schema per topic, for producers in other languages."""
    from schemas.export import export_json_schemas

    table = Table("topic schema", "path")
    for path in export_json_schemas(directory):
        table.add_row(path.name.removesuffix(".schema.json"), str(path))
    console.print(table)


@app.command("worker")
def worker(role: str = typer.Option("all", help="all, join (faust) or learn (learner agent).")) -> None:
    """Run the loop's agents until stopped; several workers with the same settings share the work."""
    from adaptloop.worker import ensure_reproducible_hashing, run_worker

    if role not in ("all", "join", "learn"):
        raise _fail(ValueError(f"--role must be all, join or learn, not {role!r}"))
    ensure_reproducible_hashing()
    try:
        run_worker(Settings(), role)  # type: ignore[arg-type]
    except AdaptloopError as error:
        raise _fail(error) from None


@app.command("demo")
def demo(
    decisions: int = typer.Option(12_000, help="Decisions to serve."),
    rate: float = typer.Option(400.0, help="Decisions per second."),
) -> None:
    """The loop end to end: a local broker if none is set, a worker, a drifting stream served and learned."""
    from adaptloop.demo import Scenario, run_demo

    try:
        run_demo(Settings(), console, Scenario(decisions=decisions, rate=rate))
    except AdaptloopError as error:
        raise _fail(error) from None
