"""The models in effect: learner specs as operators declare them on ``model-specs``, checked, and
what a change of one means for its running learner.

A record on ``model-specs`` (:class:`~adaptloop.schemas.system.ModelSpecRecord`) carries a spec's
fields as JSON. :func:`spec_of` turns it into a :class:`LearnerSpec` or says in one line why it
cannot be one (a typo in a recipe, a field that does not exist, a spec named after another model),
so a bad record is refused, by the command that would send it and by every reader, and never stops a
running worker.

:func:`change_of` says what a valid record does to the model it names:

- ``added``: a model the loop did not know (or had retired) is learned and served from now on;
- ``updated``: the same model (task, recipe and params) under new settings: metrics, cadence, join
  rules, drift settings take effect at once, as they do for a restarted worker;
- ``recipe``: another model (task, recipe or params): it cannot replace the learned one without
  throwing its learning away, so it starts as a challenger (:mod:`adaptloop.learners.watch`) beside
  it and is promoted when the paired test finds it better, or after ``challenger_examples`` unless
  it is found worse;
- ``retired``: the model is no longer learned nor served (its versions and checkpoint stay for
  audits);
- ``unchanged``: nothing to do (the same spec again, e.g. the seed of a worker started again).

:func:`catalogue` is the spec of each model in effect, from the topic's records overlaid on the
settings' specs (``ADAPTLOOP_MODELS`` seeds the topic with the models it lacks, so both give the
same catalogue).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Literal

from pydantic import ValidationError

from adaptloop.learners.spec import LearnerSpec
from adaptloop.schemas.errors import ConfigError
from adaptloop.schemas.system import ModelSpecRecord

Change = Literal["added", "updated", "recipe", "retired", "unchanged"]

MODEL_FIELDS = ("task", "recipe", "params")
"""What a model is. The rest of a spec (metrics, cadence, join rules, drift settings) may change
while it learns; a spec that changes one of these asks for another model."""


def spec_of(record: ModelSpecRecord, *, buildable: bool = True) -> LearnerSpec:
    """The learner spec ``record`` declares; :class:`ConfigError` in one line if it is not a valid
    one.

    ``buildable``: also check that its recipe, metrics and detector can be built (this loads River;
    the join, which never builds a model, checks the fields only).

    >>> spec_of(ModelSpecRecord(model="churn", spec={"name": "churn", "recipe": "hoeffding"}, actor="ops")).recipe
    'hoeffding'
    >>> spec_of(ModelSpecRecord(model="churn", spec={"name": "churn", "recipe": "logisitc"}, actor="ops"))
    ... # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    adaptloop.schemas.errors.ConfigError: model 'churn': recipe 'logisitc' is unknown; choices: logistic, ...
    """
    from adaptloop.learners.recipes import check_spec  # River: only where specs are checked

    named = record.spec.get("name", record.model)
    if named != record.model:
        raise ConfigError(
            f"the spec of model {record.model!r} is named {named!r}: a record "
            "declares its own model"
        )
    try:
        spec = LearnerSpec.model_validate({**record.spec, "name": record.model})
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in item['loc']) or 'spec'}"
            f"{'' if isinstance(item.get('input'), dict | list) else ' = ' + repr(item.get('input'))}: {item['msg']}"
            for item in error.errors()
        )
        raise ConfigError(f"model {record.model!r}: {problems}") from None
    if buildable:
        check_spec(spec)
    return spec


def retirement(record: ModelSpecRecord) -> str | None:
    """Who retired the model and why, if ``record`` retires it (None: it declares the model).

    >>> retirement(ModelSpecRecord(model="churn", status="retired", actor="ops", reason="closed"))
    'retired by ops: closed'
    >>> retirement(ModelSpecRecord(model="churn", status="retired", actor="ops"))
    'retired by ops: no reason given'
    >>> retirement(ModelSpecRecord(model="churn", spec={"name": "churn"}, actor="ops")) is None
    True
    """
    if record.status != "retired":
        return None
    return f"retired by {record.actor}: {record.reason or 'no reason given'}"


def change_of(
    current: LearnerSpec | None, record: ModelSpecRecord, spec: LearnerSpec | None
) -> Change:
    """What ``record`` (its valid ``spec``; None for a retirement) does to a model whose spec in
    effect is ``current`` (None: not learned now).

    >>> old = LearnerSpec(name="churn")
    >>> def record(status="active"): return ModelSpecRecord(model="churn", status=status, actor="ops")
    >>> change_of(None, record(), old), change_of(old, record(), old)
    ('added', 'unchanged')
    >>> change_of(old, record(), old.model_copy(update={"checkpoint_every": 10}))
    'updated'
    >>> change_of(old, record(), old.model_copy(update={"recipe": "hoeffding"}))
    'recipe'
    >>> change_of(old, record("retired"), None), change_of(None, record("retired"), None)
    ('retired', 'unchanged')
    """
    if record.status == "retired" or spec is None:
        return "retired" if current is not None else "unchanged"
    if current is None:
        return "added"
    if current == spec:
        return "unchanged"
    if any(getattr(current, name) != getattr(spec, name) for name in MODEL_FIELDS):
        return "recipe"
    return "updated"


def as_learned(spec: LearnerSpec, learned: LearnerSpec) -> LearnerSpec:
    """``spec`` with the model fields of ``learned``: the settings of a new spec applied to the
    model learned so far, while the new model is a challenger beside it.

    >>> as_learned(LearnerSpec(name="m", recipe="hoeffding", checkpoint_every=10), LearnerSpec(name="m")).recipe
    'logistic'
    """
    return spec.model_copy(update={name: getattr(learned, name) for name in MODEL_FIELDS})


def refuse_recipe_change(current: LearnerSpec, spec: LearnerSpec) -> str | None:
    """Why a change of model cannot run as a challenger, or None: a challenger learns one example at
    a time.

    >>> refuse_recipe_change(LearnerSpec(name="m", mini_batch=10, checkpoint_every=100), LearnerSpec(name="m"))
    "model 'm' learns in mini-batches: a challenger learns one example at a time; give the new model a new name"
    """
    if current.mini_batch or spec.mini_batch:
        return (
            f"model {spec.name!r} learns in mini-batches: a challenger learns one example "
            "at a time; "
            "give the new model a new name"
        )
    if current.task != spec.task:
        return (
            f"model {spec.name!r} is a {current.task} model; a {spec.task} one is no "
            "challenger to it (they "
            "predict different things): give it a new name"
        )
    return None


def catalogue(
    seeds: Mapping[str, LearnerSpec], records: Iterable[ModelSpecRecord], *, buildable: bool = True
) -> tuple[dict[str, LearnerSpec], set[str]]:
    """(each model's spec in effect, the models retired): ``records`` (in topic order) overlaid on
    ``seeds``.

    A record that is not a valid spec is skipped here (its reader dead-letters or logs it): the
    model keeps the spec before it.

    >>> seeds = {"a": LearnerSpec(name="a"), "b": LearnerSpec(name="b")}
    >>> records = [ModelSpecRecord(model="c", spec={"name": "c"}, actor="ops"),
    ...            ModelSpecRecord(model="b", status="retired", actor="ops")]
    >>> specs, retired = catalogue(seeds, records)
    >>> sorted(specs), retired
    (['a', 'c'], {'b'})
    """
    specs, retired = dict(seeds), set[str]()
    for record in records:
        if record.status == "retired":
            specs.pop(record.model, None)
            retired.add(record.model)
            continue
        try:
            specs[record.model] = spec_of(record, buildable=buildable)
        except ConfigError:
            continue
        retired.discard(record.model)
    return specs, retired
