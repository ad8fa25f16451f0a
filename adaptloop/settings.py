"""All of adaptloop's settings in one typed place: environment (ADAPTLOOP_*) or ./adaptloop.toml."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field
from learners.guardrails import GuardrailLimits
from learners.spec import LearnerSpec
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, TomlConfigSettingsSource


def _default_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "adaptloop"


class Settings(BaseSettings):
    """adaptloop's settings; every field can be set as ``ADAPTLOOP_<FIELD>``.

    >>> Settings(kafka_port=19092).bootstrap_address
    '127.0.0.1:19092'
    """

    model_config = SettingsConfigDict(env_prefix="ADAPTLOOP_", toml_file="adaptloop.toml", extra="forbid",
                                      env_parse_none_str="null")

    home: Path = Field(Path(".adaptloop"), description="Where the local broker's data, models and archives live.")
    cache_dir: Path = Field(default_factory=_default_cache_dir, description="Where the Kafka jars are cached.")
    bootstrap: str | None = Field(None, description="Kafka bootstrap servers; unset means the local broker.")
    topic_prefix: str = Field("", description="Prefix of every topic name, to share a cluster between setups.")
    partitions: int = Field(6, ge=1, description="Partitions of each topic adaptloop creates.")
    kafka_host: str = "127.0.0.1"
    kafka_port: int = Field(9092, ge=1, le=65535)
    kafka_controller_port: int = Field(9093, ge=1, le=65535)
    kafka_heap: str = Field("512m", description="Java heap of the local broker (-Xmx).")
    kafka_start_timeout: float = Field(90.0, gt=0)
    models: list[LearnerSpec] = Field(
        default_factory=list, description="Learner specs (JSON list in ADAPTLOOP_MODELS, or [[models]] in the TOML)."
    )
    tick_seconds: float | None = Field(1.0, gt=0, description="Join clock ticks (wall clock); unset: event time only.")
    lateness_seconds: float = Field(0.0, ge=0, description="How far the join's watermark trails the newest timestamp.")
    max_future_seconds: float = Field(
        300.0, gt=0, description="Predictions and outcomes stamped further ahead of the worker's clock are "
        "dead-lettered: one from the year 9999 would advance the join's event-time clock and expire every "
        "pending decision of its partition.")
    learner_batch: int = Field(1000, ge=1, description="Training examples read per batch by the learner.")
    log_level: str = Field("warning", pattern="^(debug|info|warning|error)$", description="Worker log level.")
    group: str = Field("adaptloop", description="Consumer group prefix shared by the workers of one deployment.")
    archive_flush_seconds: float = Field(
        60.0, gt=0, description="Longest a record waits before its Parquet file is written (queries pay per file; "
        "snapshots come every snapshot_seconds).")
    archive_flush_rows: int = Field(50_000, ge=1, description="Records per partition that trigger a Parquet file at once.")
    archive_buffer_rows: int = Field(200_000, ge=1, description="Records buffered in all that write every buffer at once.")
    guardrails: GuardrailLimits = Field(default_factory=GuardrailLimits, description="Thresholds of the guardrails.")
    segment_keys: list[str] = Field(default_factory=list, description="Context keys that split preference stores.")
    preference_publish_seconds: float = Field(1.0, gt=0, description="How often changed store shards are published.")
    metrics_port: int | None = Field(9464, ge=0, le=65535, description="The worker's /metrics and /health port; null: none.")
    snapshot_seconds: float | None = Field(
        600.0, gt=0, description="The worker writes a DuckDB snapshot this often; unset: only `adaptloop snapshot create`."
    )
    keep_snapshots: int | None = Field(
        144, ge=1, description="The worker keeps this many snapshot-*.duckdb files in snapshots/, the newest (a day "
        "at 600 s); unset: all. Each holds the model store's bytes, so they grow with it."
    )

    @property
    def bootstrap_address(self) -> str:
        return self.bootstrap or f"{self.kafka_host}:{self.kafka_port}"

    @property
    def models_dir(self) -> Path:
        return self.home / "models"

    @property
    def archive_dir(self) -> Path:
        return self.home / "archive"

    @property
    def snapshots_dir(self) -> Path:
        return self.home / "snapshots"

    @property
    def specs(self) -> dict[str, LearnerSpec]:
        return {spec.name: spec for spec in self.models}

    @property
    def kafka_data_dir(self) -> Path:
        return self.home / "kafka"

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
