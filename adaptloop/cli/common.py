"""What every command shares: the Typer app, the console, how an error is shown, the ``--version``
flag.

Every error a person can act on (adaptloop's own, Kafka's, a setting pydantic refuses) ends a
command with one line and exit status 1 (78, EX_CONFIG, for a wrong setting or a refused login: a
supervisor need not start it again); ``adaptloop --traceback <command>`` shows the traceback instead
(of an error the command does not turn into a message of its own with :func:`fail`). Commands that
talk to Kafka check first that it answers (:func:`adaptloop.streams.connection.fail_fast`), so a
wrong address or password is said in one line within seconds; librdkafka's own log is shown with
``--verbose`` only.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from adaptloop import __version__


class App(typer.Typer):
    """The Typer app, with the command line's single error path (:func:`error_line`)."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().__call__(*args, **kwargs)
        except Exception as error:
            _exit_for(error)
            raise
        except:
            from adaptloop.streams.outage import raised_kafka_error

            closing = raised_kafka_error()
            if closing is not None:
                _exit_for(closing)
            raise


def _exit_for(error: Exception) -> None:
    """Print ``error`` in one line and exit, unless it is a bug or ``--traceback`` was given (then
    return)."""
    shown = error_line(error)
    if shown is None or _OPTIONS.get("traceback"):
        return
    from adaptloop.streams.connection import forget_frames

    forget_frames(error)
    console.print(f"[bold red]error:[/] {escape(shown)}", soft_wrap=True)
    raise SystemExit(REFUSED_STATUS if _refused(error) else 1) from None


REFUSED_STATUS = 78
"""The exit status of a command stopped by a wrong setting or a refused login (EX_CONFIG)."""

FAIL_FAST_SECONDS = 5.0
"""How long a command waits for Kafka to answer before it says that it does not (start-up takes the
rest of the 10 s a person waits for)."""

PATIENT_COMMANDS = frozenset({"worker", "kafka", "demo", "serve"})
"""Commands that wait for Kafka as long as their own settings say: the worker outlasts outages,
``kafka`` and ``demo`` start a broker and wait for it, a service may start before its broker."""

_OPTIONS: dict[str, bool] = {}


def error_line(error: BaseException) -> str | None:
    """``error`` in one line for a person, or None if it is a bug (whose traceback is shown).

    >>> from confluent_kafka import KafkaError, KafkaException
    >>> error_line(KafkaException(KafkaError(KafkaError._TRANSPORT, "Connection refused")))
    'Kafka: Connection refused (_TRANSPORT)'
    >>> error_line(ZeroDivisionError("a bug")) is None
    True
    """
    from confluent_kafka import KafkaError, KafkaException
    from pydantic import ValidationError
    from pydantic_settings import SettingsError

    from adaptloop.schemas.errors import AdaptloopError

    if isinstance(error, AdaptloopError):
        return str(error)
    if isinstance(error, KafkaException):
        kafka_error = error.args[0] if error.args else None
        if isinstance(kafka_error, KafkaError):
            return f"Kafka: {kafka_error.str()} ({kafka_error.name()})"
        return f"Kafka: {error}"
    if isinstance(error, ValidationError):
        return f"{error.title}: " + "; ".join(_setting_problem(item) for item in error.errors())
    if isinstance(error, SettingsError):  # a variable that is not the JSON its setting needs
        cause = f": {error.__cause__}" if error.__cause__ is not None else ""
        return (
            f"{error}{cause} (a list or table setting takes JSON, e.g. "
            f'ADAPTLOOP_MODELS=\'[{{"name": "churn"}}]\')'
        )
    return None


def _setting_problem(item: Any) -> str:
    """One of pydantic's errors as ``where = value: what is wrong``.

    >>> _setting_problem({"loc": ("models", 0, "drift", "policy"), "input": "rollbak", "msg": "Input should be x"})
    "models[0].drift.policy = 'rollbak': Input should be x"
    """
    where = "".join(
        f"[{part}]" if isinstance(part, int) else f".{part}" for part in item["loc"]
    ).lstrip(".")
    value = item.get("input")
    shown = "" if isinstance(value, dict | list) else f" = {value!r}"
    return f"{where or 'settings'}{shown}: {item['msg']}"


def _refused(error: BaseException) -> bool:
    from pydantic import ValidationError
    from pydantic_settings import SettingsError

    from adaptloop.schemas.errors import AuthenticationFailed, ConfigError

    return isinstance(error, AuthenticationFailed | ConfigError | ValidationError | SettingsError)


app = App(
    help="adaptloop: production events in, online learners updated, new model versions served.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    rich_markup_mode=None,
)
console = Console()

VERSION_ID_WIDTH = 16
"""Version ids (16 hex digits) are printed whole, never cut: they are copied into ``rollback``."""


def fail(error: Exception) -> typer.Exit:
    """Print ``error`` for a person and return the exit to raise (code 1; :data:`REFUSED_STATUS` for
    a wrong setting or a refused login); the Kafka clients only ``error``'s frames held are
    destroyed now (:func:`~adaptloop.streams.connection.forget_frames`)."""
    from adaptloop.streams.connection import forget_frames

    forget_frames(error)
    console.print(f"[bold red]error:[/] {escape(str(error))}", soft_wrap=True)
    return typer.Exit(code=REFUSED_STATUS if _refused(error) else 1)


def plain(value: object, style: str = "") -> Text:
    """``value`` as text to print: data (a label, a reason, a query's result, a path) is shown as it
    is, never read as rich markup (``[/x]`` in a label would otherwise end the command with a
    MarkupError)."""
    return Text("" if value is None else str(value), style=style)


def add_row(table: Table, *cells: object) -> None:
    """Add a row of data to ``table``: every cell that is not already :class:`Text` is
    :func:`plain`."""
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
    context: typer.Context,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log at INFO level.")] = False,
    traceback: Annotated[
        bool,
        typer.Option("--traceback", help="On an error, show its traceback rather than one line."),
    ] = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_print_version,
            is_eager=True,
            help="Print adaptloop's version and exit.",
        ),
    ] = False,
) -> None:
    from adaptloop.streams.connection import fail_fast

    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    librdkafka, level = logging.getLogger("librdkafka"), logging.getLogger("librdkafka").level
    # its lines (one per failed connection) are summed up in the error a command ends with
    if not verbose:
        librdkafka.setLevel(logging.CRITICAL)
    _OPTIONS["traceback"] = traceback
    if context.invoked_subcommand not in PATIENT_COMMANDS:
        fail_fast(FAIL_FAST_SECONDS)

    # for the command only: a process that runs commands in-process (tests) goes on as before
    def _restore() -> None:
        fail_fast(None)
        librdkafka.setLevel(level)

    context.call_on_close(_restore)


def sub_app(name: str, help: str) -> typer.Typer:
    """A group of commands (``adaptloop <name> ...``)."""
    group = typer.Typer(help=help, no_args_is_help=True, rich_markup_mode=None)
    app.add_typer(group, name=name)
    return group
