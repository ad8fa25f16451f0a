"""Model bytes are authenticated before they are unpickled: the worker signs every version and checkpoint it
stores with its ed25519 key, and whoever loads one (a ``ModelClient``, a restarting learner, a rollback)
checks the signature with the public key first.

Unpickling runs code, so a file planted in the model store, or a checkpoint changed on disk, must never
reach ``pickle.loads``: without the private key no one can sign one. The private key stays with the worker
(``<home>/keys/model-signing.key``, readable by its user only); services get the public key
(``model-signing.pub``, setting ``model_verify_key``).

>>> import tempfile
>>> keys = ModelKeys.create(Path(tempfile.mkdtemp()))
>>> signature = keys.sign(b"model bytes")
>>> keys.verify(b"model bytes", signature, "churn@ab12")
>>> keys.verify(b"other bytes", signature, "churn@ab12")
Traceback (most recent call last):
...
adaptloop.schemas.errors.ModelRefused: churn@ab12: its signature does not match its bytes (changed after the \
worker stored it, or not stored by the worker): refused, not loaded
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from adaptloop.schemas.errors import ConfigError, ModelRefused

PRIVATE_NAME, PUBLIC_NAME = "model-signing.key", "model-signing.pub"


class ModelKeys:
    """The public key that checks model signatures, and the private key that makes them (the worker's only).

    A public key given as a file is read when first needed: a service may start before its worker has made
    the keys.
    """

    def __init__(self, public: Ed25519PublicKey | Path, private: Ed25519PrivateKey | None = None) -> None:
        self._public, self.private = public, private

    @property
    def public(self) -> Ed25519PublicKey:
        if isinstance(self._public, Path):
            self._public = _read_public(self._public)
        return self._public

    @classmethod
    def create(cls, directory: Path) -> ModelKeys:
        """A new key pair, written to ``directory`` (the private key readable by this user only); raise
        :class:`FileExistsError` if another process made one there first.

        Each file appears whole or not at all (written aside, then linked or renamed into place): two worker
        processes starting together on a fresh home read one complete key, never a half-written one.
        """
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        private = Ed25519PrivateKey.generate()
        aside = directory / f".{PRIVATE_NAME}.{os.getpid()}"
        fd = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(
                private.private_bytes(
                    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
                )
            )
        try:
            os.link(aside, directory / PRIVATE_NAME)  # the first process to link wins; the others read its key
        finally:
            aside.unlink()
        public_aside = directory / f".{PUBLIC_NAME}.{os.getpid()}"
        public_aside.write_bytes(
            private.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        os.replace(public_aside, directory / PUBLIC_NAME)
        return cls(private.public_key(), private)

    @classmethod
    def for_worker(cls, directory: Path) -> tuple[ModelKeys, bool]:
        """The worker's key pair in ``directory``, made if there is none; and whether it was just made."""
        if not (directory / PRIVATE_NAME).exists():
            try:
                return cls.create(directory), True
            except FileExistsError:  # another process of the worker made it meanwhile
                pass
        private = serialization.load_pem_private_key((directory / PRIVATE_NAME).read_bytes(), password=None)
        if not isinstance(private, Ed25519PrivateKey):
            raise ConfigError(f"{directory / PRIVATE_NAME} is not an ed25519 private key")
        return cls(private.public_key(), private), False

    @classmethod
    def for_client(cls, public_key: Path) -> ModelKeys:
        """The public key a service checks models with (the worker's ``model-signing.pub``), read when needed."""
        return cls(public_key)

    def sign(self, data: bytes) -> bytes:
        if self.private is None:
            raise ConfigError("only the worker signs models: this process has the public key only")
        return self.private.sign(data)

    def verify(self, data: bytes, signature: bytes | None, what: str) -> None:
        """Raise :class:`ModelRefused` unless ``signature`` is the worker's over ``data``."""
        if signature is None:
            raise ModelRefused(f"{what}: it has no signature (not stored by the worker): refused, not loaded")
        try:
            self.public.verify(signature, data)
        except InvalidSignature:
            raise ModelRefused(
                f"{what}: its signature does not match its bytes (changed after the worker stored it, or not "
                "stored by the worker): refused, not loaded"
            ) from None


def _read_public(path: Path) -> Ed25519PublicKey:
    try:
        public = serialization.load_pem_public_key(path.read_bytes())
    except (OSError, ValueError) as error:
        raise ConfigError(
            f"cannot read the key that checks model signatures, {path} ({error}); copy the worker's "
            f"<home>/keys/{PUBLIC_NAME} and point ADAPTLOOP_MODEL_VERIFY_KEY at it"
        ) from None
    if not isinstance(public, Ed25519PublicKey):
        raise ConfigError(f"{path} is not an ed25519 public key")
    return public
