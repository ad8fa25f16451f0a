"""``adaptloop models add|update|retire|list``: the models the loop learns and serves, changed while
it runs.

Each command sends one record to the compacted ``model-specs`` topic
(:mod:`adaptloop.streams.specs`), checked first: a spec with a typo is refused here, in one line,
and nothing is sent. Running workers, the join and ``adaptloop serve`` take the change up within
seconds, without a restart.
"""

from __future__ import annotations

from typing import Annotated, Any

import orjson
import typer
from rich.table import Table

from adaptloop.cli.common import add_row, console, fail, plain, sub_app
from adaptloop.learners.spec import LearnerSpec
from adaptloop.schemas.errors import AdaptloopError, ConfigError
from adaptloop.settings import Settings

models_app = sub_app(
    "models", "The models the loop learns and serves: add, update, retire and list them live."
)

SetOption = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        metavar="FIELD=VALUE",
        help="A spec field (repeat); nested with dots (drift.policy=challenger); VALUE is JSON, "
        "else text.",
    ),
]
RecipeOption = Annotated[
    str | None,
    typer.Option(help="logistic, hoeffding, linear, hoeffding_regressor, or 'module:function'."),
]
TaskOption = Annotated[str | None, typer.Option(help="binary, multiclass or regression.")]
ParamOption = Annotated[
    list[str] | None,
    typer.Option(
        "--param", metavar="NAME=VALUE", help="A keyword argument of the recipe (repeat)."
    ),
]
ReasonOption = Annotated[str, typer.Option(metavar="TEXT", help="Why: recorded with the spec.")]
ActorOption = Annotated[
    str | None, typer.Option(metavar="NAME", help="Who: recorded with the spec (default: $USER).")
]


def _value(text: str) -> Any:
    """A ``--set`` or ``--param`` value: JSON when it is JSON (``0.5``, ``true``, ``{"delta":
    0.01}``), else text.

    >>> _value("0.5"), _value("true"), _value("hoeffding")
    (0.5, True, 'hoeffding')
    """
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return text


def _assignment(text: str, option: str) -> tuple[str, Any]:
    name, equals, value = text.partition("=")
    if not equals or not name.strip():
        raise ConfigError(f"{option} {text!r}: expected NAME=VALUE")
    return name.strip(), _value(value)


def spec_fields(
    base: dict[str, Any],
    *,
    recipe: str | None,
    task: str | None,
    params: list[str] | None,
    sets: list[str] | None,
) -> dict[str, Any]:
    """``base`` (a spec's fields) with the command line's changes.

    >>> spec_fields({"recipe": "logistic", "drift": {"policy": "alert"}}, recipe="hoeffding", task=None,
    ...             params=["grace_period=50"], sets=["drift.policy=challenger", "checkpoint_every=100"])
    {'recipe': 'hoeffding', 'drift': {'policy': 'challenger'}, 'params': {'grace_period': 50}, 'checkpoint_every': 100}
    """
    fields = orjson.loads(orjson.dumps(base))  # a deep copy
    if recipe is not None:
        fields["recipe"] = recipe
    if task is not None:
        fields["task"] = task
    for text in params or []:
        name, value = _assignment(text, "--param")
        fields.setdefault("params", {})[name] = value
    for text in sets or []:
        path, value = _assignment(text, "--set")
        *parents, last = path.split(".")
        where = fields
        for part in parents:
            child = where.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"--set {text!r}: {part!r} is not a table of fields")
            where = child
        where[last] = value
    return fields


def _checked(model: str, fields: dict[str, Any]) -> LearnerSpec:
    """The spec ``fields`` declare for ``model``; a command that would send a bad one ends in one
    line."""
    from adaptloop.learners.catalog import spec_of
    from adaptloop.schemas.system import ModelSpecRecord

    try:
        return spec_of(ModelSpecRecord(model=model, spec={"name": model, **fields}, actor="check"))
    except AdaptloopError as error:
        raise fail(error) from None
    except ValueError as error:  # the record's own contract (a model name that cannot be one)
        raise fail(ConfigError(f"model {model!r}: {error}")) from None


def _declare(
    model: str,
    spec: LearnerSpec | None,
    fields: dict[str, Any] | None,
    status: str,
    reason: str,
    actor: str | None,
) -> None:
    """Send one spec record (``spec`` checked already; None: a retirement); print what happens
    next."""
    from adaptloop.streams.specs import declare

    settings = Settings()
    try:
        record = declare(
            settings.connection(),
            model,
            spec,
            status="retired" if spec is None else "active",
            actor=actor,
            reason=reason,
            prefix=settings.topic_prefix,
            fields=fields,
        )
    except AdaptloopError as error:
        raise fail(error) from None
    console.print(f"{model}: spec {record.spec_id} {status} by {record.actor}", markup=False)


def _current(model: str) -> tuple[dict[str, Any] | None, str | None]:
    """(the fields of ``model``'s latest spec, its status), both None if model-specs has no record
    of it."""
    from adaptloop.streams.specs import read_catalogue

    settings = Settings()
    record = read_catalogue(
        settings.connection(), {}, settings.topic_prefix, buildable=False
    ).records.get(model)
    if record is None:
        return None, None
    return {name: value for name, value in record.spec.items() if name != "name"}, record.status


@models_app.command("add")
def add(
    model: Annotated[
        str, typer.Argument(metavar="NAME", help="The model's name, as services call it.")
    ],
    recipe: RecipeOption = None,
    task: TaskOption = None,
    param: ParamOption = None,
    set_: SetOption = None,
    reason: ReasonOption = "",
    actor: ActorOption = None,
) -> None:
    """Declare a new model: running workers start learning it and serving follows its versions."""
    try:
        fields = spec_fields({}, recipe=recipe, task=task, params=param, sets=set_)
    except ConfigError as error:
        raise fail(error) from None
    spec = _checked(model, fields)  # before anything is asked of Kafka
    _, status = _current(model)
    if status == "active":
        raise fail(
            ConfigError(
                f"model {model!r} exists; change it with `adaptloop models update {model} ...`"
            )
        )
    _declare(model, spec, fields, "added", reason, actor)
    console.print(
        "running workers start learning it; `adaptloop serve` serves its first servable version"
    )


@models_app.command("update")
def update(
    model: Annotated[str, typer.Argument(metavar="NAME", help="The model to change.")],
    recipe: RecipeOption = None,
    task: TaskOption = None,
    param: ParamOption = None,
    set_: SetOption = None,
    reason: ReasonOption = "",
    actor: ActorOption = None,
) -> None:
    """Change a model's spec; another recipe, task or params starts as a challenger to the learned
    model."""
    current, status = _current(model)
    if current is None or status != "active":
        what = "is retired" if status == "retired" else "has no spec on model-specs"
        raise fail(
            ConfigError(
                f"model {model!r} {what}; declare it with `adaptloop models add {model} ...`"
            )
        )
    try:
        fields = spec_fields(current, recipe=recipe, task=task, params=param, sets=set_)
    except ConfigError as error:
        raise fail(error) from None
    if fields == current:
        raise fail(
            ConfigError(f"nothing to change in model {model!r}: give --recipe, --param or --set")
        )
    _declare(model, _checked(model, fields), fields, "updated", reason, actor)
    model_changed = any(
        fields.get(name) != current.get(name) for name in ("recipe", "task", "params")
    )
    if model_changed:
        console.print(
            "another model: it learns beside the current one and replaces it when the test says so"
        )


@models_app.command("retire")
def retire(
    model: Annotated[str, typer.Argument(metavar="NAME", help="The model to retire.")],
    reason: ReasonOption = "",
    actor: ActorOption = None,
) -> None:
    """Stop learning and serving a model; its versions, checkpoint and lineage stay for audits."""
    current, status = _current(model)
    if status != "active":
        what = "is retired already" if status == "retired" else "has no spec on model-specs"
        raise fail(ConfigError(f"model {model!r} {what}"))
    _declare(model, None, current, "retired", reason, actor)
    console.print(
        "workers stop learning it and `adaptloop serve` stops serving it; its versions stay"
    )


@models_app.command("list")
def list_models() -> None:
    """The models on model-specs: each one's status, recipe, who declared it last, when and why."""
    from adaptloop.streams.specs import read_catalogue

    settings = Settings()
    try:
        records = read_catalogue(
            settings.connection(), {}, settings.topic_prefix, buildable=False
        ).records
    except AdaptloopError as error:
        raise fail(error) from None
    table = Table(title=plain(f"models on {settings.topic_prefix}model-specs"))
    for header in ("model", "status", "task", "recipe", "declared by", "at", "reason"):
        table.add_column(header)
    for name, record in sorted(records.items()):
        add_row(
            table,
            name,
            record.status,
            record.spec.get("task", "binary"),
            record.spec.get("recipe", "logistic"),
            record.actor if record.principal is None else f"{record.actor} ({record.principal})",
            record.timestamp.isoformat(timespec="seconds"),
            record.reason or "-",
        )
    if not records:
        table.add_row("(none: `adaptloop models add NAME` declares one)", "", "", "", "", "", "")
    console.print(table)
