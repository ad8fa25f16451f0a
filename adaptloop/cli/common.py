"""What every command shares: the Typer app, the console, how an error is shown, the ``--version`` flag."""

from __future__ import annotations

import logging
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from adaptloop import __version__

app = typer.Typer(
    help="adaptloop: production events in, online learners updated, new model versions served.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    rich_markup_mode=None,
)
console = Console()

VERSION_ID_WIDTH = 16
"""Version ids (16 hex digits) are printed whole, never cut: they are copied into ``rollback``."""


def fail(error: Exception) -> typer.Exit:
    """Print ``error`` for a person and return the exit to raise (code 1)."""
    console.print(f"[bold red]error:[/] {escape(str(error))}", soft_wrap=True)
    return typer.Exit(code=1)


def plain(value: object, style: str = "") -> Text:
    """``value`` as text to print: data (a label, a reason, a query's result, a path) is shown as it is, never
    read as rich markup (``[/x]`` in a label would otherwise end the command with a MarkupError)."""
    return Text("" if value is None else str(value), style=style)


def add_row(table: Table, *cells: object) -> None:
    """Add a row of data to ``table``: every cell that is not already :class:`Text` is :func:`plain`."""
    table.add_row(*(cell if isinstance(cell, Text) else plain(cell) for cell in cells))


def figure(value: float | None, digits: int = 3) -> str:
    """A metric as a table shows it: ``-`` where there is no number (a metric over no decisions)."""
    return "-" if value is None else f"{value:.{digits}f}"


def version_column(table: Table, header: str = "version") -> None:
    """Add a column of version ids that is never truncated or wrapped (other columns give way)."""
    table.add_column(header, no_wrap=True, min_width=VERSION_ID_WIDTH)


def _print_version(value: bool) -> None:
    if value:
        console.print(f"adaptloop {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log at INFO level.")] = False,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_print_version, is_eager=True, help="Print adaptloop's version and exit."),
    ] = False,
) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


def sub_app(name: str, help: str) -> typer.Typer:
    """A group of commands (``adaptloop <name> ...``)."""
    group = typer.Typer(help=help, no_args_is_help=True, rich_markup_mode=None)
    app.add_typer(group, name=name)
    return group
