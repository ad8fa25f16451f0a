"""Every version reproduces, for every recipe: a replay from the archive rebuilds each version byte
for byte.

The learner here is the worker's, driven as its learner role drives it (a version every 200
examples, every record archived with its offset). It and the replay run in processes of their own,
as the worker's learner and `adaptloop replay` do (with PYTHONHASHSEED=0, as they do), so nothing
the replay rebuilds can share a random generator's state with the learner.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from river.datasets import synth

from adaptloop.learners.online import OnlineLearner
from adaptloop.learners.spec import LearnerSpec
from adaptloop.learners.store import ModelStore
from adaptloop.schemas import DeadLetter, TrainingExample, encode
from adaptloop.schemas.errors import UnlearnableExample
from adaptloop.schemas.topics import DEAD_LETTERS, MODEL_UPDATES, TRAINING_EXAMPLES
from adaptloop.snapshots.archive import ParquetArchive
from adaptloop.snapshots.columns import RawRecord

ROOT = Path(__file__).resolve().parents[3]
AT = datetime(2026, 1, 1, tzinfo=UTC)
STAMP = 1_767_225_600_000
SPECS = {
    "logistic": LearnerSpec(name="logistic", recipe="logistic", checkpoint_every=200),
    "hoeffding": LearnerSpec(name="hoeffding", recipe="hoeffding", checkpoint_every=200),
    "hoeffding_regressor": LearnerSpec(
        name="hoeffding_regressor",
        task="regression",
        recipe="hoeffding_regressor",
        metrics=["MAE"],
        checkpoint_every=200,
    ),
    "forest": LearnerSpec(name="forest", recipe="tests.recipes:forest", checkpoint_every=200),
}


def _stream(spec: LearnerSpec) -> list[tuple[dict, object]]:
    if spec.task == "regression":
        return [
            ({f"x{k}": v for k, v in x.items()}, float(y))
            for x, y in synth.Friedman(seed=3).take(700)
        ]
    return [(dict(x), bool(y)) for x, y in synth.Agrawal(seed=3).take(700)]


def learn_and_archive(spec: LearnerSpec, tmp_path) -> str:
    """Learn as the learner role does and archive every example and version; return the last
    version."""
    store, archive = ModelStore(tmp_path / "models"), ParquetArchive(tmp_path / "archive")
    learner = OnlineLearner(spec)
    examples, versions, letters = [], [store.checkpoint(learner)], []
    for offset, (x, y) in enumerate(_stream(spec)):
        label: object = y if offset != 350 else "not a label"  # one example its contract refuses
        example = TrainingExample(
            model=spec.name,
            decision_id=f"d{offset}",
            model_version=versions[-1].version,
            features=x,
            prediction=None,
            label=label,
            predicted_at=AT,
            timestamp=AT,
        )
        examples.append(RawRecord(0, offset, STAMP + offset, spec.name.encode(), encode(example)))
        try:
            learner.learn(example, ("training-examples:0", offset))
        except UnlearnableExample as error:  # the learner dead-letters it
            letters.append(
                DeadLetter(
                    source_topic="training-examples",
                    partition=0,
                    offset=offset,
                    key=None,
                    value=encode(example),
                    kind="rejected",
                    reason=str(error),
                    consumer="l",
                )
            )
        if learner.progress.learned_since_version >= spec.checkpoint_every:
            versions.append(store.checkpoint(learner))
    archive.write(TRAINING_EXAMPLES, "training-examples", 0, examples)
    archive.write(
        MODEL_UPDATES,
        "model-updates",
        0,
        [RawRecord(0, i, STAMP + i, v.model.encode(), encode(v)) for i, v in enumerate(versions)],
    )
    archive.write(
        DEAD_LETTERS,
        "dead-letters",
        0,
        [
            RawRecord(0, i, STAMP + i, b"training-examples", encode(d))
            for i, d in enumerate(letters)
        ],
    )
    assert len(letters) == 1 and len(versions) == 4
    return versions[-1].version


LEARN = textwrap.dedent("""
    import sys
    from pathlib import Path
    from adaptloop.learners.spec import LearnerSpec
    from tests.unit.snapshots.test_replay_recipes import learn_and_archive
    print(learn_and_archive(LearnerSpec.model_validate_json(sys.argv[2]), Path(sys.argv[1])))
""")

REPLAY = textwrap.dedent("""
    import sys, orjson
    from pathlib import Path
    from adaptloop.learners.spec import LearnerSpec
    from adaptloop.learners.store import ModelStore
    from adaptloop.snapshots.replay import replay
    home, spec, until = Path(sys.argv[1]), LearnerSpec.model_validate_json(sys.argv[2]), sys.argv[3]
    steps = replay(home / "archive", ModelStore(home / "models"), spec, until)
    print(orjson.dumps([[s.version, s.reproduced, s.dataset_hash_matches, s.why_not] for s in steps]).decode())
""")


def _in_a_process(script: str, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True,
        text=True,
        env={"PYTHONHASHSEED": "0", "PATH": "", "PYTHONPATH": str(ROOT)},
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


@pytest.mark.parametrize("recipe", list(SPECS))
def test_replay_rebuilds_every_version_byte_for_byte(recipe, tmp_path):
    spec = SPECS[recipe]
    until = _in_a_process(LEARN, str(tmp_path), spec.model_dump_json()).strip()
    steps = orjson.loads(_in_a_process(REPLAY, str(tmp_path), spec.model_dump_json(), until))
    assert [step[0] for step in steps][-1] == until and len(steps) == 4
    assert all(reproduced and same for _, reproduced, same, _ in steps), steps


def test_a_replay_that_diverges_says_where_and_why(tmp_path):
    spec = SPECS["logistic"]
    until = _in_a_process(LEARN, str(tmp_path), spec.model_dump_json()).strip()
    # Lose the archived dead letter: the replay now learns the refused example... which it refuses
    # too (the contract is code): still reproduced. Lose an archived example instead: the examples
    # diverge.
    archive = tmp_path / "archive" / "topic=training-examples"
    (file,) = archive.glob("date=*/*.parquet")
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    table = pq.read_table(file)
    pq.write_table(table.filter(pc.not_equal(table["_offset"], 450)), file)
    steps = orjson.loads(_in_a_process(REPLAY, str(tmp_path), spec.model_dump_json(), until))
    first = next(step for step in steps if not step[1])
    assert first[2] is False  # the dataset hash differs: the examples did
    assert (
        "the examples diverge after" in first[3]
        and "the learner learned 200 there, the archive gives 199" in first[3]
    )
