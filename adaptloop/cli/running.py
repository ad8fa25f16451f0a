"""``adaptloop worker`` and ``adaptloop demo``: the loop's roles, and the end-to-end demos."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from adaptloop.cli.common import app, console, fail
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
    try:
        run_worker(Settings(), role.value)
    except AdaptloopError as error:
        raise fail(error) from None


@app.command("serve")
def serve(
    model: Annotated[
        list[str] | None,
        typer.Option("--model", "-m", help="A model to serve (repeat); default: every model in the settings."),
    ] = None,
    host: Annotated[str, typer.Option(help="The address to listen on (0.0.0.0: every interface).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="The port to listen on.")] = 8000,
    openapi: Annotated[
        Path | None, typer.Option(metavar="FILE", help="Write the OpenAPI document to FILE and exit.")
    ] = None,
) -> None:
    """Serve the models over HTTP (predict, outcomes, feedback) for services in any language."""
    import uvicorn

    from adaptloop.streams.serve import create_app

    settings = Settings()
    models = list(model or settings.specs)
    if not models and openapi is None:
        raise fail(AdaptloopError("no model to serve: give --model NAME, or set ADAPTLOOP_MODELS"))
    app_ = create_app(settings, models)
    if openapi is not None:
        import orjson

        openapi.write_bytes(orjson.dumps(app_.openapi(), option=orjson.OPT_INDENT_2))
        console.print(f"OpenAPI document in {openapi}")
        return
    console.print(f"serving {', '.join(models)} on http://{host}:{port} (OpenAPI: /openapi.json, docs: /docs)")
    tune_gc()  # as the worker's roles: a full collection of start-up's objects would stall requests
    uvicorn.run(app_, host=host, port=port, log_level="warning", access_log=False)


@app.command("demo")
def demo(
    scenario: Annotated[
        DemoScenario, typer.Argument(help="loop (predictions, outcomes, learners) or agents (routing, guardrails).")
    ] = DemoScenario.LOOP,
    decisions: Annotated[int, typer.Option(min=1, metavar="N", help="Decisions to serve (loop).")] = 12_000,
    rate: Annotated[float, typer.Option(min=1, metavar="PER_SECOND", help="Decisions per second (loop).")] = 400.0,
    policy: Annotated[DriftPolicy, typer.Option(help="Drift policy of the loop's model.")] = DriftPolicy.ALERT,
    sessions: Annotated[int, typer.Option(min=1, metavar="N", help="Agent sessions (agents).")] = 3000,
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
