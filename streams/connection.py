"""What a service's clients need to reach the loop: the Kafka address and login, the topic prefix, the model store.

:class:`ClientSettings` is read from the environment (``ADAPTLOOP_*``) or ``./adaptloop.toml``, like the
worker's :class:`adaptloop.settings.Settings`, which extends it. Every client of this layer has a
``from_settings`` constructor that takes one (or reads it), so a service's first lines are::

    with ModelClient.from_settings("churn") as model, EventProducer.from_settings() as events:
        ...
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, TomlConfigSettingsSource


class ClientSettings(BaseSettings):
    """The settings a service needs; every field can be set as ``ADAPTLOOP_<FIELD>``.

    >>> ClientSettings(kafka_port=19092).bootstrap_address
    '127.0.0.1:19092'
    """

    model_config = SettingsConfigDict(
        env_prefix="ADAPTLOOP_", toml_file="adaptloop.toml", extra="ignore", env_parse_none_str="null"
    )

    home: Path = Field(Path(".adaptloop"), description="Where the local broker's data, models and archives live.")
    bootstrap: str | None = Field(None, description="Kafka bootstrap servers; unset: the local broker.")
    kafka_host: str = Field("127.0.0.1", description="The local broker's host (when `bootstrap` is unset).")
    kafka_port: int = Field(9092, ge=1, le=65535, description="The local broker's port (when `bootstrap` is unset).")
    topic_prefix: str = Field("", description="Prefix of every topic name, to share a cluster between setups.")

    @property
    def bootstrap_address(self) -> str:
        return self.bootstrap or f"{self.kafka_host}:{self.kafka_port}"

    @property
    def models_dir(self) -> Path:
        return self.home / "models"

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
