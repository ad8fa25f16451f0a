"""The model store keeps each model's newest versions, and never the current one's bytes away."""

from __future__ import annotations

from datetime import UTC, datetime

from river.datasets import synth

from adaptloop.learners.online import OnlineLearner
from adaptloop.learners.spec import LearnerSpec
from adaptloop.learners.store import PRUNE_EVERY, ModelStore
from adaptloop.schemas import TrainingExample

AT = datetime(2026, 1, 1, tzinfo=UTC)


def test_the_store_keeps_the_newest_versions_and_the_one_used_again(tmp_path):
    store = ModelStore(tmp_path)
    learner = OnlineLearner(LearnerSpec(name="m", keep_versions=20))
    published = []
    rows = synth.Hyperplane(seed=1, n_features=3).take(3 * PRUNE_EVERY + 10)
    for i, (x, y) in enumerate(rows):
        learner.learn(
            TrainingExample(
                model="m",
                decision_id=str(i),
                model_version="v",
                features={f"x{k}": v for k, v in x.items()},
                label=bool(y),
                predicted_at=AT,
            ),
            ("t:0", i),
        )
        published.append(store.checkpoint(learner).version)
        if len(published) == 140:  # a rollback stores an older version again: it is recent now
            target = published[85]
            learner.model = store.load_model("m", target)
            published.append(store.checkpoint(learner, reason="rollback").version)
    kept = set(store.versions("m"))
    assert len(published) == len(set(published)) + 1  # every version new but the rolled-back-to one
    # the newest 20 are all there
    assert published[-20:] == [v for v in published if v in kept][-20:]
    # kept for its rollback; its successor is gone
    assert target in kept and published[86] not in kept
    assert 20 <= len(kept) < 20 + PRUNE_EVERY
    assert learner.progress.version in kept
    assert store.restore(learner.spec).progress.version == learner.progress.version


def test_a_checkpoint_written_under_the_old_module_names_still_restores(tmp_path):
    """Checkpoints written before the layers installed as adaptloop.* name ``learners.online`` and
    the like."""
    import pickle

    from adaptloop.learners.store import Checkpoint, unpickle

    store = ModelStore(tmp_path)
    learner = OnlineLearner(LearnerSpec(name="m"))
    version = store.checkpoint(learner)
    path = tmp_path / "m" / "checkpoint.pkl"
    current = pickle.loads(path.read_bytes())
    old = (
        pickle.dumps(current, protocol=0)
        .replace(b"cadaptloop.learners.", b"clearners.")
        .replace(b"cadaptloop.schemas.", b"cschemas.")
    )
    assert b"clearners.online\n" in old and b"adaptloop.learners" not in old
    restored = unpickle(old)
    assert isinstance(restored, Checkpoint) and restored.version == version.version
    path.write_bytes(old)
    assert store.restore(learner.spec).progress.version == version.version
