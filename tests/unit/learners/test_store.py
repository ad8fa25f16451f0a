"""The model store keeps each model's newest versions, and never the current one's bytes away."""

from __future__ import annotations

from datetime import datetime, timezone

from river.datasets import synth

from learners.online import OnlineLearner
from learners.spec import LearnerSpec
from learners.store import PRUNE_EVERY, ModelStore
from schemas import TrainingExample

AT = datetime(2026, 1, 1, tzinfo=timezone.utc)


def test_the_store_keeps_the_newest_versions_and_the_one_used_again(tmp_path):
    store = ModelStore(tmp_path)
    learner = OnlineLearner(LearnerSpec(name="m", keep_versions=20))
    published = []
    rows = synth.Hyperplane(seed=1, n_features=3).take(3 * PRUNE_EVERY + 10)
    for i, (x, y) in enumerate(rows):
        learner.learn(TrainingExample(model="m", decision_id=str(i), model_version="v", features={f"x{k}": v for k, v in x.items()}, label=y,
                                      predicted_at=AT), ("t:0", i))
        published.append(store.checkpoint(learner).version)
        if len(published) == 140:  # a rollback stores an older version again: it is recent now
            target = published[85]
            learner.model = store.load_model("m", target)
            published.append(store.checkpoint(learner, reason="rollback").version)
    kept = set(store.versions("m"))
    assert len(published) == len(set(published)) + 1  # every version new but the rolled-back-to one
    assert published[-20:] == [v for v in published if v in kept][-20:]  # the newest 20 are all there
    assert target in kept and published[86] not in kept  # kept for its rollback; its successor is gone
    assert 20 <= len(kept) < 20 + PRUNE_EVERY
    assert learner.progress.version in kept
    assert store.restore(learner.spec).progress.version == learner.progress.version
