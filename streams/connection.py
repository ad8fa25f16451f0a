"""What a service's clients need to reach the loop: the Kafka address and login, the topic prefix, the model store.

:class:`ClientSettings` is read from the environment (``ADAPTLOOP_*``) or ``./adaptloop.toml``, like the
worker's :class:`adaptloop.settings.Settings`, which extends it. Every client of this layer has a
``from_settings`` constructor that takes one (or reads it), so a service's first lines are::

    with ModelClient.from_settings("churn") as model, EventProducer.from_settings() as events:
        ...

Every Kafka client adaptloop makes takes its configuration from :func:`kafka_config`: the bootstrap address
and the connection properties (TLS, SASL) of the ``kafka`` setting for that address, registered when a
setup's address is read (:attr:`ClientSettings.bootstrap_address`); an address no setup named takes the
environment's.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, TomlConfigSettingsSource

from adaptloop.schemas.errors import ConfigError

if TYPE_CHECKING:
    from adaptloop.learners.store import ModelStore


def default_home() -> Path:
    """The user's own home for adaptloop: ``$XDG_DATA_HOME/adaptloop``, by default ``~/.local/share/adaptloop``.

    It is absolute, so a worker and the services and commands its user runs on the same machine find the same
    home from any folder. A relative ``XDG_DATA_HOME`` is ignored, as the XDG Base Directory spec says.
    """
    data = os.environ.get("XDG_DATA_HOME", "")
    return (Path(data) if os.path.isabs(data) else Path.home() / ".local" / "share") / "adaptloop"


class ClientSettings(BaseSettings):
    """The settings a service needs; every field can be set as ``ADAPTLOOP_<FIELD>``.

    >>> ClientSettings(kafka_port=19092).bootstrap_address
    '127.0.0.1:19092'
    """

    model_config = SettingsConfigDict(
        env_prefix="ADAPTLOOP_",
        env_nested_delimiter="__",
        toml_file="adaptloop.toml",
        extra="ignore",
        env_parse_none_str="null",
    )

    home: Path = Field(
        default_factory=default_home,
        description="Where the local broker's data, models and archives live; the worker logs it when it starts. The "
        "default is the user's, so a worker and the services and commands of one user on one machine share it from "
        "any folder.",
        json_schema_extra={"shown_default": "~/.local/share/adaptloop ($XDG_DATA_HOME/adaptloop if set)"},
    )
    bootstrap: str | None = Field(None, description="Kafka bootstrap servers; unset: the local broker.")
    kafka_host: str = Field("127.0.0.1", description="The local broker's host (when `bootstrap` is unset).")
    kafka_port: int = Field(9092, ge=1, le=65535, description="The local broker's port (when `bootstrap` is unset).")
    topic_prefix: str = Field("", description="Prefix of every topic name, to share a cluster between setups.")
    store: str | None = Field(
        None,
        description="Where model versions and checkpoints live: a directory, or an object store that workers and "
        "services on other hosts share (s3://bucket/prefix; options in the URI's query, e.g. "
        "?endpoint_override=minio:9000&scheme=http; credentials from the AWS environment); unset: <home>/models.",
    )
    model_verify_key: Path | list[Path] | None = Field(
        None,
        description="The deployment's public key (made with its private key by `adaptloop keys create`) that every "
        "model file's signature is checked with before it is loaded, or a list of them (a JSON list in the "
        "environment; during a key rotation: the old and the new); a worker accepts these beside its own key. "
        "Unset: `<home>/keys/model-signing.pub`.",
    )
    kafka: dict[str, str] = Field(
        default_factory=dict,
        description="librdkafka connection properties for every client (worker, SDK, CLI): `security.protocol`, "
        "`sasl.mechanism`, `sasl.username`, `sasl.password`, `ssl.ca.location`, ... In the environment one "
        "per variable: ADAPTLOOP_KAFKA__SASL_USERNAME (underscores for dots). A value `file:/path` is read from "
        "that file (a mounted secret). Passwords and keys are never shown or logged.",
    )

    @field_validator("home")
    @classmethod
    def _expand_user(cls, value: Path) -> Path:
        """``~/adaptloop`` (in ``adaptloop.toml``, where no shell expands it) is in the user's home directory."""
        return value.expanduser()

    @field_validator("kafka", mode="before")
    @classmethod
    def _property_names(cls, value: Any) -> Any:
        """``sasl_username`` (an environment variable's spelling) is ``sasl.username``."""
        if isinstance(value, dict):
            return {str(key).lower().replace("_", "."): str(item) for key, item in value.items()}
        return value

    @property
    def bootstrap_address(self) -> str:
        """The Kafka address. Every client this process makes for it connects with this setup's ``kafka``
        properties (registered here: the address is what every client is given)."""
        address = self.bootstrap or f"{self.kafka_host}:{self.kafka_port}"
        use_connection(address, self.kafka_properties())
        return address

    def kafka_properties(self) -> dict[str, str]:
        """The ``kafka`` properties with ``file:`` values read from their files."""
        return resolve_secrets(self.kafka)

    def shown_kafka(self) -> dict[str, str]:
        """The ``kafka`` properties as they may be shown: secrets masked.

        >>> ClientSettings(kafka={"sasl.username": "svc", "sasl.password": "hunter2"}).shown_kafka()
        {'sasl.username': 'svc', 'sasl.password': '********'}
        """
        return {key: "********" if _secret(key) else value for key, value in self.kafka.items()}

    @property
    def models_dir(self) -> Path:
        return self.home / "models"

    @property
    def models_location(self) -> str:
        """The model store: ``store``, or ``<home>/models``."""
        return self.store or str(self.models_dir)

    @property
    def keys_dir(self) -> Path:
        """Where the worker keeps the key pair that signs models."""
        return self.home / "keys"

    @property
    def verify_keys(self) -> list[Path]:
        """The public keys a service trusts: ``model_verify_key``, or ``<home>/keys/model-signing.pub``."""
        from adaptloop.learners.signing import PUBLIC_NAME

        key = self.model_verify_key
        if key is None:
            return [self.keys_dir / PUBLIC_NAME]
        return list(key) if isinstance(key, list) else [key]

    def model_store(self) -> ModelStore:
        """The model store as a service reads it: each file's signature checked with ``model_verify_key``."""
        from adaptloop.learners.signing import ModelKeys  # (River and pickle: only when serving)
        from adaptloop.learners.store import ModelStore

        return ModelStore(self.models_location, ModelKeys.for_client(self.verify_keys))

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls))


_REGISTERED: dict[str, dict[str, str]] = {}
_SECRET_WORDS = ("password", "secret", "key", "token", "jaas")


def _secret(name: str) -> bool:
    return any(word in name for word in _SECRET_WORDS) and not name.endswith(".location")


def resolve_secrets(properties: dict[str, str]) -> dict[str, str]:
    """``properties`` with each ``file:<path>`` value replaced by that file's content."""
    return {key: _resolve(value) for key, value in properties.items()}


def _resolve(value: str) -> str:
    if not value.startswith("file:"):
        return value
    path = Path(value.removeprefix("file:"))
    try:
        return path.read_text().strip()
    except OSError as error:
        raise ConfigError(f"a kafka setting names the file {path}, which cannot be read: {error}") from None


@functools.cache
def _from_environment() -> tuple[str, dict[str, str]]:
    settings = ClientSettings()
    return settings.bootstrap_address, settings.kafka_properties()


def use_connection(bootstrap: str, properties: dict[str, str]) -> None:
    """Make every client this process creates for ``bootstrap`` connect with ``properties`` (TLS, SASL)."""
    _REGISTERED[bootstrap] = dict(properties)


def kafka_config(bootstrap: str, **properties: Any) -> dict[str, Any]:
    """The librdkafka configuration of a client of ``bootstrap``: the address, its connection properties (those
    registered for it, else the environment's if it names the same address), then ``properties``.

    >>> kafka_config("broker:9092", **{"group.id": "g"})
    {'bootstrap.servers': 'broker:9092', 'group.id': 'g'}
    """
    connection = _REGISTERED.get(bootstrap)
    if connection is None:
        address, environment = _from_environment()
        connection = environment if address == bootstrap else {}
    return {"bootstrap.servers": bootstrap, **connection, **properties}
