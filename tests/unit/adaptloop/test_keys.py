"""The deployment's signing key: made once by `adaptloop keys create`, never by a worker for a store
in use."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from typer.testing import CliRunner

from adaptloop.cli import app
from adaptloop.cli.common import REFUSED_STATUS
from adaptloop.learners.online import OnlineLearner
from adaptloop.learners.signing import ModelKeys
from adaptloop.learners.spec import LearnerSpec
from adaptloop.learners.store import ModelStore
from adaptloop.schemas.errors import ConfigError, ModelRefused
from adaptloop.settings import Settings


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)  # no adaptloop.toml of the repo's
    for name in ("STORE", "MODEL_SIGNING_KEY", "MODEL_VERIFY_KEY"):
        monkeypatch.delenv(f"ADAPTLOOP_{name}", raising=False)
    monkeypatch.setenv("ADAPTLOOP_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def test_keys_create_writes_a_secret_private_key_and_a_public_key_once(home):
    made = CliRunner().invoke(app, ["keys", "create"])
    assert made.exit_code == 0, made.output
    private, public = home / "keys" / "model-signing.key", home / "keys" / "model-signing.pub"
    assert oct(private.stat().st_mode & 0o777) == "0o600"
    assert f"ADAPTLOOP_MODEL_SIGNING_KEY={private}" in made.output
    assert f"ADAPTLOOP_MODEL_VERIFY_KEY={public}" in made.output
    key = private.read_bytes()
    again = CliRunner().invoke(app, ["keys", "create"])
    # made once: never replaced here
    assert again.exit_code == REFUSED_STATUS and "exists" in again.output
    assert private.read_bytes() == key
    elsewhere = CliRunner().invoke(
        app, ["keys", "create", "--private", str(home / "rotated" / "next.key")]
    )
    assert elsewhere.exit_code == 0, elsewhere.output
    assert (home / "rotated" / "next.pub").exists() and (
        home / "rotated" / "next.key"
    ).read_bytes() != key


def _store_in_use(path: Path) -> tuple[ModelStore, str]:
    """A store whose model the first worker (its own key, elsewhere) has signed."""
    store = ModelStore(path, ModelKeys.create(path.parent / "first-worker-keys"))
    return store, store.checkpoint(OnlineLearner(LearnerSpec(name="m"))).version


def test_a_worker_without_the_key_refuses_a_store_in_use_and_makes_and_signs_nothing(
    home, tmp_path, monkeypatch
):
    _, version = _store_in_use(tmp_path / "shared")
    monkeypatch.setenv("ADAPTLOOP_STORE", str(tmp_path / "shared"))
    planted = tmp_path / "shared" / "m" / "versions" / "0123456789abcdef.pkl"
    planted.write_bytes(b"planted")
    with pytest.raises(
        ConfigError,
        match=r"^no key to sign models with: set model_signing_key "
        r"\(ADAPTLOOP_MODEL_S",
    ):
        Settings().worker_model_store()
    assert not (home / "keys").exists()
    assert sorted(p.name for p in planted.parent.iterdir()) == sorted(
        [f"{version}.pkl", f"{version}.sig", planted.name]
    )
    # The store's location in the home (store unset) that already holds models: refused as well.
    monkeypatch.delenv("ADAPTLOOP_STORE")
    _store_in_use(home / "models")
    with pytest.raises(ConfigError, match="no key to sign models with"):
        Settings().worker_model_store()
    assert not (home / "keys").exists()


def test_a_worker_makes_a_key_only_for_a_new_empty_store_in_its_home(
    home, tmp_path, monkeypatch, caplog
):
    monkeypatch.setenv("ADAPTLOOP_STORE", str(tmp_path / "empty-shared"))
    with pytest.raises(ConfigError, match="no key to sign models with"):
        # a store set explicitly may be shared: never a key of its own
        Settings().worker_model_store()
    monkeypatch.delenv("ADAPTLOOP_STORE")
    with caplog.at_level(logging.WARNING):
        store = Settings().worker_model_store()
    assert "made the key pair that signs models" in caplog.text
    assert (home / "keys" / "model-signing.key").exists()
    version = store.checkpoint(OnlineLearner(LearnerSpec(name="m"))).version
    # a service on the host verifies with the home's key
    Settings().model_store().load_model("m", version)


def test_a_worker_given_the_deployment_key_signs_with_it_and_a_missing_one_is_named(
    home, tmp_path, monkeypatch, caplog
):
    _, version = _store_in_use(tmp_path / "shared")
    monkeypatch.setenv("ADAPTLOOP_STORE", str(tmp_path / "shared"))
    monkeypatch.setenv("ADAPTLOOP_MODEL_SIGNING_KEY", str(tmp_path / "nowhere.key"))
    with pytest.raises(
        ConfigError,
        match=r"model_signing_key .* names .*nowhere.key, which "
        r"does not exist",
    ):
        Settings().worker_model_store()
    monkeypatch.setenv(
        "ADAPTLOOP_MODEL_SIGNING_KEY", str(tmp_path / "first-worker-keys" / "model-signing.key")
    )
    with caplog.at_level(logging.WARNING):
        second = Settings().worker_model_store()
    assert "can be read by other users" not in caplog.text
    # a secret mounted readable by all
    (tmp_path / "first-worker-keys" / "model-signing.key").chmod(0o644)
    with caplog.at_level(logging.WARNING):
        Settings().worker_model_store()
    assert "can be read by other users (mode 644): it is a secret, chmod 600 it" in caplog.text
    restored = second.restore(LearnerSpec(name="m"))
    assert restored.progress.version == version
    assert not (home / "keys").exists()


def test_services_trust_one_key_or_a_list_of_them(home, tmp_path, monkeypatch):
    _, version = _store_in_use(tmp_path / "shared")
    ModelKeys.create(tmp_path / "other")
    monkeypatch.setenv("ADAPTLOOP_STORE", str(tmp_path / "shared"))
    monkeypatch.setenv("ADAPTLOOP_MODEL_VERIFY_KEY", str(tmp_path / "other" / "model-signing.pub"))
    with pytest.raises(ModelRefused):
        Settings().model_store().load_model("m", version)
    both = (
        f'["{tmp_path}/other/model-signing.pub", "{tmp_path}/first-worker-keys/model-signing.pub"]'
    )
    monkeypatch.setenv("ADAPTLOOP_MODEL_VERIFY_KEY", both)
    assert len(Settings().verify_keys) == 2
    Settings().model_store().load_model("m", version)


def test_adopt_store_lists_the_unsigned_files_and_signs_them_only_when_confirmed(
    home, tmp_path, monkeypatch
):
    unsigned = ModelStore(home / "models")
    version = unsigned.checkpoint(OnlineLearner(LearnerSpec(name="m"))).version
    assert CliRunner().invoke(app, ["keys", "create"]).exit_code == 0
    declined = CliRunner().invoke(app, ["keys", "adopt-store"], input="n\n")
    assert declined.exit_code == 1 and f"m/versions/{version}.pkl" in declined.output
    assert "m/checkpoint.pkl" in declined.output
    with pytest.raises(ModelRefused):
        Settings().model_store().load_model("m", version)
    adopted = CliRunner().invoke(app, ["keys", "adopt-store", "--yes"])
    assert adopted.exit_code == 0 and "signed 2 files" in adopted.output, adopted.output
    Settings().model_store().load_model("m", version)
    assert "nothing to adopt" in CliRunner().invoke(app, ["keys", "adopt-store"]).output
