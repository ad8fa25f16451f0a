"""``adaptloop status``, ``rollback`` and ``replay``: what the models are doing, and putting them
right."""

from __future__ import annotations

from datetime import UTC
from typing import Annotated, Literal

import typer
from rich.markup import escape
from rich.table import Table

from adaptloop.cli.common import add_row, app, console, fail, figure, plain, version_column
from adaptloop.schemas.errors import AdaptloopError, ConfigError, ReplayError
from adaptloop.schemas.system import ModelVersion
from adaptloop.settings import Settings


@app.command("status")
def status() -> None:
    """Models, current versions, metrics, drift alerts, each role's lag, and what is kept on
    disk."""
    from datetime import datetime

    from adaptloop.snapshots.usage import disk_usage
    from adaptloop.streams.status import loop_status

    settings = Settings()
    try:
        state = loop_status(
            settings.connection(), settings.topic_prefix, settings.group, settings.archive_location
        )
    except AdaptloopError as error:
        raise fail(error) from None
    table = Table(
        title=plain(
            f"adaptloop status ({settings.bootstrap_address}, prefix {settings.topic_prefix!r})"
        ),
        caption=plain(
            "examples and accuracies are each version's own, as it was made (a version a "
            "rollback or promotion "
            "serves again: its own record's); -: no decision scored"
        ),
    )
    table.add_column("model", no_wrap=True)
    version_column(table)
    for header in (
        "reason",
        "examples",
        "shadow acc.",
        "production acc.",
        "published",
        "drift alerts",
    ):
        table.add_column(header)
    now = datetime.now(UTC)
    unknown = []
    for name, version in sorted(state.versions.items()):
        own = state.own.get(name)
        if own is None:
            unknown.append(version.version)
        metrics = own.metrics if own is not None else {}
        add_row(
            table,
            name,
            version.version,
            version.reason,
            "-" if own is None else f"{own.examples_seen:,}",
            figure(metrics.get("shadow.Accuracy")),
            figure(metrics.get("production.Accuracy")),
            f"{(now - version.timestamp).total_seconds():.0f}s ago",
            state.drift_alerts.get(name, 0),
        )
    if not state.versions:
        table.add_row("(none published yet)", "", "", "", "", "", "", "")
    console.print(table)
    for version_id in unknown:
        console.print(
            f"-: the record that first published {version_id} is neither on model-updates "
            "(compacted) nor in the "
            "archive, so its own figures are unknown",
            markup=False,
            soft_wrap=True,
        )
    if state.health:
        health = Table(
            "model",
            "health",
            "rejected (latest)",
            "rejected (all)",
            "model errors",
            "last reasons",
            title="model health (as each model's learner sees its latest decisions)",
        )
        for name, report in sorted(state.health.items()):
            well = report.status == "ok"
            add_row(
                health,
                name,
                plain("ok", "green")
                if well
                else plain(f"sick: {', '.join(report.reasons)}", "red"),
                f"{report.rejected:,} of {report.window:,}",
                f"{report.rejected_total:,}",
                report.errors,
                "\n".join(report.last_rejections) or "-",
            )
        console.print(health)
    lag = Table("role", "consumer group lag (records)", title="lag")
    for role, records in state.lag.items():
        add_row(
            lag,
            role,
            "no commits yet"
            if records is None
            else records
            if isinstance(records, str)
            else f"{records:,}",
        )
    console.print(lag)
    disk = Table(
        "what",
        "files",
        "MB",
        "kept",
        title=plain(
            f"stored (home {settings.home}, archive {settings.archive_location.split('?')[0]})"
        ),
    )
    for what, used in disk_usage(
        settings.models_location, settings.archive_location, settings.snapshots_dir
    ).items():
        if what.startswith("models/"):
            spec = settings.specs.get(what.removeprefix("models/"))
            kept = f"newest {spec.keep_versions:,}" if spec else "(no spec in these settings)"
        else:
            kept = (
                f"newest {settings.keep_snapshots}"
                if what == "snapshots" and settings.keep_snapshots
                else "all"
            )
        add_row(disk, what, f"{used.files:,}", f"{used.bytes / 1e6:,.1f}", kept)
    console.print(disk)


def _command_learner(
    model: str,
    to: str,
    reason: str,
    actor: str | None,
    timeout: float,
    action: Literal["rollback", "promote"],
) -> ModelVersion | None:
    """Send a rollback or promote command and wait for the learner's version (None: not waited
    for)."""
    import getpass

    from adaptloop.streams.rollback import request_rollback

    settings = Settings()
    try:
        return request_rollback(
            settings.connection(),
            settings.model_store(),
            model,
            to,
            actor=actor or getpass.getuser(),
            reason=reason,
            prefix=settings.topic_prefix,
            timeout=timeout or None,
            action=action,
        )
    except AdaptloopError as error:
        raise fail(error) from None


@app.command("rollback")
def rollback(
    model: Annotated[str, typer.Argument(metavar="MODEL", help="The model to roll back.")],
    to: Annotated[
        str,
        typer.Option(
            "--to",
            metavar="VERSION",
            help="The stored version to serve again (see 'adaptloop audit lineage').",
        ),
    ],
    reason: Annotated[
        str, typer.Option(metavar="TEXT", help="Why: recorded with the rollback.")
    ] = "",
    actor: Annotated[
        str | None,
        typer.Option(metavar="NAME", help="Who: recorded with the rollback (default: $USER)."),
    ] = None,
    timeout: Annotated[
        float,
        typer.Option(
            metavar="SECONDS",
            help="Seconds to wait for the learner's confirmation (0: do not wait).",
        ),
    ] = 60.0,
) -> None:
    """Serve a stored version again and keep learning from it; the rollback is recorded with who and
    why."""
    version = _command_learner(model, to, reason, actor, timeout, "rollback")
    if version is None:
        console.print(
            f"rollback of {model} to {to} requested; the learner carries it out when it "
            "reads the command",
            markup=False,
        )
    else:
        console.print(
            f"{model} rolled back; now serving version:\n{version.version}\n(it replaced "
            f"{version.parent}; "
            "serving follows model-updates and swaps within seconds; learning continues from it)",
            soft_wrap=True,
            markup=False,
        )


@app.command("promote")
def promote(
    model: Annotated[
        str, typer.Argument(metavar="MODEL", help="The model to promote a stored candidate of.")
    ],
    to: Annotated[
        str,
        typer.Option(
            "--to",
            metavar="VERSION",
            help="The stored version ('adaptloop backtest --store' prints it).",
        ),
    ],
    reason: Annotated[
        str, typer.Option(metavar="TEXT", help="Why: recorded with the promotion.")
    ] = "",
    actor: Annotated[
        str | None,
        typer.Option(metavar="NAME", help="Who: recorded with the promotion (default: $USER)."),
    ] = None,
    timeout: Annotated[
        float,
        typer.Option(
            metavar="SECONDS",
            help="Seconds to wait for the learner's confirmation (0: do not wait).",
        ),
    ] = 60.0,
) -> None:
    """Serve a model a backtest stored and keep learning from it; the promotion is recorded with who
    and why."""
    version = _command_learner(model, to, reason, actor, timeout, "promote")
    if version is None:
        console.print(
            f"promotion of {to} requested; the learner of {model} carries it out when it "
            "reads the command",
            markup=False,
        )
    else:
        console.print(
            f"{model} now serves the promoted version {version.version} (it replaced "
            f"{version.parent})",
            markup=False,
        )


@app.command("replay")
def replay(
    model: Annotated[str, typer.Argument(metavar="MODEL", help="The model to rebuild.")],
    until: Annotated[
        str, typer.Option("--until", metavar="VERSION", help="The version to rebuild.")
    ],
) -> None:
    """Rebuild a version from the archived training examples and check it byte for byte; store it
    again if it was pruned."""
    from adaptloop.progress import Steps
    from adaptloop.snapshots.replay import replay as replay_version
    from adaptloop.worker import ensure_reproducible_hashing

    ensure_reproducible_hashing()
    settings = Settings()
    spec = settings.specs.get(model)
    if spec is None:
        raise fail(
            ConfigError(
                f"no learner spec for {model!r} in the settings (known: "
                f"{', '.join(settings.specs) or 'none'})"
            )
        )
    store = settings.worker_model_store()
    was_stored = until in store.versions(model)
    try:
        with Steps(console, f"replaying {model} to {until} from the archived examples"):
            steps = replay_version(
                settings.archive_location,
                store,
                spec,
                until,
                prefix=settings.topic_prefix,
                restore=True,
            )
    except AdaptloopError as error:
        raise fail(error) from None
    table = Table(title=plain(f"replay of {model} to {until}"))
    version_column(table)
    for header in ("reason", "examples", "bytes identical", "dataset hash"):
        table.add_column(header)
    for step in steps:
        add_row(
            table,
            step.version,
            step.reason,
            f"{step.examples_seen:,}",
            "yes" if step.reproduced else plain("NO", "red"),
            "matches" if step.dataset_hash_matches else plain("differs", "red"),
        )
    console.print(table)
    if not steps[-1].reproduced:
        why = next((step.why_not for step in steps if step.why_not), "")
        raise fail(ReplayError(f"replay did not reproduce {until}: {why}"))
    console.print(
        f"[green]{escape(until)} reproduced byte for byte[/] from "
        f"{steps[-1].examples_seen:,} archived examples"
    )
    if not was_stored:
        console.print(
            f"{until} was no longer in the model store (pruned): stored again, so "
            f"'adaptloop rollback {model} --to {until}' can serve it",
            markup=False,
        )
