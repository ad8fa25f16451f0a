"""``adaptloop deadletters list|replay``: what was refused and why, and sending it again once
fixed."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from adaptloop.cli.common import add_row, console, fail, sub_app
from adaptloop.schemas.errors import AdaptloopError
from adaptloop.schemas.system import reason_pattern
from adaptloop.settings import Settings
from adaptloop.streams.letters import Letter

letters_app = sub_app(
    "deadletters", "Dead letters: listed by cause, replayed to their source once fixed."
)

SOURCE = typer.Option(
    "--source", metavar="TOPIC", help="Only letters from this topic (its full name)."
)
KIND = typer.Option(
    "--kind", metavar="KIND", help="Only letters of this kind (malformed, invalid, rejected, ...)."
)
REASON = typer.Option(
    "--reason", metavar="TEXT", help="Only letters whose reason contains this text."
)


@letters_app.command("list")
def letters_list(
    source: Annotated[str | None, SOURCE] = None,
    kind: Annotated[str | None, KIND] = None,
    reason: Annotated[str | None, REASON] = None,
) -> None:
    """Dead letters by source topic, role, kind and cause, with a count, how many were replayed, an
    example."""
    from adaptloop.streams.letters import groups, read_letters, replayed_ids

    settings = Settings()
    try:
        letters = _chosen(
            read_letters(settings.connection(), settings.topic_prefix), source, kind, reason
        )
        replayed = replayed_ids(settings.connection(), settings.topic_prefix)
    except AdaptloopError as error:
        raise fail(error) from None
    table = Table(
        "source",
        "role",
        "kind",
        "cause",
        "letters",
        "replayed",
        "example",
        title=f"dead letters ({len(letters):,})",
    )
    for group in groups(letters, replayed):
        add_row(
            table,
            group.source_topic,
            group.consumer,
            group.kind,
            group.pattern,
            f"{group.letters:,}",
            f"{group.replayed:,}",
            group.example,
        )
    console.print(table)


@letters_app.command("replay")
def letters_replay(
    source: Annotated[str | None, SOURCE] = None,
    kind: Annotated[str | None, KIND] = None,
    reason: Annotated[str | None, REASON] = None,
    note: Annotated[
        str, typer.Option(metavar="TEXT", help="Why they are sent again (recorded).")
    ] = "",
    actor: Annotated[
        str | None, typer.Option(metavar="NAME", help="Who (recorded; default: $USER).")
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Send the chosen dead letters' original records again to their source topics, once each,
    recorded."""
    import getpass

    from adaptloop.streams.letters import read_letters, replay_letters, replayed_ids

    settings = Settings()
    if not (source or kind or reason):
        raise typer.BadParameter(
            "choose the letters: --source, --kind and/or --reason", param_hint="--reason"
        )
    try:
        letters = _chosen(
            read_letters(settings.connection(), settings.topic_prefix), source, kind, reason
        )
        replayed = replayed_ids(settings.connection(), settings.topic_prefix)
        fresh = [item for item in letters if item.id not in replayed]
        console.print(
            f"{len(letters):,} letter(s) chosen, {len(letters) - len(fresh):,} replayed before"
        )
        if not fresh:
            return
        if not yes and not typer.confirm(
            f"send {len(fresh):,} record(s) again to their source topics?"
        ):
            raise typer.Exit(code=1)
        skipped: list[str] = []
        sent = replay_letters(
            settings.connection(),
            fresh,
            actor=actor or getpass.getuser(),
            note=note,
            prefix=settings.topic_prefix,
            replayed=replayed,
            on_skip=lambda item, why: skipped.append(f"{item.id}: {why}"),
        )
    except AdaptloopError as error:
        raise fail(error) from None
    for line in skipped:
        console.print(f"[yellow]skipped[/] {escape(line)}", soft_wrap=True)
    console.print(
        f"replayed {len(sent):,} record(s); each is recorded on dead-letter-replays and "
        "will not be sent again"
    )


def _chosen(
    letters: list[Letter], source: str | None, kind: str | None, reason: str | None
) -> list[Letter]:
    return [
        item
        for item in letters
        if (source is None or item.letter.source_topic == source)
        and (kind is None or item.letter.kind == kind)
        and (
            reason is None
            or reason in item.letter.reason
            or reason in reason_pattern(item.letter.reason)
        )
    ]
