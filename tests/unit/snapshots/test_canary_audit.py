"""The canary audit: per round and group, the decisions served, their outcomes and accuracy, and the
verdict."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from adaptloop.samples import sample_events
from adaptloop.schemas import ModelVersion, TrainingExample, encode
from adaptloop.schemas.system import Canary
from adaptloop.schemas.topics import MODEL_UPDATES, TRAINING_EXAMPLES
from adaptloop.snapshots.archive import ParquetArchive
from adaptloop.snapshots.audit import run_audit
from adaptloop.snapshots.columns import RawRecord
from adaptloop.snapshots.snapshot import create_snapshot

START = datetime(2026, 1, 1, tzinfo=UTC)
S, V1, V2, V3, V4 = ("0" * 15 + str(i) for i in range(5))


def record(version: str, minute: int, canary: Canary | None) -> ModelVersion:
    sample = next(iter(sample_events(ModelVersion, 1)))
    return sample.model_copy(
        update={
            "model": "churn",
            "version": version,
            "timestamp": START + timedelta(minutes=minute),
            "canary": canary,
        }
    )


def running(canary: str) -> Canary:
    return Canary(stable=S, canary=canary, share=0.2)


def test_the_canary_audit_counts_each_groups_decisions_per_round_and_says_how_the_round_ended(
    tmp_path,
):
    records = [
        record(S, 0, None),  # the first version: every decision
        record(V1, 10, running(V1)),  # round 1: S against the line V1, V2
        record(V2, 20, running(V2)),
        record(S, 30, running(V2).model_copy(update={"state": "rolled_back"})),  # back to S
        record(V3, 40, running(V3)),  # round 2: S against V3
        record(V4, 50, running(V3).model_copy(update={"state": "promoted"})),
    ]
    served = [  # (minute, version, right?)
        *[(5, S, True)] * 4,  # before any canary: not in the audit
        *[(12, S, True)] * 8,
        *[(12, V1, False)] * 2,
        *[(22, V1, False)],  # a decision of the line's older version, after V2 was published
        *[(22, V2, False), (22, V2, True)],
        *[(22, "java-rules", True)],  # not a version of the round: not in either group
        *[(35, S, True)] * 3,  # S alone again
        *[(45, S, False), (45, S, True), (45, V3, True), (45, V3, True), (45, V3, True)],
        *[(55, V4, True)] * 5,  # promoted: every decision, no canary
    ]
    examples = [
        TrainingExample(
            model="churn",
            decision_id=f"d-{i}",
            model_version=version,
            features={"x": 1.0},
            prediction=True,
            label=right,
            predicted_at=START + timedelta(minutes=minute, seconds=i),
        )
        for i, (minute, version, right) in enumerate(served)
    ]
    archive = ParquetArchive(tmp_path / "archive")
    stamp = int(START.timestamp() * 1000)
    archive.write(
        TRAINING_EXAMPLES,
        "training-examples",
        0,
        [RawRecord(0, i, stamp + i, b"churn", encode(e)) for i, e in enumerate(examples)],
    )
    archive.write(
        MODEL_UPDATES,
        "model-updates",
        0,
        [RawRecord(0, i, stamp + i, b"churn", encode(r)) for i, r in enumerate(records)],
    )
    info = create_snapshot(tmp_path / "archive", None, tmp_path / "s.duckdb")

    rows = [
        (
            row["round"],
            row["group"],
            row["versions"],
            row["decisions"],
            row["with_outcome"],
            row["accuracy"],
        )
        for row in run_audit(info.path, "canary").to_pylist()
    ]
    assert rows == [
        (1, "canary", 2, 5, 5, 0.2),
        (1, "stable", 1, 8, 8, 1.0),
        (2, "canary", 1, 3, 3, 1.0),
        (2, "stable", 1, 2, 2, 0.5),
    ]
    ends = {
        row["round"]: (row["verdict"], row["stable"], row["share"])
        for row in run_audit(info.path, "canary").to_pylist()
    }
    assert ends == {1: ("rolled_back", S, 0.2), 2: ("promoted", S, 0.2)}
    lineage = run_audit(info.path, "lineage", {"model": "churn"}).to_pylist()
    assert [row["canary"] is not None for row in lineage] == [True] * 5 + [False]
