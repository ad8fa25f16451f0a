"""A model's health counts decisions learned per example with a counter's increment: what it reports
is what observing each ending one by one reports."""

from __future__ import annotations

import random

from adaptloop.learners.health import HealthWatch


def _report(watch: HealthWatch) -> dict[str, object]:
    return watch.report().model_dump(exclude={"timestamp"})


def test_runs_of_learned_decisions_count_as_each_one_observed():
    for seed in range(300):
        rng = random.Random(seed)
        window = rng.choice([1, 3, 10, 50])
        each, runs = HealthWatch("m", window, 0.2), HealthWatch("m", window, 0.2)
        learned_weight = rng.choice([1, 6, 60])
        for _ in range(rng.randrange(0, 400)):
            ending = rng.choice(["learned"] * learned_weight + ["rejected", "error", "unlearned"])
            reason = f"reason {rng.random()}" if ending in ("rejected", "error") else None
            each.observe(ending, reason)
            if ending == "learned":
                runs.learned()
            else:
                runs.observe(ending, reason)
            if rng.random() < 0.05:  # read in the middle of a run
                assert runs.seen() == bool(each.endings)
                assert _report(runs) == _report(each)
                assert [runs.describe(r) for r in runs.reasons()] == [
                    each.describe(r) for r in each.reasons()
                ]
        assert _report(runs) == _report(each), seed
        assert list(runs.endings) == list(each.endings)
        assert +runs.counts == +each.counts
