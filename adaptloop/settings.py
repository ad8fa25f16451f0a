"""All of adaptloop's settings in one typed place: environment (ADAPTLOOP_*) or ./adaptloop.toml."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

import orjson
from pydantic import BaseModel, Field
from pydantic.fields import FieldInfo
from pydantic_settings import SettingsConfigDict

from adaptloop.learners.guardrails import GuardrailLimits
from adaptloop.learners.signing import PRIVATE_NAME, PUBLIC_NAME, ModelKeys
from adaptloop.learners.spec import (
    MAX_EVENT_FEATURES,
    MAX_FEATURE_NAMES,
    CanarySpec,
    DriftSpec,
    LearnerSpec,
)
from adaptloop.schemas.codec import MAX_RECORD_BYTES
from adaptloop.schemas.errors import ConfigError
from adaptloop.streams.admin import Replication
from adaptloop.streams.connection import ClientSettings
from adaptloop.streams.notify import Webhook

if TYPE_CHECKING:
    from adaptloop.learners.store import ModelStore

log = logging.getLogger(__name__)


def _default_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "adaptloop"


class Settings(ClientSettings):
    """adaptloop's settings: a service's (:class:`ClientSettings`) and the worker's; every field can
    be set as ``ADAPTLOOP_<FIELD>``.

    >>> Settings(kafka_port=19092).bootstrap_address
    '127.0.0.1:19092'
    """

    model_config = SettingsConfigDict(
        env_prefix="ADAPTLOOP_",
        env_nested_delimiter="__",
        toml_file="adaptloop.toml",
        extra="forbid",
        env_parse_none_str="null",
    )

    cache_dir: Path = Field(
        default_factory=_default_cache_dir,
        description="Where the Kafka jars are cached.",
        json_schema_extra={
            "shown_default": ("~/.cache/adaptloop ($XDG_CACHE_HOME/adaptloop if set)")
        },
    )
    partitions: int = Field(6, ge=1, description="Partitions of each topic adaptloop creates.")
    replication_factor: int | None = Field(
        None,
        ge=1,
        description="Copies of each partition of the topics adaptloop creates; "
        "unset: min(3, brokers).",
    )
    min_insync_replicas: int | None = Field(
        None,
        ge=1,
        description="Copies a write needs before it counts (min.insync.replicas of the topics "
        "adaptloop creates); "
        "unset: 2 with 3 copies or more, else 1.",
    )
    kafka_controller_port: int = Field(
        9093, ge=1, le=65535, description="The local broker's KRaft controller port."
    )
    kafka_secure_port: int | None = Field(
        None,
        ge=1,
        le=65535,
        description="The local broker's SASL_SSL listener (SCRAM users, a local CA, ACLs "
        "enforced); unset: none, "
        "or for a home made secure the port it was made with. `adaptloop kafka up --secure` "
        "sets 9094.",
    )
    kafka_plaintext: bool | None = Field(
        None,
        description="Whether the local broker has a plaintext listener (on `kafka_host`) for "
        "clients; unset: only "
        "if its home is not secure. True on a secure home opens one beside the secured "
        "listener, whose clients "
        "are super users (`adaptloop kafka up --plaintext`).",
    )
    model_signing_key: Path | None = Field(
        None,
        description="The deployment's private key that workers sign model files with, made once "
        "by `adaptloop keys "
        "create` and given to every worker (a secret file, readable by its user only); unset: "
        "`<home>/keys/model-signing.key`, which a worker makes only for a new, empty store "
        "in its home.",
    )
    kafka_heap: str = Field("512m", description="Java heap of the local broker (-Xmx).")
    kafka_start_timeout: float = Field(
        90.0, gt=0, description="Seconds the local broker may take to answer."
    )
    models: list[LearnerSpec] = Field(
        default_factory=list,
        description="Learner specs (JSON list in ADAPTLOOP_MODELS, or [[models]] in the TOML).",
    )
    tick_seconds: float | None = Field(
        1.0, gt=0, description="Join clock ticks (wall clock); unset: event time only."
    )
    lateness_seconds: float = Field(
        0.0,
        ge=0,
        description="How far the join's watermark trails the newest timestamp (when idle, the "
        "worker's clock: "
        "its ticks). Set it to the clock skew between the services and the worker: a "
        "decision stamped earlier "
        "than the watermark by more than its horizon expires as it arrives.",
    )
    max_future_seconds: float = Field(
        300.0,
        gt=0,
        description="Predictions and outcomes stamped further ahead of the worker's clock are "
        "dead-lettered: one from the year 9999 would advance the join's event-time clock "
        "and expire every "
        "pending decision of its partition.",
    )
    learner_batch: int = Field(
        1000, ge=1, description="Training examples read per batch by the learner."
    )
    max_event_features: int = Field(
        MAX_EVENT_FEATURES,
        ge=1,
        description="The feature budget of each model whose spec sets none: an example with "
        "more features is "
        "dead-lettered before its model changes (unless the model's `features` declares "
        "them); `adaptloop serve` "
        "answers a prediction with more than the largest of its models' budgets with 422.",
    )
    max_feature_names: int = Field(
        MAX_FEATURE_NAMES,
        ge=1,
        description="The feature budget of each model whose spec sets none: distinct feature "
        "names a model learns "
        "from at most; an example with new names beyond them is dead-lettered (unless "
        "`features` declares them).",
    )
    health_window: int = Field(
        200,
        ge=10,
        description="A model's health is judged over its latest decisions, this "
        "many (see monitoring).",
    )
    max_rejected_share: float = Field(
        0.2,
        gt=0,
        le=1,
        description="A model that rejects more than this share of its latest examples is sick.",
    )
    log_level: str = Field(
        "info", pattern="^(debug|info|warning|error)$", description="Worker log level."
    )
    group: str = Field(
        "adaptloop", description="Consumer group prefix shared by the workers of one deployment."
    )
    archive: str | None = Field(
        None,
        description="Where the Parquet archive of every topic lives: a directory, or an object "
        "store that workers "
        "and analysts on other hosts share (s3://bucket/prefix, options and credentials as "
        "for `store`); unset: "
        "<home>/archive. A snapshot of an archive in an object store copies its rows in, so "
        "it opens anywhere.",
    )
    archive_flush_seconds: float = Field(
        60.0,
        gt=0,
        description="Longest a record waits before its Parquet file is written (queries pay per "
        "file; "
        "snapshots come every snapshot_seconds).",
    )
    archive_flush_rows: int = Field(
        50_000, ge=1, description="Records per partition that trigger a Parquet file at once."
    )
    archive_buffer_rows: int = Field(
        200_000, ge=1, description="Records buffered in all that write every buffer at once."
    )
    guardrails: GuardrailLimits = Field(
        default_factory=GuardrailLimits, description="Thresholds of the guardrails."
    )
    webhooks: list[Webhook] = Field(
        default_factory=list,
        description="Where guardrail and model alerts are posted (the worker's notify role runs "
        "when any is set).",
    )
    segment_keys: list[str] = Field(
        default_factory=list, description="Context keys that split preference stores."
    )
    preference_publish_seconds: float = Field(
        1.0, gt=0, description="How often changed store shards are published."
    )
    metrics_host: str = Field(
        "127.0.0.1",
        description="Where the worker's /metrics and /health listen: the loopback host unless "
        "set (e.g. 0.0.0.0 in "
        "a container that Prometheus scrapes); they need no login, so expose them on a "
        "private network only.",
    )
    metrics_port: int | None = Field(
        9464, ge=0, le=65535, description="The worker's /metrics and /health port; null: none."
    )
    snapshot_seconds: float | None = Field(
        600.0,
        gt=0,
        description="The worker writes a DuckDB snapshot this often; unset (and with an "
        "`archive` in an object "
        "store, whose snapshots copy every row): only `adaptloop snapshot create`.",
    )
    keep_snapshots: int | None = Field(
        144,
        ge=1,
        description="The worker keeps this many snapshot-*.duckdb files in snapshots/, the "
        "newest (a day "
        "at 600 s); unset: all. Each holds the model store's bytes, so they grow with it.",
    )

    serve_max_body_bytes: int = Field(
        MAX_RECORD_BYTES,
        ge=1024,
        description="The largest request body `adaptloop serve` takes (413 beyond it, before it "
        "is read); default: "
        "the contracts' record limit.",
    )
    audit_seconds: float = Field(
        60.0, gt=0, description="How long one `adaptloop audit` query may run before it is stopped."
    )
    audit_memory_mb: int = Field(
        1024,
        ge=16,
        description="How much memory one `adaptloop audit` query may take, its result's rows "
        "included (it "
        "never spills to disk); a query that needs more is stopped.",
    )

    @property
    def signing_key_path(self) -> Path:
        """The deployment's private key that this worker signs with: ``model_signing_key``, or the
        home's."""
        return self.model_signing_key or self.keys_dir / PRIVATE_NAME

    def worker_model_store(self) -> ModelStore:
        """The model store as a worker writes it: every file signed with the deployment's key
        (``model_signing_key``), each file it loads checked with that key or one of
        ``model_verify_key``.

        A worker never makes a key for a store in use, nor signs what it did not write: without the
        key, it refuses to start, naming the setting. Only a brand-new, empty store in its own home
        (``store`` unset: the single-host quickstart) gets a key pair made in ``<home>/keys``, said
        in the log.
        """
        # (River, pandas: only the processes that need them)
        from adaptloop.learners.store import ModelStore

        trusted = self.verify_keys if self.model_verify_key is not None else []
        path = self.signing_key_path
        if path.exists():
            return ModelStore(self.models_location, ModelKeys.signing(path, trusted))
        if self.model_signing_key is not None:
            raise ConfigError(
                f"model_signing_key (ADAPTLOOP_MODEL_SIGNING_KEY) names {path}, which does "
                "not exist: make the "
                "deployment's key once with `adaptloop keys create` and give that file to "
                "every worker"
            )
        if self.store is not None or ModelStore(self.models_location).holds_models():
            if path.exists():  # another process of this worker made it a moment ago
                return ModelStore(self.models_location, ModelKeys.signing(path, trusted))
            raise ConfigError(
                "no key to sign models with: set model_signing_key "
                "(ADAPTLOOP_MODEL_SIGNING_KEY) to the "
                "deployment's private key (`adaptloop keys create` makes it, once), as "
                "every worker sharing "
                f"{self.models_location} must; a worker makes one only for a new, empty "
                "store in its home"
            )
        _, made = ModelKeys.for_worker(self.keys_dir)
        if made:
            log.warning(
                "made the key pair that signs models in %s, for the new model store %s; "
                "services check models with "
                "%s. Workers on other hosts need the private key: see `adaptloop keys --help`",
                self.keys_dir,
                self.models_location,
                self.keys_dir / PUBLIC_NAME,
            )
        return ModelStore(self.models_location, ModelKeys.signing(path, trusted))

    @property
    def replication(self) -> Replication:
        return Replication(self.replication_factor, self.min_insync_replicas)

    @property
    def archive_location(self) -> str:
        """The archive: ``archive``, or ``<home>/archive``."""
        return self.archive or str(self.home / "archive")

    @property
    def snapshots_dir(self) -> Path:
        return self.home / "snapshots"

    @property
    def specs(self) -> dict[str, LearnerSpec]:
        """The learner specs by name, with the feature budget of the settings where a spec sets
        none."""
        return {
            spec.name: spec.budgeted(self.max_event_features, self.max_feature_names)
            for spec in self.models
        }

    @property
    def kafka_data_dir(self) -> Path:
        return self.home / "kafka"


def _shown_default(field: FieldInfo) -> str:
    extra = field.json_schema_extra
    if isinstance(extra, dict) and "shown_default" in extra:
        return str(extra["shown_default"])
    if field.default_factory is not None:
        value = field.default_factory()  # type: ignore[call-arg]
    else:
        value = field.default
    if isinstance(value, BaseModel):
        return "(see below)" if value.model_fields_set or type(value).model_fields else "{}"
    if value is None:
        return "unset"
    return f"`{orjson.dumps(value, default=str).decode()}`"


def reference() -> str:
    """The settings reference in Markdown (``docs/settings.md``), from the fields' own
    descriptions."""
    lines = [
        "# Settings reference",
        "",
        (
            "<!-- Generated by `adaptloop settings --reference` from adaptloop/settings.py; "
            "a test fails when it is "
            "stale. -->"
        ),
        "",
        (
            "Each setting is read from the environment as `ADAPTLOOP_<NAME>` (upper case), "
            "or from `./adaptloop.toml` "
            "(`name = value`). In the environment, lists and tables are JSON, and `null` "
            "unsets an optional setting. "
            "Services need only the first group (`ClientSettings`); the worker reads them all."
        ),
        "",
    ]
    groups = [
        ("What a service needs (`adaptloop.ClientSettings`)", ClientSettings.model_fields),
        (
            "What the worker and the CLI add (`adaptloop.Settings`)",
            {
                name: field
                for name, field in Settings.model_fields.items()
                if name not in ClientSettings.model_fields
            },
        ),
    ]
    for title, fields in groups:
        lines += [
            f"## {title}",
            "",
            "| setting | environment | default | what it is |",
            "|---|---|---|---|",
        ]
        for name, field in fields.items():
            description = (field.description or "").replace("|", "\\|").replace("\n", " ")
            lines.append(
                f"| `{name}` | `ADAPTLOOP_{name.upper()}` | {_shown_default(field)} | "
                f"{description} |"
            )
        lines.append("")
    for title, model in (
        ("Learner specs (`models`: a list of these)", LearnerSpec),
        ("Drift monitoring (`models[].drift`)", DriftSpec),
        ("Canary versions (`models[].canary`)", CanarySpec),
        ("Guardrails (`guardrails`)", GuardrailLimits),
    ):
        lines += [f"## {title}", "", "| field | default | what it is |", "|---|---|---|"]
        for name, field in model.model_fields.items():
            description = (field.description or "").replace("|", "\\|").replace("\n", " ")
            default = "required" if field.is_required() else _shown_default(field)
            lines.append(f"| `{name}` | {default} | {description} |")
        lines.append("")
    return "\n".join(lines)
