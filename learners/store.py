"""The model store: content-addressed model bytes and each learner's checkpoint, on a filesystem.

Model bytes live at ``<root>/<model>/versions/<version>.pkl`` where ``version`` is
the first 16 hex digits of their SHA-256; the serving side reads them from there.
A learner's checkpoint (which version, what offsets, its metrics) is one file
replaced atomically, so model and offsets can never disagree after a crash.

With :class:`~adaptloop.learners.signing.ModelKeys`, each file has its signature beside it
(``.sig``): the worker's store signs what it writes, and every store checks a signature before it
unpickles the bytes.
"""

from __future__ import annotations

import hashlib
import io
import pickle
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from river.proba.base import Distribution

from adaptloop.learners.catalog import MODEL_FIELDS
from adaptloop.learners.online import LearnerProgress, OnlineLearner
from adaptloop.learners.online import probe as probe_model
from adaptloop.learners.pickling import FastLoadPickler
from adaptloop.learners.recipes import Metric, Model
from adaptloop.learners.signing import ModelKeys
from adaptloop.learners.spec import LearnerSpec
from adaptloop.learners.storage import Storage
from adaptloop.learners.watch import ModelWatch
from adaptloop.learners.write_behind import WriteBehind
from adaptloop.schemas.errors import SpecChanged, UnknownModel
from adaptloop.schemas.system import ModelVersion, VersionReason

PICKLE_PROTOCOL = 5

SEALED, SIGNATURE_BYTES = b"adaptloop signed checkpoint 1\n", 64
"""A signed checkpoint file: this line, the 64-byte ed25519 signature, then the pickle."""


def _distribution_classes() -> list[type]:
    found: list[type] = []
    todo: list[type] = [Distribution]
    while todo:
        subclass: type
        for subclass in todo.pop().__subclasses__():
            found.append(subclass)
            todo.append(subclass)
    return found


_UNSEEDED_RNG = random.Random(0)


def _reduce_distribution(distribution: Any) -> Any:
    """Pickle a River distribution with its unseeded random generator as one fixed generator.

    River's distributions (the Gaussian estimators inside a Hoeffding tree's leaves, for one) hold a
    ``random.Random`` seeded from the OS when they are made without a seed, and use it only to
    ``sample()``, which learning and predicting never call: the generator's state says nothing about
    the model, but it would make every version's bytes, and so its id, depend on OS entropy.
    """
    reduced = distribution.__reduce_ex__(PICKLE_PROTOCOL)
    state = reduced[2]
    if getattr(distribution, "seed", 0) is None and isinstance(state, dict) and "_rng" in state:
        reduced = (reduced[0], reduced[1], {**state, "_rng": _UNSEEDED_RNG}, *reduced[3:])
    return reduced


_CANONICAL_REDUCERS = dict.fromkeys(_distribution_classes(), _reduce_distribution)


def _canonical_dumps(model: Model) -> bytes:
    buffer = io.BytesIO()
    FastLoadPickler(buffer, PICKLE_PROTOCOL, _CANONICAL_REDUCERS).dump(model)
    return buffer.getvalue()


def canonical(model: Model) -> tuple[bytes, Model]:
    """:func:`model_bytes`, and the copy of the model they were written from (to probe without
    touching ``model``)."""
    copied = pickle.loads(_canonical_dumps(model))
    return _canonical_dumps(copied), copied


def model_bytes(model: Model) -> bytes:
    """The canonical bytes of a model: equal state gives equal bytes, in any process.

    Pickle's output depends on object identity (a string shared by two fields is written once),
    which differs between a freshly built model and a restored one; one load/dump round trip reaches
    a fixed point, so versions hash alike. Random generators that do not take part in learning are
    written as one fixed generator (see :func:`_reduce_distribution`). (Models whose dict order
    depends on str hashing also need PYTHONHASHSEED fixed: the worker sets it.)
    """
    return canonical(model)[0]


def learn_on_from(data: bytes) -> Model:
    """The model a learner goes on learning with once it wrote a version's bytes ``data``: loaded
    from them.

    Writing them moved the model's attributes into dicts, where River reads them slower; loaded from
    the bytes, they are inline again (:mod:`adaptloop.learners.pickling`). And a learner that goes
    on from its last version's bytes is the learner a restart makes, whose objects (a tree's shared
    strings, say) are the ones loading makes: with or without a restart, and in a replay, each
    version's bytes are the same.
    """
    return pickle.loads(data)


_RENAMED_PACKAGES = ("schemas", "learners", "snapshots", "streams")


class _Unpickler(pickle.Unpickler):
    """Reads pickles written before the layers installed as ``adaptloop.*`` (``learners.online`` is
    now ``adaptloop.learners.online``), so old checkpoints still restore."""

    def find_class(self, module: str, name: str) -> object:
        if module.partition(".")[0] in _RENAMED_PACKAGES:
            module = f"adaptloop.{module}"
        return super().find_class(module, name)


def unpickle(data: bytes) -> object:
    """``pickle.loads`` that also reads checkpoints written under the layers' old module names.

    >>> unpickle(pickle.dumps({"a": 1}))
    {'a': 1}
    """
    return _Unpickler(io.BytesIO(data)).load()


def version_of(data: bytes) -> str:
    """A version id: the first 16 hex digits of the SHA-256 of the model bytes."""
    return hashlib.sha256(data).hexdigest()[:16]


def _signature_key(key: str) -> str:
    return key.removesuffix(".pkl") + ".sig"


@dataclass
class Checkpoint:
    version: str
    progress: LearnerProgress
    shadow: dict[str, Metric]
    production: dict[str, Metric]
    watch: ModelWatch | None = None
    # what the model was learned as (older checkpoints: the watch's)
    spec: LearnerSpec | None = None

    def learned_as(self) -> LearnerSpec | None:
        return (
            self.spec
            if self.spec is not None
            else (self.watch.spec if self.watch is not None else None)
        )


# checkpoints between two prunings: a store holds at most keep_versions + 49 versions
PRUNE_EVERY = 50


def check_same_model(spec: LearnerSpec, learned_as: LearnerSpec | None, where: Path | str) -> None:
    """Raise :class:`SpecChanged` if ``spec`` asks for another model than the one learned so far.

    >>> old = LearnerSpec(name="churn", recipe="logistic")
    >>> check_same_model(old.model_copy(update={"checkpoint_every": 10}), old, Path("models/churn"))
    >>> check_same_model(old.model_copy(update={"recipe": "hoeffding"}), old, Path("models/churn"))
    ... # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    adaptloop.schemas.errors.SpecChanged: model 'churn' was learned with recipe='logistic'; its spec now says \
recipe='hoeffding'. A model cannot change what it is: ... or remove models/churn to start 'churn' over
    """
    if learned_as is None:
        return
    before = {name: getattr(learned_as, name) for name in MODEL_FIELDS}
    after = {name: getattr(spec, name) for name in MODEL_FIELDS}
    if before != after:
        was = ", ".join(
            f"{name}={before[name]!r}" for name in MODEL_FIELDS if before[name] != after[name]
        )
        now = ", ".join(
            f"{name}={after[name]!r}" for name in MODEL_FIELDS if before[name] != after[name]
        )
        raise SpecChanged(
            f"model {spec.name!r} was learned with {was}; its spec now says {now}. A model "
            "cannot change what it "
            "is: give the new one a new name (its versions and lineage start afresh beside "
            "the old ones), or "
            f"remove {where} to start {spec.name!r} over"
        )


class ModelStore:
    """Model versions and learner checkpoints under ``root``: a directory, or an object store shared
    by workers and services on other hosts (``s3://bucket/prefix``, see
    :mod:`adaptloop.learners.storage`).

    >>> import tempfile
    >>> store = ModelStore(Path(tempfile.mkdtemp()))
    >>> learner = OnlineLearner(LearnerSpec(name="churn"))
    >>> v = store.checkpoint(learner)
    >>> v.version == v.sha256[:16], v.reason, v.parent
    (True, 'initial', None)
    >>> store.restore(learner.spec).progress.version == v.version
    True
    """

    def __init__(self, root: Path | str, keys: ModelKeys | None = None) -> None:
        self._storage = Storage(root)
        self.root = self._storage.root  # for messages: where the store is
        # checkpoints' files being written behind the learner (see :meth:`writing_behind`)
        self._behind: WriteBehind | None = None
        # None: files are neither signed nor checked (a store that only this process writes)
        self.keys = keys
        self._stored_since_pruning: dict[str, int] = {}
        # model -> its last checkpoint's bytes, to undo a failure
        self.last_checkpoint: dict[str, bytes] = {}
        self._last_stamp = 0

    @property
    def storage(self) -> Storage:
        """Where the files are; once the checkpoints written behind are on it (any use of the store
        but the writer's own sees every file it was asked to write)."""
        behind = self._behind
        if behind is not None and behind.pending and not behind.on_writer_thread():
            behind.wait()
        return self._storage

    @contextmanager
    def writing_behind(self) -> Iterator[None]:
        """Within it, :meth:`checkpoint` returns once the checkpoint's bytes are made, and a writer
        thread writes them (in order) while the caller goes on; on the way out (and at any other
        use of the store) every file is written, or the first write's error raised.

        The bytes are made first, so a checkpoint holds exactly the state and offsets of its
        example; the caller publishes its versions after the block, once their files exist.
        """
        behind = self._behind = WriteBehind()
        try:
            yield
        finally:
            self._behind = None
            try:
                behind.wait()
            finally:
                behind.close()

    def _write(self, write: Callable[[], None]) -> None:
        """Run ``write`` now, or behind the caller (:meth:`writing_behind`)."""
        if self._behind is not None:
            self._behind.submit(write)
        else:
            write()

    @staticmethod
    def _version_key(model: str, version: str) -> str:
        return f"{model}/versions/{version}.pkl"

    @staticmethod
    def _checkpoint_key(model: str) -> str:
        return f"{model}/checkpoint.pkl"

    def put_model(self, model: str, data: bytes) -> tuple[str, str, str]:
        """Store model bytes (idempotent); return (version, sha256, key)."""
        sha, version, key = self._model_key(model, data)
        self._store_model(key, data)
        return version, sha, key

    def _model_key(self, model: str, data: bytes) -> tuple[str, str, str]:
        """(sha256, version, key) of model bytes."""
        version = version_of(data)
        return hashlib.sha256(data).hexdigest(), version, self._version_key(model, version)

    def _store_model(self, key: str, data: bytes) -> None:
        stored = self.storage.exists(key)
        if not stored:
            self.storage.write(key, data)
        self._sign(key, data)
        # Stored now, or again (a rollback, nothing new learned): recent for pruning. Set
        # explicitly, strictly increasing: the kernel's own timestamps tick in milliseconds.
        stamp = self._last_stamp = max(time.time_ns(), self._last_stamp + 1)
        if stored or not self.storage.remote:
            self.storage.touch(key, data, stamp)

    def prune(
        self, model: str, keep: int, current: str | None = None, stable: str | None = None
    ) -> list[str]:
        """Remove all but the ``keep`` most recently stored (or stored again) versions of ``model``,
        never ``current`` nor a running canary's ``stable`` version (serving loads it); return the
        versions removed.

        >>> import tempfile
        >>> store = ModelStore(Path(tempfile.mkdtemp()))
        >>> stored = [store.put_model("m", bytes([i]))[0] for i in range(5)]
        >>> _ = store.put_model("m", bytes([0]))  # the first one, used again
        >>> removed = store.prune("m", keep=2, current=stored[2])
        >>> sorted(store.versions("m")) == sorted([stored[0], stored[4], stored[2]]), len(removed)
        (True, 2)
        """
        files = self.storage.files(f"{model}/versions", ".pkl")
        if len(files) <= keep:
            return []
        by_use = sorted(files, key=lambda item: (item[1], item[0]), reverse=True)
        removed = []
        for key, _ in by_use[keep:]:
            version = key.rsplit("/", 1)[1].removesuffix(".pkl")
            if version not in (current, stable):
                self.storage.delete(key)
                self.storage.delete(_signature_key(key))
                removed.append(version)
        return removed

    def _sign(self, key: str, data: bytes) -> None:
        if self.keys is not None and self.keys.private is not None:
            self.storage.write(_signature_key(key), self.keys.sign(data))

    def _checked(self, key: str, data: bytes, what: str) -> bytes:
        """``data`` read from ``key``, once its signature is checked (if this store checks them)."""
        if self.keys is not None:
            try:
                signature: bytes | None = self.storage.read(_signature_key(key))
            except FileNotFoundError:
                signature = None
            self.keys.verify(data, signature, what)
        return data

    def _sealed(self, checkpoint: bytes) -> bytes:
        """A checkpoint as its file holds it: with its signature in front when this store signs (one
        file, replaced atomically: a crash never leaves a checkpoint with another's signature)."""
        if self.keys is None or self.keys.private is None:
            return checkpoint
        return SEALED + self.keys.sign(checkpoint) + checkpoint

    def _checkpoint_bytes(self, model: str) -> bytes | None:
        """The model's checkpoint, its signature checked (if this store checks them); None if it has
        none."""
        key = self._checkpoint_key(model)
        try:
            data = self.storage.read(key)
        except FileNotFoundError:
            return None
        signature = None
        if data.startswith(SEALED):
            start = len(SEALED) + SIGNATURE_BYTES
            signature, data = data[len(SEALED) : start], data[start:]
        if self.keys is not None:
            self.keys.verify(
                data, signature, f"the checkpoint of model {model!r} ({self.storage.uri(key)})"
            )
        return data

    def unsigned(self) -> list[str]:
        """The keys of the store's model files that carry no signature (a store from before
        signatures)."""
        found = []
        for model in self.storage.directories():
            for key, _ in self.storage.files(f"{model}/versions", ".pkl"):
                if not self.storage.exists(_signature_key(key)):
                    found.append(key)
            checkpoint = self._checkpoint_key(model)
            if self.storage.exists(checkpoint) and not self.storage.read(checkpoint).startswith(
                SEALED
            ):
                found.append(checkpoint)
        return found

    def adopt(self, keys: list[str]) -> None:
        """Sign the files ``keys`` (from :meth:`unsigned`) as this store's own: only for a store
        from before signatures whose files an operator vouches for (``adaptloop keys adopt-store``),
        never by itself."""
        for key in keys:
            data = self.storage.read(key)
            if key.endswith("/checkpoint.pkl"):
                if not data.startswith(SEALED):
                    self.storage.write(key, self._sealed(data))
            else:
                self._sign(key, data)

    def holds_models(self) -> bool:
        """Whether any model has a version or a checkpoint here (a store already in use)."""
        return any(
            self.storage.exists(self._checkpoint_key(model))
            or self.storage.files(f"{model}/versions", ".pkl")
            for model in self.storage.directories()
        )

    def load_bytes(self, model: str, version: str) -> bytes:
        key = self._version_key(model, version)
        try:
            data = self.storage.read(key)
        except FileNotFoundError:
            raise UnknownModel(
                f"no version {version!r} of model {model!r} in {self.root} (the store keeps "
                "each model's newest "
                f"keep_versions; `adaptloop replay {model} --until {version}` rebuilds an "
                "older one from the "
                f"archive and stores it again)"
            ) from None
        if hashlib.sha256(data).hexdigest()[:16] != version:
            raise UnknownModel(
                f"{self.storage.uri(key)} is corrupt: its hash does not match version {version}"
            )
        return self._checked(
            key, data, f"version {version} of model {model!r} ({self.storage.uri(key)})"
        )

    def load_model(self, model: str, version: str) -> Model:
        return unpickle(self.load_bytes(model, version))

    def versions(self, model: str) -> list[str]:
        return sorted(
            key.rsplit("/", 1)[1].removesuffix(".pkl")
            for key, _ in self.storage.files(f"{model}/versions", ".pkl")
        )

    def checkpoint(
        self,
        learner: OnlineLearner,
        *,
        reason: VersionReason = "checkpoint",
        actor: str | None = None,
        note: str | None = None,
        probe: dict[str, Any] | None = None,
        principal: str | None = None,
    ) -> ModelVersion:
        """Save the learner's model and progress together; return the version to publish.

        ``reason`` says why the version exists (``rollback`` or ``promotion`` name an ``actor``, and
        the ``principal`` their command was sent as). With ``probe`` (features, say the last
        example's), the model must predict them first, on a copy: one that cannot raises
        :class:`ModelFailure` and nothing is saved.
        """
        name = learner.spec.name
        data, copied = canonical(learner.model)
        if probe is not None:
            probe_model(copied, learner.spec, probe)
        sha, version, key = self._model_key(name, data)
        self._write(lambda: self._store_model(key, data))
        learner.model = learn_on_from(data)
        progress = learner.progress
        if (
            progress.record is not None
            and progress.record.version == version
            and reason == "checkpoint"
        ):
            record = progress.record  # nothing new was learned: the same version, the same record
        else:
            # One more than the record it replaces, which the checkpoint holds: across restarts and
            # hand-overs the numbers only grow, and a rollback's record is newer than the one it
            # undoes.
            previous = progress.record.sequence if progress.record is not None else None
            servable = progress.examples_seen >= learner.spec.min_examples
            gate = learner.watch.canary
            record = ModelVersion(
                model=name,
                sequence=(previous or 0) + 1,
                version=version,
                parent=progress.version,
                reason="initial" if progress.version is None and reason == "checkpoint" else reason,
                examples_seen=progress.examples_seen,
                offsets=dict(progress.offsets),
                metrics=learner.metric_values(),
                sha256=sha,
                uri=self._storage.uri(key),
                size_bytes=len(data),
                dataset_hash=progress.dataset_hash,
                actor=actor,
                principal=principal,
                note=note,
                servable=servable,
                contract=learner.contract,
                canary=gate.publish(version, servable) if gate is not None else None,
            )
        progress.version, progress.record, progress.learned_since_version = version, record, 0
        progress.published.add(version)
        checkpoint = Checkpoint(
            version, progress, learner.shadow, learner.production, learner.watch, learner.spec
        )
        saved = pickle.dumps(checkpoint, protocol=PICKLE_PROTOCOL)
        sealed = self._sealed(saved)
        self._write(lambda: self.storage.write(self._checkpoint_key(name), sealed))
        self.last_checkpoint[name] = saved
        # Pruned every PRUNE_EVERY versions stored: listing the directory at each one would cost
        # more.
        stored = self._stored_since_pruning[name] = self._stored_since_pruning.get(name, 0) + 1
        if stored >= PRUNE_EVERY:
            self._stored_since_pruning[name] = 0
            gate = learner.watch.canary
            keep, stable = learner.spec.keep_versions, gate.stable if gate else None
            self._write(lambda: self._prune_quietly(name, keep, version, stable))
        return record

    def _prune_quietly(self, model: str, keep: int, current: str, stable: str | None) -> None:
        self.prune(model, keep, current=current, stable=stable)

    def check(self, spec: LearnerSpec) -> None:
        """Raise :class:`SpecChanged` if ``spec`` asks for another model than its checkpoint holds
        (before a worker starts, so it fails with the reason instead of restarting its learner)."""
        data = self._checkpoint_bytes(spec.name)
        if data is not None:
            check_same_model(spec, unpickle(data).learned_as(), self.storage.uri(spec.name))  # type: ignore[attr-defined]

    def learned_spec(self, model: str) -> LearnerSpec | None:
        """The spec ``model``'s checkpoint was learned under (None: no checkpoint, or one from
        before specs)."""
        data = self._checkpoint_bytes(model)
        return None if data is None else unpickle(data).learned_as()  # type: ignore[attr-defined]

    def restore(self, spec: LearnerSpec) -> OnlineLearner:
        """The learner as of its last checkpoint, or a fresh one if it has none.

        It goes on under ``spec``: new metrics, cadence and drift settings take effect; a changed
        task, recipe or params raise :class:`SpecChanged`.
        """
        data = self._checkpoint_bytes(spec.name)
        if data is None:
            self.last_checkpoint.pop(spec.name, None)
            return OnlineLearner(spec)
        self.last_checkpoint[spec.name] = data
        return self.learner_from(data, spec)

    def learner_from(self, checkpoint_bytes: bytes | None, spec: LearnerSpec) -> OnlineLearner:
        """The learner a checkpoint holds (None: a fresh one), going on under ``spec``."""
        if checkpoint_bytes is None:
            return OnlineLearner(spec)
        checkpoint = unpickle(checkpoint_bytes)
        assert isinstance(checkpoint, Checkpoint)
        check_same_model(spec, checkpoint.learned_as(), self.storage.uri(spec.name))
        model = self.load_model(spec.name, checkpoint.version)
        return OnlineLearner(
            spec,
            model,
            shadow=checkpoint.shadow,
            production=checkpoint.production,
            progress=checkpoint.progress,
            watch=checkpoint.watch,
        )
