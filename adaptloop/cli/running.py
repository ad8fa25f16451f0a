"""``adaptloop worker`` and ``adaptloop demo``: the loop's roles, and the end-to-end demos."""

from __future__ import annotations

import logging
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from adaptloop.cli.common import app, console, fail, figure
from adaptloop.roles import tune_gc
from adaptloop.schemas.errors import AdaptloopError
from adaptloop.settings import Settings


class Role(str, Enum):
    """Which of the worker's roles to run."""

    ALL = "all"
    JOIN = "join"
    LEARN = "learn"
    ARCHIVE = "archive"
    AGENTS = "agents"
    NOTIFY = "notify"


class DemoScenario(str, Enum):
    LOOP = "loop"
    AGENTS = "agents"


class DriftPolicy(str, Enum):
    ALERT = "alert"
    CHALLENGER = "challenger"
    ROLLBACK = "rollback"


@app.command("worker")
def worker(
    role: Annotated[
        Role,
        typer.Option(
            help="all; join (predictions + outcomes); learn (the learners); archive "
            "(Parquet, snapshots); agents (guardrails, preference stores)."
        ),
    ] = Role.ALL,
) -> None:
    """Run the loop's roles until stopped; several workers with the same settings share the work."""
    from adaptloop.worker import ensure_reproducible_hashing, run_worker

    ensure_reproducible_hashing()
    settings = Settings()  # a wrong setting or login: one line, exit 78 (adaptloop.cli.common)
    # the worker logs at its log_level (-v: at least INFO), as its roles do
    root = logging.getLogger()
    root.setLevel(min(root.level, logging.getLevelName(settings.log_level.upper())))
    run_worker(settings, role.value)


@app.command("serve")
def serve(
    model: Annotated[
        list[str] | None,
        typer.Option(
            "--model",
            "-m",
            help="A model to serve (repeat); default: every model on model-specs (and "
            "ADAPTLOOP_MODELS), "
            "following the models operators add and retire while it serves.",
        ),
    ] = None,
    host: Annotated[
        str, typer.Option(help="The address to listen on (0.0.0.0: every interface).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="The port to listen on.")] = 8000,
    openapi: Annotated[
        Path | None,
        typer.Option(metavar="FILE", help="Write the OpenAPI document to FILE and exit."),
    ] = None,
) -> None:
    """Serve the models over HTTP (predict, outcomes, feedback) for services in any language."""
    import uvicorn

    from adaptloop.streams.serve import RequestLimits, create_app

    settings = Settings()
    specs, follow, retired = dict(settings.specs), None, list[str]()
    # the models in effect, followed: added ones served; retired ones answered as such (added back:
    # served)
    if openapi is None and not model:
        from adaptloop.streams.specs import read_catalogue

        catalogue = read_catalogue(
            settings.bootstrap_address, settings.specs, settings.topic_prefix, buildable=False
        )
        specs, follow, retired = catalogue.specs, catalogue.ends, sorted(catalogue.retired)
    models = list(model or specs)
    if not models and openapi is None:
        raise fail(
            AdaptloopError(
                "no model to serve: give --model NAME, set ADAPTLOOP_MODELS, or add one "
                "with `adaptloop models add`"
            )
        )
    unknown = [name for name in models if settings.specs and name not in settings.specs]
    # (with no specs here, a service host serves whatever the worker publishes under the name)
    if unknown:
        raise fail(
            AdaptloopError(
                f"no model {unknown[0]!r} in ADAPTLOOP_MODELS; choices: {', '.join(settings.specs)}"
            )
        )
    # A prediction with more features than every served model's budget would be dead-lettered by the
    # worker.
    budgets = [specs[name].max_event_features for name in models if name in specs]
    max_features = max([settings.max_event_features, *(b for b in budgets if b is not None)])
    limits = RequestLimits(max_body_bytes=settings.serve_max_body_bytes, max_features=max_features)
    app_ = create_app(settings, [*models, *retired], limits, follow_specs=follow)
    if openapi is not None:
        import orjson

        openapi.write_bytes(orjson.dumps(app_.openapi(), option=orjson.OPT_INDENT_2))
        console.print(f"OpenAPI document in {openapi}", markup=False)
        return
    console.print(
        f"serving {', '.join(models)} on http://{host}:{port} (OpenAPI: /openapi.json, "
        "docs: /docs)" + (f"; retired: {', '.join(retired)}" if retired else ""),
        markup=False,
    )
    tune_gc()  # as the worker's roles: a full collection of start-up's objects would stall requests
    uvicorn.run(app_, host=host, port=port, log_level="warning", access_log=False)


@app.command("demo")
def demo(
    scenario: Annotated[
        DemoScenario,
        typer.Argument(
            help="loop (predictions, outcomes, learners) or agents (routing, guardrails)."
        ),
    ] = DemoScenario.LOOP,
    decisions: Annotated[
        int, typer.Option(min=1, metavar="N", help="Decisions to serve (loop).")
    ] = 12_000,
    rate: Annotated[
        float, typer.Option(min=1, metavar="PER_SECOND", help="Decisions per second (loop).")
    ] = 400.0,
    policy: Annotated[
        DriftPolicy, typer.Option(help="Drift policy of the loop's model.")
    ] = DriftPolicy.CHALLENGER,
    sessions: Annotated[
        int, typer.Option(min=1, metavar="N", help="Agent sessions (agents).")
    ] = 3000,
) -> None:
    """End to end on a local broker (unless one is set): a worker, traffic, and the final tables."""
    try:
        if scenario is DemoScenario.AGENTS:
            from adaptloop.agents_demo import AgentScenario, run_agents_demo

            run_agents_demo(Settings(), console, AgentScenario(sessions=sessions))
            return
        from adaptloop.demo import Scenario, run_demo

        run_demo(Settings(), console, Scenario(decisions=decisions, rate=rate, policy=policy.value))
    except AdaptloopError as error:
        raise fail(error) from None


@app.command("ingest")
def ingest_command(
    source: Annotated[
        str, typer.Argument(help="A CSV or Parquet file, or river:<Dataset> (e.g. river:Phishing).")
    ],
    model: Annotated[
        str, typer.Option("--model", "-m", help="The model to learn it (a spec in the settings).")
    ],
    label: Annotated[
        str | None, typer.Option(help="The label column of a CSV or Parquet file.")
    ] = None,
    rate: Annotated[
        float | None,
        typer.Option(
            min=0.001, metavar="PER_SECOND", help="Decisions per second (default: at once)."
        ),
    ] = None,
    delay: Annotated[
        str, typer.Option(help="Outcome delay: fixed:S, exp:MEAN or uniform:LOW,HIGH (seconds).")
    ] = "fixed:0",
    ordered: Annotated[
        bool,
        typer.Option(
            help="Learn in the file's order (one partition, fixed delay): equal "
            "to River in process."
        ),
    ] = False,
    limit: Annotated[int | None, typer.Option(min=1, metavar="N", help="At most N rows.")] = None,
    snapshot: Annotated[
        bool, typer.Option(help="Take a snapshot once the archive holds the run.")
    ] = True,
    timeout: Annotated[
        float, typer.Option(min=1, metavar="SECONDS", help="Give up after this long.")
    ] = 600.0,
) -> None:
    """Push a dataset through the running loop as decisions and outcomes; wait until each is
    accounted for."""
    from adaptloop.ingest import Delay, ingest
    from adaptloop.progress import StepsInTurn

    settings = Settings()
    try:
        with StepsInTurn(console) as progress:
            result = ingest(
                settings,
                source,
                model,
                label=label,
                rate=rate,
                delay=Delay.parse(delay),
                ordered=ordered,
                limit=limit,
                snapshot=snapshot,
                timeout=timeout,
                progress=progress,
            )
    except AdaptloopError as error:
        raise fail(error) from None
    statuses = ", ".join(f"{status} {count:,}" for status, count in sorted(result.statuses.items()))
    console.print(f"{result.decisions:,} decisions: {statuses}", markup=False)
    console.print(
        f"sent in {result.sent_seconds:.1f}s; learned in {result.learned_seconds:.1f}s "
        "(every decision ended in "
        f"the join and a version learned them); archived in {result.archived_seconds:.1f}s "
        "(the archive writes "
        f"every {settings.archive_flush_seconds:g}s: archive_flush_seconds); "
        f"{result.seconds:.1f}s in all",
        markup=False,
        soft_wrap=True,
    )
    version = result.version
    if version is not None:
        metrics = ", ".join(
            f"{name} {figure(value, 4)}" for name, value in sorted(version.metrics.items())
        )
        console.print(
            f"version {version.version} of {model}: {version.examples_seen:,} examples "
            f"seen; {metrics}",
            markup=False,
        )
    console.print(f"archived {result.archived:,} training examples of this run", markup=False)
    if result.snapshot is not None:
        console.print(f"snapshot {result.snapshot}", markup=False)
