"""Model bytes are authenticated before they are unpickled: workers sign every version and
checkpoint they store with the deployment's ed25519 key, and whoever loads one (a ``ModelClient``, a
restarting learner, a rollback, a replay) checks the signature with the trusted public keys first.

Unpickling runs code, so a file planted in the model store, or a checkpoint changed on disk, must
never reach ``pickle.loads``: without the private key no one can sign one. The deployment's key is
made once (``adaptloop keys create``); its private key goes to the workers only (setting
``model_signing_key``, a file readable by its user only), its public key to the services (setting
``model_verify_key``, one or several).

>>> import tempfile
>>> keys = ModelKeys.create(Path(tempfile.mkdtemp()))
>>> signature = keys.sign(b"model bytes")
>>> keys.verify(b"model bytes", signature, "churn@ab12")
>>> keys.verify(b"other bytes", signature, "churn@ab12")
Traceback (most recent call last):
...
adaptloop.schemas.errors.ModelRefused: churn@ab12: its signature does not match its bytes under any trusted key \
(changed after the worker stored it, or not stored by the deployment's workers): refused, not loaded
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Sequence
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from adaptloop.schemas.errors import ConfigError, ModelRefused

log = logging.getLogger(__name__)

PRIVATE_NAME, PUBLIC_NAME = "model-signing.key", "model-signing.pub"


class ModelKeys:
    """The public keys that check model signatures, and the private key that makes them (the
    workers' only).

    One deployment has one signing key, made once (``adaptloop keys create``) and given to every
    worker; services verify with a set of public keys, so that during a key rotation the versions
    signed with the old key and those signed with the new one both load. A public key given as a
    file is read when first needed: a service may start before the keys are handed out.
    """

    def __init__(
        self,
        public: Ed25519PublicKey | Path | Sequence[Ed25519PublicKey | Path],
        private: Ed25519PrivateKey | None = None,
    ) -> None:
        self._publics = list(public) if isinstance(public, Sequence) else [public]
        if not self._publics:
            raise ConfigError("no public key to check model signatures with")
        self.private = private

    @property
    def public(self) -> Ed25519PublicKey:
        """The first public key (the signer's own, for a worker)."""
        return self._key(0)

    def _key(self, index: int) -> Ed25519PublicKey:
        key = self._publics[index]
        if isinstance(key, Path):
            key = self._publics[index] = _read_public(key)
        return key

    @classmethod
    def create(cls, directory: Path) -> ModelKeys:
        """A new key pair in ``directory`` (``model-signing.key``, ``model-signing.pub``); see
        :meth:`write`."""
        return cls.write(directory / PRIVATE_NAME, directory / PUBLIC_NAME)

    @classmethod
    def write(cls, private_path: Path, public_path: Path) -> ModelKeys:
        """A new key pair, written to ``private_path`` (readable by this user only) and
        ``public_path``; raise :class:`FileExistsError` if the private key is there already (another
        process made one there first, or a key that must not be replaced).

        Each file appears whole or not at all (written aside, then linked or renamed into place):
        two worker processes starting together on a fresh home read one complete key, never a
        half-written one.
        """
        for directory in {private_path.parent, public_path.parent}:
            directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        private = Ed25519PrivateKey.generate()
        aside = private_path.parent / f".{private_path.name}.{os.getpid()}"
        fd = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(
                private.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
            )
        try:
            os.link(aside, private_path)  # the first process to link wins; the others read its key
        finally:
            aside.unlink()
        public_aside = public_path.parent / f".{public_path.name}.{os.getpid()}"
        public_aside.write_bytes(
            private.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        os.replace(public_aside, public_path)
        return cls(private.public_key(), private)

    @classmethod
    def for_worker(cls, directory: Path) -> tuple[ModelKeys, bool]:
        """The key pair in ``directory``, made if there is none; and whether it was just made (a
        worker on a brand-new store of its own: see
        :meth:`adaptloop.settings.Settings.worker_model_store`)."""
        if not (directory / PRIVATE_NAME).exists():
            try:
                return cls.create(directory), True
            except FileExistsError:  # another process of the worker made it meanwhile
                pass
        return cls.signing(directory / PRIVATE_NAME), False

    @classmethod
    def signing(cls, private_key: Path, also_trusted: Sequence[Path] = ()) -> ModelKeys:
        """The keys of a worker that signs with the private key in ``private_key`` and also accepts
        what the keys ``also_trusted`` signed (the previous key's versions and checkpoints, during a
        rotation)."""
        try:
            private = serialization.load_pem_private_key(private_key.read_bytes(), password=None)
        except (OSError, ValueError) as error:
            raise ConfigError(
                f"cannot read the key that signs models, {private_key} ({error})"
            ) from None
        if not isinstance(private, Ed25519PrivateKey):
            raise ConfigError(f"{private_key} is not an ed25519 private key")
        mode = stat.S_IMODE(private_key.stat().st_mode)
        if mode & 0o077:
            log.warning(
                "%s, the key that signs models, can be read by other users (mode %o): it is "
                "a secret, chmod 600 it",
                private_key,
                mode,
            )
        return cls([private.public_key(), *also_trusted], private)

    @classmethod
    def for_client(cls, public_keys: Path | Sequence[Path]) -> ModelKeys:
        """The public keys a service checks models with (each a ``model-signing.pub``), read when
        needed."""
        return cls(public_keys)

    def sign(self, data: bytes) -> bytes:
        if self.private is None:
            raise ConfigError("only the worker signs models: this process has the public key only")
        return self.private.sign(data)

    def verify(self, data: bytes, signature: bytes | None, what: str) -> None:
        """Raise :class:`ModelRefused` unless ``signature`` is over ``data`` by one of the trusted
        keys."""
        if signature is None:
            raise ModelRefused(
                f"{what}: it has no signature (not stored by the worker): refused, not loaded"
            )
        for index in range(len(self._publics)):
            try:
                self._key(index).verify(signature, data)
                return
            except InvalidSignature:
                continue
        raise ModelRefused(
            f"{what}: its signature does not match its bytes under any trusted key (changed "
            "after the worker "
            "stored it, or not stored by the deployment's workers): refused, not loaded"
        )


def _read_public(path: Path) -> Ed25519PublicKey:
    try:
        public = serialization.load_pem_public_key(path.read_bytes())
    except (OSError, ValueError) as error:
        raise ConfigError(
            f"cannot read the key that checks model signatures, {path} ({error}); copy the "
            "deployment's public "
            f"key ({PUBLIC_NAME}, made by `adaptloop keys create`) and point "
            "ADAPTLOOP_MODEL_VERIFY_KEY at it"
        ) from None
    if not isinstance(public, Ed25519PublicKey):
        raise ConfigError(f"{path} is not an ed25519 public key")
    return public
