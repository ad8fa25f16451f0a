"""Model files are signed by the worker and checked before anything unpickles them."""

from __future__ import annotations

import multiprocessing
import os
import pickle
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from adaptloop.learners.online import OnlineLearner
from adaptloop.learners.signing import PUBLIC_NAME, ModelKeys
from adaptloop.learners.spec import LearnerSpec
from adaptloop.learners.store import ModelStore
from adaptloop.schemas.errors import ConfigError, ModelRefused


class _Planted:
    """A pickle that runs code when loaded: it writes a file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _stores(tmp_path: Path) -> tuple[ModelStore, ModelStore]:
    keys, made = ModelKeys.for_worker(tmp_path / "keys")
    assert made and (tmp_path / "keys" / PUBLIC_NAME).exists()
    assert oct((tmp_path / "keys" / "model-signing.key").stat().st_mode & 0o777) == "0o600"
    worker = ModelStore(tmp_path / "models", keys)
    client = ModelStore(tmp_path / "models", ModelKeys.for_client(tmp_path / "keys" / PUBLIC_NAME))
    return worker, client


def _learned(worker: ModelStore) -> tuple[OnlineLearner, str]:
    spec = LearnerSpec(name="m", recipe="logistic", min_examples=1)
    learner = OnlineLearner(spec)
    version = worker.checkpoint(learner)
    return learner, version.version


def test_a_version_the_worker_stored_loads_and_a_changed_one_is_refused_without_running_it(
    tmp_path,
):
    worker, client = _stores(tmp_path)
    learner, version = _learned(worker)
    assert type(client.load_model("m", version)) is type(learner.model)

    path = tmp_path / "models" / "m" / "versions" / f"{version}.pkl"
    marker = tmp_path / "ran"
    planted = pickle.dumps(_Planted(marker))
    path.write_bytes(planted)
    # Its hash no longer matches its name: refused as corrupt before any signature is looked at.
    with pytest.raises(Exception, match="corrupt"):
        client.load_model("m", version)
    # Planted under its own hash (a name that matches its bytes), without the worker's signature:
    # refused.
    from adaptloop.learners.store import version_of

    planted_version = version_of(planted)
    (path.parent / f"{planted_version}.pkl").write_bytes(planted)
    with pytest.raises(ModelRefused, match="no signature"):
        client.load_model("m", planted_version)
    # With another version's signature beside it: refused too.
    (path.parent / f"{planted_version}.sig").write_bytes(
        (path.parent / f"{version}.sig").read_bytes()
    )
    with pytest.raises(ModelRefused, match="does not match"):
        client.load_model("m", planted_version)
    assert not marker.exists()  # never unpickled


def test_a_changed_checkpoint_is_refused_at_restore_and_at_the_spec_check(tmp_path):
    worker, _ = _stores(tmp_path)
    learner, _ = _learned(worker)
    restored = worker.restore(learner.spec)
    assert restored.progress.version == learner.progress.version

    path = tmp_path / "models" / "m" / "checkpoint.pkl"
    data = path.read_bytes()
    marker = tmp_path / "ran"
    forged = bytearray(data)
    forged[-10] ^= 1  # one bit of the pickle changed, the signature in front kept
    path.write_bytes(bytes(forged))
    with pytest.raises(ModelRefused, match="checkpoint of model 'm'"):
        worker.restore(learner.spec)
    path.write_bytes(pickle.dumps(_Planted(marker)))  # no signature at all
    with pytest.raises(ModelRefused, match="no signature"):
        worker.check(learner.spec)
    assert not marker.exists()


def test_a_store_from_before_signatures_is_adopted_only_when_asked_and_only_what_is_listed(
    tmp_path,
):
    unsigned = ModelStore(tmp_path / "models")
    learner, version = _learned(unsigned)
    worker, client = _stores(tmp_path)
    with pytest.raises(ModelRefused):
        client.load_model("m", version)
    listed = worker.unsigned()
    assert listed == [f"m/versions/{version}.pkl", "m/checkpoint.pkl"]
    worker.adopt(listed)
    assert worker.unsigned() == []
    client.load_model("m", version)
    assert worker.restore(learner.spec).progress.version == version


def test_after_a_key_rotation_what_either_key_signed_loads_and_a_worker_restores_the_old_checkpoint(
    tmp_path,
):
    ModelKeys.create(tmp_path / "old")
    ModelKeys.create(tmp_path / "new")
    old_pub, new_pub = tmp_path / "old" / PUBLIC_NAME, tmp_path / "new" / PUBLIC_NAME
    old = ModelStore(tmp_path / "models", ModelKeys.signing(tmp_path / "old" / "model-signing.key"))
    learner, before = _learned(old)
    only_new = ModelStore(tmp_path / "models", ModelKeys.for_client(new_pub))
    both = ModelStore(tmp_path / "models", ModelKeys.for_client([old_pub, new_pub]))
    both.load_model("m", before)
    with pytest.raises(ModelRefused, match="under any trusted key"):
        only_new.load_model("m", before)
    # The worker now signs with the new key and still trusts the old one: it restores the old
    # checkpoint.
    new = ModelStore(
        tmp_path / "models", ModelKeys.signing(tmp_path / "new" / "model-signing.key", [old_pub])
    )
    restored = new.restore(learner.spec)
    # its bytes stored again, signed anew
    assert new.checkpoint(restored, reason="rollback").version == before
    only_new.load_model("m", before)
    both.restore(learner.spec)
    with pytest.raises(ModelRefused, match="checkpoint of model 'm'"):
        ModelStore(tmp_path / "models", ModelKeys.for_client(old_pub)).restore(learner.spec)


def test_only_the_worker_signs_and_a_missing_public_key_says_where_to_put_it(tmp_path):
    _, client = _stores(tmp_path)
    with pytest.raises(ConfigError, match="only the worker signs"):
        client.keys.sign(b"x")  # type: ignore[union-attr]
    lost = ModelStore(tmp_path / "models", ModelKeys.for_client(tmp_path / "nowhere.pub"))
    worker, _ = _stores(tmp_path / "other")
    _, version = _learned(ModelStore(tmp_path / "models", worker.keys))
    with pytest.raises(ConfigError, match="ADAPTLOOP_MODEL_VERIFY_KEY"):
        lost.load_model("m", version)


def _worker_keys(directory: str, start: float) -> bytes:
    while time.time() < start:  # all processes make their keys at the same moment
        pass
    keys, _ = ModelKeys.for_worker(Path(directory))
    return keys.public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def test_worker_processes_starting_together_on_a_fresh_home_share_one_whole_key_pair(tmp_path):
    # Two learner processes on a fresh home once crashed here: one read the private key while the
    # other wrote it.
    context = multiprocessing.get_context("fork")
    for attempt in range(3):
        directory = tmp_path / f"keys{attempt}"
        with context.Pool(4) as pool:
            publics = pool.starmap(_worker_keys, [(str(directory), time.time() + 1.5)] * 4)
        assert len(set(publics)) == 1
        on_disk = ModelKeys.for_client(directory / "model-signing.pub").public
        assert (
            on_disk.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
            == publics[0]
        )
        assert sorted(path.name for path in directory.iterdir()) == [
            "model-signing.key",
            "model-signing.pub",
        ]
