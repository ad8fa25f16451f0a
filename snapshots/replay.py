"""Lineage and exact replay: rebuild a model version from the archived training examples.

A version's record names its parent and the offsets it had learned up to, so the
chain of records from the model's first version to any later one says exactly
which archived examples made it, and where a rollback swapped the model. Replay
follows that chain with the same :class:`OnlineLearner` the worker runs and
checks every version on the way against the stored bytes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import duckdb
import river

from adaptloop.learners.online import OnlineLearner
from adaptloop.learners.spec import LearnerSpec
from adaptloop.learners.store import ModelStore, learn_on_from, model_bytes, unpickle, version_of
from adaptloop.schemas.codec import decode
from adaptloop.schemas.errors import ReplayError, UnknownModel, UnlearnableExample
from adaptloop.schemas.inference import TrainingExample
from adaptloop.schemas.system import ModelVersion
from adaptloop.schemas.topics import DEAD_LETTERS, MODEL_UPDATES, TRAINING_EXAMPLES
from adaptloop.snapshots.archive import ParquetArchive


@dataclass(frozen=True)
class ReplayStep:
    version: str
    reason: str
    examples_seen: int
    reproduced: bool  # the rebuilt bytes hash to ``version``
    dataset_hash_matches: bool
    # for the first version not reproduced: where it diverged, and the likely cause
    why_not: str | None = None


SWAPS = ("rollback", "promotion")  # versions that swap the model for a stored one rather than learn


def _rows(archive_root: Path | str, topic_name: str, model: str) -> list[tuple[int, int, bytes]]:
    with duckdb.connect() as db:
        source = ParquetArchive(archive_root).rows_sql(db, topic_name)
        if source is None:
            return []
        sql = (
            f"SELECT _partition, _offset, _value FROM {source} WHERE _error IS NULL AND model = ? "
            "ORDER BY _partition, _offset"
        )
        return db.execute(sql, [model]).fetchall()


def model_history(archive_root: Path | str, model: str, prefix: str = "") -> list[ModelVersion]:
    """Every archived record of ``model`` on ``model-updates``, in publication order."""
    rows = _rows(archive_root, MODEL_UPDATES.full_name(prefix), model)
    return [decode(MODEL_UPDATES, value) for _, _, value in rows]  # type: ignore[misc]


def lineage(history: list[ModelVersion], version: str) -> list[ModelVersion]:
    """The chain of records from the first version to the record that created ``version``.

    Versions are content hashes, so one version can appear more than once (a
    rollback republishes an old one); a record's parent is the latest earlier
    record of the parent version.
    """
    created = next((i for i, record in enumerate(history) if record.version == version), None)
    if created is None:
        raise UnknownModel(f"version {version!r} is not in the archived history of this model")
    chain, index = [history[created]], created
    while chain[-1].parent is not None:
        parent = chain[-1].parent
        index = next((i for i in range(index - 1, -1, -1) if history[i].version == parent), -1)
        if index < 0:
            raise ReplayError(f"the parent {parent} of {chain[-1].version} is not archived")
        chain.append(history[index])
    return chain[::-1]


def learning_order(
    archive_root: Path | str, model: str, prefix: str
) -> Iterator[tuple[str, int, TrainingExample]]:
    """The model's archived examples in their learning order, without those its learner
    dead-lettered."""
    topic_name = TRAINING_EXAMPLES.full_name(prefix)
    skipped = dead_lettered(archive_root, topic_name, prefix)
    for partition, offset, value in _rows(archive_root, topic_name, model):
        if (partition, offset) not in skipped:
            yield f"{topic_name}:{partition}", offset, decode(TRAINING_EXAMPLES, value)  # type: ignore[misc]


def dead_lettered(
    archive_root: Path | str, source_topic: str, prefix: str = ""
) -> set[tuple[int, int]]:
    """(partition, offset) of every archived record of ``source_topic`` that was dead-lettered: a
    learner never learned those, so a replay skips them."""
    with duckdb.connect() as db:
        source = ParquetArchive(archive_root).rows_sql(db, DEAD_LETTERS.full_name(prefix))
        if source is None:
            return set()
        sql = (
            f'SELECT DISTINCT "partition", "offset" FROM {source} WHERE _error IS NULL AND '
            "source_topic = ?"
        )
        return {(int(p), int(o)) for p, o in db.execute(sql, [source_topic]).fetchall()}


def replay(
    archive_root: Path | str,
    store: ModelStore,
    spec: LearnerSpec,
    until: str,
    prefix: str = "",
    *,
    restore: bool = False,
) -> list[ReplayStep]:
    """Rebuild ``spec.name`` up to version ``until``; one :class:`ReplayStep` per version on the
    way.

    The last step's ``reproduced`` says whether the rebuilt model's bytes hash to ``until``. A
    rollback in the chain is replayed as it happened: the examples before it are learned, then the
    model is swapped for the version it rolled back to (rebuilt earlier in the chain, or else from
    the store). The examples the learner dead-lettered are skipped, as it skipped them. With
    ``restore``, a reproduced ``until`` missing from the store (pruned) is stored again.
    """
    chain = lineage(model_history(archive_root, spec.name, prefix), until)
    targets = {record.version for record in chain if record.reason in SWAPS}
    rebuilt: dict[str, bytes] = {}  # the bytes of versions a later rollback returns to
    learner = OnlineLearner(spec)
    examples = learning_order(archive_root, spec.name, prefix)
    pending: tuple[str, int, TrainingExample] | None = next(examples, None)
    steps: list[ReplayStep] = []
    data, previous = b"", None
    for record in chain:
        learned_before = learner.progress.examples_seen
        while pending is not None and pending[1] < record.offsets.get(pending[0], 0):
            position, offset, example = pending
            # refused by the contract, as the learner refused it
            with contextlib.suppress(UnlearnableExample):
                learner.learn(example, (position, offset))
            pending = next(examples, None)
        if record.reason in SWAPS:  # a rollback, or a promotion of a model a backtest stored
            learner.model = (
                unpickle(rebuilt[record.version])
                if record.version in rebuilt
                else store.load_model(spec.name, record.version)
            )
        data = model_bytes(learner.model)
        learner.model = learn_on_from(data)  # as the learner goes on after each version
        version = version_of(data)
        if version in targets:
            rebuilt[version] = data
        same_examples = (
            record.dataset_hash is None or record.dataset_hash == learner.progress.dataset_hash
        )
        why = None
        if version != record.version and all(step.reproduced for step in steps):
            why = _why_not(
                record, previous, learner.progress.examples_seen - learned_before, same_examples
            )
        steps.append(
            ReplayStep(
                record.version,
                record.reason,
                learner.progress.examples_seen,
                version == record.version,
                same_examples,
                why,
            )
        )
        previous = record
    if restore and steps[-1].reproduced and until not in store.versions(spec.name):
        store.put_model(spec.name, data)
    return steps


def _why_not(
    record: ModelVersion, previous: ModelVersion | None, replayed: int, same_examples: bool
) -> str:
    """Where a replay first diverged from the lineage, and the likely cause."""
    since = (
        f"after {previous.version} ({previous.examples_seen:,} examples, offsets "
        f"{previous.offsets})"
        if previous is not None
        else "from the first example"
    )
    learned = record.examples_seen - (previous.examples_seen if previous is not None else 0)
    if not same_examples:
        return (
            f"the examples diverge {since}, before {record.version} (offsets "
            f"{record.offsets}): the learner "
            f"learned {learned:,} there, the archive gives {replayed:,} (missing archive "
            "files, or dead letters "
            "not archived yet: take a new snapshot once the archive has caught up)"
        )
    return (
        f"the same examples in the same order ({since}, up to {record.version}) gave other "
        "bytes: the model is "
        "not deterministic (a component with a random source and no seed?), or the code "
        "differs (River "
        f"{river.__version__} here)"
    )
