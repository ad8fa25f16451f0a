"""Model bytes that load into fast objects: instances rebuilt attribute by attribute, not through
``__dict__``.

CPython (3.11 on) keeps a plain instance's attributes in an inline array and reads them with
specialised, quick lookups, until something asks for the instance's ``__dict__``: then they move
into a dict for good, and every attribute read after is slower. Pickle asks for it twice. Writing an
object reads its ``__dict__``; reading one back fills the new object's ``__dict__``. So a River
model that was checkpointed, or restored from a file, learned a Hoeffding tree 25-35% slower than
one never pickled (measured: 60,000 examples in 5.4-6.1 s instead of 4.1-4.4; the Quix Streams
learner app, which never pickles, was faster).

:class:`FastLoadPickler` writes each such instance with a ``state_setter`` (:func:`set_attributes`)
that rebuilds it with ``setattr``, which keeps the inline array: a model loaded from these bytes is
as fast as one never pickled. The learner checkpoints with it and goes on learning with the model
loaded back (:meth:`~adaptloop.learners.store.ModelStore.checkpoint`). The state written is the same
as plain pickle's; bytes written without a setter (older files) load as before.
"""

from __future__ import annotations

import copyreg
import pickle
from collections.abc import Callable, Mapping
from typing import Any

_MANAGED_DICT = 1 << 4  # Py_TPFLAGS_MANAGED_DICT: the instances' attributes can live inline


def set_attributes(instance: object, state: dict[str, Any]) -> None:
    """Give a freshly made ``instance`` its attributes, as pickle's default would, through
    ``setattr``.

    A name the class also has as a data descriptor (a property, a slot) goes into ``__dict__``
    directly, as pickle's default puts it there, bypassing the descriptor.
    """
    descriptors = _data_descriptors(type(instance))
    for name, value in state.items():
        if name in descriptors:
            instance.__dict__[name] = value
        else:
            setattr(instance, name, value)


_descriptors: dict[type, frozenset[str]] = {}


def _data_descriptors(cls: type) -> frozenset[str]:
    names = _descriptors.get(cls)
    if names is None:
        names = _descriptors[cls] = frozenset(
            name
            for klass in cls.__mro__
            for name, value in vars(klass).items()
            if hasattr(type(value), "__set__")
        )
    return names


_plain: dict[type, bool] = {}
# object's own, for a plain class
_DEFAULTS = ("__reduce_ex__", "__reduce__", "__getstate__", "__setattr__")
_OVERRIDES = ("__setstate__", "__getnewargs__", "__getnewargs_ex__")  # object has none of them
_NEWOBJ = copyreg.__newobj__  # type: ignore[attr-defined]  # (not in typeshed's copyreg)


def _is_plain(cls: type) -> bool:
    """Whether pickle writes ``cls``'s instances with the default protocol (``__newobj__`` and their
    ``__dict__``) and ``setattr`` sets attributes as that protocol's reader would."""
    plain = _plain.get(cls)
    if plain is None:
        plain = _plain[cls] = (
            bool(cls.__flags__ & _MANAGED_DICT)
            and all(getattr(cls, name) is getattr(object, name) for name in _DEFAULTS)
            and not any(hasattr(cls, name) for name in _OVERRIDES)
            and not any(_slots(klass) for klass in cls.__mro__)  # slots go in a state of their own
            and not issubclass(cls, (dict, list))  # their items go after the state
            and copyreg.dispatch_table.get(cls) is None
        )
    return plain


def _slots(cls: type) -> set[str]:
    """The slots ``cls`` declares for values (``abc.ABC`` and ``typing.Generic`` declare none)."""
    declared = vars(cls).get("__slots__", ())
    return {declared} if isinstance(declared, str) else set(declared) - {"__dict__", "__weakref__"}


class FastLoadPickler(pickle.Pickler):
    """A pickler that writes plain instances to load with :func:`set_attributes`; ``reducers``: per
    class, a reducer to use instead of the default (its result gets the setter too)."""

    def __init__(
        self, file: Any, protocol: int, reducers: Mapping[type, Callable[[Any], Any]]
    ) -> None:
        super().__init__(file, protocol=protocol)
        self.reducers = reducers

    def reducer_override(self, obj: Any) -> Any:
        cls = type(obj)
        reducer = self.reducers.get(cls)
        if reducer is None and not _is_plain(cls):
            return NotImplemented
        # The class's reducer, or what object.__reduce_ex__ gives a plain instance (built here: a
        # third quicker).
        reduced = (
            reducer(obj) if reducer is not None else (_NEWOBJ, (cls,), obj.__dict__, None, None)
        )
        if (
            _is_plain(cls)
            and reduced[0] is _NEWOBJ
            and reduced[3:] == (None, None)
            and _settable(reduced[2])
        ):
            return (*reduced, set_attributes)
        return reduced if reducer is not None else NotImplemented


def _settable(state: object) -> bool:
    return type(state) is dict and bool(state) and all(type(name) is str for name in state)
