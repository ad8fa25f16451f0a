"""``adaptloop keys create`` and ``adaptloop keys adopt-store``: the deployment's model-signing key,
made once, and an old unsigned model store taken in on purpose.

A worker never makes a key for a store in use, nor signs files it did not write (see
:meth:`adaptloop.settings.Settings.worker_model_store`): these commands are how an operator does
both, knowingly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from adaptloop.cli.common import console, fail, sub_app
from adaptloop.schemas.errors import AdaptloopError, ConfigError
from adaptloop.settings import Settings

keys_app = sub_app(
    "keys", "The deployment's key that signs models: made once, shared by its workers."
)


@keys_app.command("create")
def create(
    private: Annotated[
        Path | None,
        typer.Option(
            "--private",
            help="Where the private key goes (a secret for the workers); default: "
            "model_signing_key, or "
            "<home>/keys/model-signing.key.",
        ),
    ] = None,
    public: Annotated[
        Path | None,
        typer.Option(
            "--public",
            help="Where the public key goes (for the services); default: beside it, .pub.",
        ),
    ] = None,
) -> None:
    """Make the deployment's key pair, once: the private key (readable by you only) that every
    worker signs with, and the public key that services check models with. An existing key is never
    replaced."""
    from adaptloop.learners.signing import ModelKeys

    private = private if private is not None else Settings().signing_key_path
    public = public if public is not None else private.with_suffix(".pub")
    for path in (private, public):
        if path.exists():
            raise fail(
                ConfigError(f"{path} exists: a deployment's key is made once, never replaced here")
            )
    try:
        ModelKeys.write(private, public)
    except FileExistsError:
        raise fail(
            ConfigError(f"{private} exists: a deployment's key is made once, never replaced here")
        ) from None
    console.print(
        f"wrote the private key {private} (mode 0600): give it to every worker as a secret, "
        f"ADAPTLOOP_MODEL_SIGNING_KEY={private}",
        soft_wrap=True,
    )
    console.print(
        f"wrote the public key {public}: give it to every service, "
        f"ADAPTLOOP_MODEL_VERIFY_KEY={public}",
        soft_wrap=True,
    )


@keys_app.command("adopt-store")
def adopt_store(
    yes: Annotated[bool, typer.Option("--yes", help="Sign without asking.")] = False,
) -> None:
    """Sign, with the deployment's key, the files of a model store from before signatures (listed
    first). Only for a store whose every file you vouch for: a file planted there would be signed
    too."""
    from adaptloop.learners.signing import ModelKeys
    from adaptloop.learners.store import ModelStore

    settings = Settings()
    path = settings.signing_key_path
    try:
        if not path.exists():
            raise ConfigError(
                f"no key to sign with at {path}: make one with `adaptloop keys create`, or "
                "set model_signing_key"
            )
        store = ModelStore(settings.models_location, ModelKeys.signing(path))
        unsigned = store.unsigned()
        if not unsigned:
            console.print(f"every model file in {store.root} is signed already: nothing to adopt")
            return
        console.print(f"{len(unsigned)} unsigned files in {store.root}:")
        for key in unsigned:
            console.print(f"  {store.storage.uri(key)}", soft_wrap=True)
        if not yes and not typer.confirm(
            f"sign these {len(unsigned)} files as the deployment's own?"
        ):
            raise typer.Exit(code=1)
        store.adopt(unsigned)
    except AdaptloopError as error:
        raise fail(error) from None
    console.print(f"signed {len(unsigned)} files with {path}")
