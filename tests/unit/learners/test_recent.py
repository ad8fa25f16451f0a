from __future__ import annotations

import pickle
import random
from collections import OrderedDict

from adaptloop.learners.online import LearnerProgress, OnlineLearner
from adaptloop.learners.recent import RecentIds
from adaptloop.learners.spec import LearnerSpec


def _reference_add(reference: OrderedDict[str, None], decision_id: str, limit: int) -> None:
    """What the learner did before: an OrderedDict window (the same code it replaced)."""
    reference[decision_id] = None
    if len(reference) > limit:
        reference.popitem(last=False)


def test_the_window_is_that_of_an_ordered_dict_across_pickles():
    rng = random.Random(5)
    limit = 500
    recent, reference = RecentIds(limit=limit), OrderedDict()
    for i in range(20_000):
        # Mostly new ids; some recent ones again (no change), some long forgotten ones again.
        decision_id = f"d{i}" if rng.random() < 0.9 else f"d{rng.randrange(max(1, i))}"
        recent.add(decision_id)
        _reference_add(reference, decision_id, limit)
        if rng.random() < 0.01:  # a checkpoint, then a restart from it
            recent = pickle.loads(pickle.dumps(recent))
        if i % 97 == 0:
            assert list(recent) == list(reference)
    assert list(recent) == list(reference)
    probes = [f"d{rng.randrange(20_000)}" for _ in range(2_000)]
    assert [p in recent for p in probes] == [p in reference for p in probes]


def test_a_pickle_keeps_only_chunks_that_still_hold_ids_of_the_window():
    recent = RecentIds(limit=1_000)
    for checkpoint in range(100):
        for i in range(100):
            recent.add(f"c{checkpoint}-{i}")
        state = recent.__getstate__()
    # The window is 10 chunks of 100 ids: older chunks were dropped, nothing of the window was.
    assert len(state["chunks"]) == 10
    assert list(pickle.loads(pickle.dumps(recent))) == [
        f"c{c}-{i}" for c in range(90, 100) for i in range(100)
    ]


def test_a_checkpoint_that_kept_the_ids_in_an_ordered_dict_still_restores():
    old = LearnerProgress()
    old.recent_ids = OrderedDict.fromkeys(["a", "b"])  # type: ignore[assignment]
    learner = OnlineLearner(LearnerSpec(name="m"), progress=pickle.loads(pickle.dumps(old)))
    assert isinstance(learner.progress.recent_ids, RecentIds)
    assert list(learner.progress.recent_ids) == ["a", "b"] and learner.already_learned("a", None)
