"""``adaptloop kafka``, ``topics`` and ``settings``: the local broker, adaptloop's topics, the
settings in effect."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape

from adaptloop.cli.common import add_row, app, console, fail, sub_app
from adaptloop.localkafka import LocalKafka
from adaptloop.schemas.errors import AdaptloopError
from adaptloop.settings import Settings

kafka_app = sub_app("kafka", "The local single-node Kafka broker (KRaft, from Maven Central jars).")
topics_app = sub_app("topics", "adaptloop's Kafka topics.")


@kafka_app.command("install")
def kafka_install() -> None:
    """Fetch the broker's jars from Maven Central into the cache (once)."""
    try:
        lib = LocalKafka.from_settings(Settings()).install()
    except AdaptloopError as error:
        raise fail(error) from None
    console.print(f"Kafka jars in {lib}", markup=False)


@kafka_app.command("up")
def kafka_up(
    secure: Annotated[
        bool,
        typer.Option(
            "--secure",
            help="Make the home secure: only a SASL_SSL listener (SCRAM users admin, worker, "
            "service, operator; a "
            "local CA; ACLs enforced), on ADAPTLOOP_KAFKA_SECURE_PORT (default 9094), and a "
            "controller listener "
            "that takes the broker's own certificate only. The home stays secure at every "
            "later start. Prints "
            "each user's `kafka` setting.",
        ),
    ] = False,
    plaintext: Annotated[
        bool,
        typer.Option(
            "--plaintext",
            help="On a secure home, also open the plaintext listener (ADAPTLOOP_KAFKA_PORT): "
            "anyone reaching it "
            "is a super user, ACLs do not apply. For tests on this host only.",
        ),
    ] = False,
) -> None:
    """Start the local broker (idempotent) and wait until it answers."""
    settings = Settings()
    if plaintext:
        settings = settings.model_copy(update={"kafka_plaintext": True})
    elif secure:
        settings = settings.model_copy(update={"kafka_plaintext": False})
    kafka = LocalKafka.from_settings(settings, secure=secure)
    if kafka.open_to_anonymous:
        console.print(
            "[yellow]warning:[/] the secured broker also listens in plaintext at "
            f"{kafka.host}:{kafka.port}: anyone "
            "who reaches that port is a super user (ACLs do not apply to them)",
            soft_wrap=True,
        )
    try:
        status = kafka.up()
    except AdaptloopError as error:
        raise fail(error) from None
    word = "already running" if status.already_running else "started"
    console.print(
        f"Kafka {word} at [bold]{escape(status.bootstrap)}[/] "
        + escape(f"(pid {status.pid}, data {status.data_dir}, log {status.log_file})")
    )
    if kafka.secure_port is not None:
        import orjson

        console.print(
            f"secured listener at {kafka.secure_bootstrap}; log in as a user with its kafka "
            "setting:",
            markup=False,
        )
        for user in ("worker", "service", "operator", "admin"):
            setting = orjson.dumps(kafka.client_properties(user)).decode()
            console.print(
                f"  {user}: ADAPTLOOP_BOOTSTRAP={kafka.secure_bootstrap} "
                f"ADAPTLOOP_KAFKA='{setting}'",
                soft_wrap=True,
                markup=False,
                highlight=False,
            )


@kafka_app.command("down")
def kafka_down() -> None:
    """Stop the local broker; its data is kept for the next 'up'."""
    stopped = LocalKafka.from_settings(Settings()).down()
    console.print("Kafka stopped" if stopped else "Kafka was not running")


@kafka_app.command("status")
def kafka_status() -> None:
    """Tell whether the local broker runs (exit code 3 if not)."""
    status = LocalKafka.from_settings(Settings()).status()
    if status.running:
        console.print(
            f"Kafka running at [bold]{escape(status.bootstrap)}[/] "
            + escape(f"(pid {status.pid}, data {status.data_dir})")
        )
    else:
        console.print(f"Kafka not running (data {status.data_dir})", markup=False)
        raise typer.Exit(code=3)


@topics_app.command("create")
def topics_create() -> None:
    """Create adaptloop's topics (idempotent) on the configured broker."""
    from adaptloop.streams.admin import ensure_topics

    settings = Settings()
    try:
        created = ensure_topics(
            settings.connection(),
            prefix=settings.topic_prefix,
            partitions=settings.partitions,
            replication=settings.replication,
        )
    except AdaptloopError as error:
        raise fail(error) from None
    console.print(
        f"created {len(created)} topic(s): {', '.join(created) or '(all existed)'}", markup=False
    )


@topics_app.command("delete")
def topics_delete(
    prefix: Annotated[
        str,
        typer.Option(
            metavar="PREFIX",
            help="Delete the topics whose names start with this, e.g. a demo's 'demo-81cf29.'.",
        ),
    ],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete a run's topics (a demo's, a test's): their records are gone; the archive's files
    stay."""
    from adaptloop.streams.admin import delete_topics, wait_for_broker

    settings = Settings()
    if not prefix:
        raise typer.BadParameter("an empty prefix would match every topic", param_hint="--prefix")
    try:
        names = sorted(
            n
            for n in wait_for_broker(settings.connection()).list_topics(timeout=30).topics
            if n.startswith(prefix)
        )
        if not names:
            console.print(f"no topic starts with {prefix!r}", markup=False)
            return
        console.print(f"{len(names)} topic(s): {', '.join(names)}", markup=False)
        if not yes and not typer.confirm("delete them?"):
            raise typer.Exit(code=1)
        deleted = delete_topics(settings.connection(), prefix)
    except AdaptloopError as error:
        raise fail(error) from None
    console.print(f"deleted {len(deleted)} topic(s)")


@app.command("settings")
def settings_show(
    reference: Annotated[
        bool,
        typer.Option(
            "--reference", help="Print the reference of every setting (docs/settings.md) instead."
        ),
    ] = False,
) -> None:
    """Print the settings in effect (environment, ./adaptloop.toml, defaults), secrets hidden."""
    import orjson

    from adaptloop.settings import reference as settings_reference

    if reference:
        print(settings_reference())
        return
    try:
        settings = Settings()
    except Exception as error:  # pydantic's ValidationError names every bad setting
        raise fail(error) from None
    for name, value in {
        **settings.model_dump(mode="json"),
        "kafka": settings.shown_kafka(),
    }.items():
        console.print(
            f"{name} = {orjson.dumps(value).decode()}",
            soft_wrap=True,
            markup=False,
            highlight=False,
        )


@app.command("acls")
def acls(
    apply: Annotated[
        bool, typer.Option("--apply", help="Create them (the settings must log in as an admin).")
    ] = False,
    worker: Annotated[str, typer.Option(help="The worker's principal.")] = "User:worker",
    service: Annotated[str, typer.Option(help="The services' principal.")] = "User:service",
    operator: Annotated[
        str, typer.Option(help="The operators' principal (rollbacks, audits).")
    ] = "User:operator",
) -> None:
    """Print the least-privilege Kafka ACLs of this deployment (topic prefix, group); --apply
    creates them."""
    from rich.table import Table

    from adaptloop.streams.acls import acl_bindings, apply_acls

    settings = Settings()
    try:
        grants = acl_bindings(
            settings.topic_prefix, settings.group, worker=worker, service=service, operator=operator
        )
    # a group whose name would hand the worker what only operators write
    except ValueError as error:
        raise fail(error) from None
    table = Table(
        "principal", "operation", "resource", "pattern", "name", title=f"{len(grants)} ACLs (allow)"
    )
    for grant in grants:
        add_row(
            table,
            grant.principal,
            grant.operation.name,
            grant.resource.name,
            grant.pattern.name,
            grant.name,
        )
    console.print(table)
    if apply:
        try:
            created = apply_acls(settings.connection(), grants)
        except Exception as error:  # an authorisation error names what the login lacks
            raise fail(error) from None
        console.print(f"created {created} ACLs on {settings.bootstrap_address}", markup=False)
