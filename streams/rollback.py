"""One-command rollback (or promotion): ask the owning learner to serve a stored version, and wait
until it has.

The command is an event on ``model-commands`` (so it is archived and audited like
any other); the learner that owns the model carries it out in order with its
training stream and publishes the rollback as a new record on ``model-updates``,
whose parent is the version it replaced. Serving follows that topic and swaps.

The command, and the version published for it, name the free-text ``actor`` and the Kafka user the
command was sent as (``principal``, :func:`~adaptloop.streams.acls.login_principal`).
"""

from __future__ import annotations

import time
import uuid
from typing import Literal

from adaptloop.learners.store import ModelStore
from adaptloop.schemas.codec import decode
from adaptloop.schemas.errors import DecodeError, TimedOut, UnknownModel
from adaptloop.schemas.system import ModelCommand, ModelVersion
from adaptloop.schemas.topics import MODEL_UPDATES
from adaptloop.streams.acls import login_principal
from adaptloop.streams.connection import ConnectionLike, KafkaConnection
from adaptloop.streams.producer import EventProducer


class RollbackTimeout(TimedOut):
    """The learner did not confirm the rollback in time (is a worker running?)."""


def request_rollback(
    connection: ConnectionLike,
    store: ModelStore,
    model: str,
    to_version: str,
    *,
    actor: str,
    reason: str = "",
    prefix: str = "",
    timeout: float | None = 60.0,
    action: Literal["rollback", "promote"] = "rollback",
) -> ModelVersion | None:
    """Send the rollback (or promote) command; return the version the learner published for it (None
    if ``timeout`` is None).

    Raises :class:`UnknownModel` before sending anything if the version is not in the store.
    """
    store.load_bytes(model, to_version)  # fails clearly for an unknown model or version
    command = ModelCommand(
        model=model,
        action=action,
        to_version=to_version,
        actor=actor,
        principal=login_principal(connection),
        reason=reason,
        command_id=uuid.uuid4().hex,
    )
    published_as = "rollback" if action == "rollback" else "promotion"
    connection = KafkaConnection.of(connection)
    with connection.reader(MODEL_UPDATES.full_name(prefix), start="end") as reader:
        reader.assign(10)  # from "now" on: the confirmation comes after the command
        with EventProducer(connection, topic_prefix=prefix) as producer:
            producer.send(command)
        if timeout is None:
            return None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for message in reader.poll(0.5):
                try:
                    version: ModelVersion = decode(MODEL_UPDATES, message.value())  # type: ignore[assignment]
                except DecodeError:
                    continue
                if (
                    version.model == model
                    and version.reason == published_as
                    and command.command_id in (version.note or "")
                ):
                    return version
    raise RollbackTimeout(
        f"no learner confirmed the {action} of {model!r} to {to_version} within "
        f"{timeout:.0f}s; the command "
        f"{command.command_id} is on the topic and will be carried out when a worker owning "
        f"{model!r} runs"
    )


__all__ = ["RollbackTimeout", "UnknownModel", "request_rollback"]
