"""Model bytes that load into fast objects: the same state as pickle's, attributes kept inline."""

from __future__ import annotations

import gc
import io
import pickle
from typing import Any

import pytest
from river import datasets, linear_model, preprocessing, stats, tree

from adaptloop.learners.pickling import FastLoadPickler
from adaptloop.learners.store import model_bytes, unpickle


class Leaf:
    def __init__(self, value: int) -> None:
        self.value = value
        self.label = f"leaf {value}"


class Branch:
    def __init__(self, left: Leaf, right: Leaf) -> None:
        self.left, self.right, self.depth = left, right, 1


class Guarded:
    """An attribute behind a property whose setter refuses: pickle's default writes ``__dict__``
    directly."""

    def __init__(self) -> None:
        self.__dict__["size"] = 3
        self.other = "x"

    @property
    def size(self) -> int:
        return int(self.__dict__["size"])

    @size.setter
    def size(self, value: int) -> None:
        raise AttributeError("read only")


class OwnState:
    def __init__(self) -> None:
        self.items = [1, 2]

    def __getstate__(self) -> dict[str, Any]:
        return {"items": self.items, "restored": False}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, restored=True)


class Tally(dict[str, int]):
    """A dict subclass with attributes of its own: its items go with pickle's default, not the
    setter."""

    def __init__(self) -> None:
        super().__init__(a=2, b=1)
        self.note = "n"


class Slotted:
    """Slots and a dict: pickle writes both, the slots in a state of their own."""

    __slots__ = ("__dict__", "kept")

    def __init__(self) -> None:
        self.kept, self.extra = 1, 2


def fast_round_trip(value: object) -> Any:
    buffer = io.BytesIO()
    FastLoadPickler(buffer, 5, {}).dump(value)
    return pickle.loads(buffer.getvalue())


def has_dict(instance: object) -> bool:
    """Whether the instance's attributes moved into a dict (its referents are the dict, not the
    values)."""
    return any(type(referent) is dict for referent in gc.get_referents(instance))


def test_instances_load_with_their_attributes_inline() -> None:
    loaded = fast_round_trip(Branch(Leaf(1), Leaf(2)))
    assert (loaded.left.value, loaded.right.label, loaded.depth) == (1, "leaf 2", 1)
    assert not any(has_dict(instance) for instance in (loaded, loaded.left, loaded.right))
    plain = pickle.loads(pickle.dumps(Branch(Leaf(1), Leaf(2))))  # what the setter avoids
    assert all(has_dict(instance) for instance in (plain, plain.left, plain.right))


def test_the_state_is_what_pickle_writes() -> None:
    guarded = fast_round_trip(Guarded())
    assert (guarded.size, guarded.other) == (3, "x")
    own = fast_round_trip(OwnState())
    assert (own.items, own.restored) == ([1, 2], True)
    tally = fast_round_trip(Tally())
    assert (dict(tally), tally.note) == ({"a": 2, "b": 1}, "n")
    slotted = fast_round_trip(Slotted())
    assert (slotted.kept, slotted.extra) == (1, 2)
    shared = Leaf(5)
    both = fast_round_trip([shared, shared])
    assert both[0] is both[1]  # one object, as written


@pytest.mark.parametrize(
    "make",
    [
        lambda: preprocessing.StandardScaler() | linear_model.LogisticRegression(),
        lambda: tree.HoeffdingTreeClassifier(grace_period=50),
    ],
    ids=["logistic", "hoeffding"],
)
def test_a_model_learns_on_alike_after_loading_its_bytes(make: Any) -> None:
    stream = list(datasets.Phishing())
    straight, resumed = make(), make()
    for x, y in stream[:600]:
        straight.learn_one(x, y)
        resumed.learn_one(x, y)
    resumed = pickle.loads(model_bytes(resumed))
    for x, y in stream[600:]:
        assert resumed.predict_proba_one(x) == straight.predict_proba_one(x)
        straight.learn_one(x, y)
        resumed.learn_one(x, y)
    assert pickle.loads(model_bytes(resumed)).predict_proba_one(
        stream[0][0]
    ) == straight.predict_proba_one(stream[0][0])


def test_a_tree_loads_with_its_statistics_inline() -> None:
    """The statistics in a Hoeffding tree's leaves, read at every example, keep their attributes
    inline."""
    model = tree.HoeffdingTreeClassifier(grace_period=50)
    for x, y in list(datasets.Phishing())[:400]:
        model.learn_one(x, y)

    def statistics(root: object) -> list[stats.Mean]:
        seen, todo, found = set(), [root], []
        while todo:
            item = todo.pop()
            if id(item) not in seen and not isinstance(item, type):
                seen.add(id(item))
                found += [item] if type(item) is stats.Mean else []
                todo.extend(gc.get_referents(item))
        return found

    fast, plain = (
        statistics(pickle.loads(model_bytes(model))),
        statistics(pickle.loads(pickle.dumps(model))),
    )
    assert fast and len(fast) == len(plain)
    assert not any(has_dict(mean) for mean in fast) and all(has_dict(mean) for mean in plain)


def test_bytes_written_by_plain_pickle_still_load() -> None:
    model = preprocessing.StandardScaler() | linear_model.LogisticRegression()
    for x, y in list(datasets.Phishing())[:100]:
        model.learn_one(x, y)
    loaded = unpickle(pickle.dumps(model))
    assert model_bytes(loaded) == model_bytes(model)
