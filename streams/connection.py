"""What a service's clients need to reach the loop: the Kafka connection (address, login, topic
prefix), the model store.

:class:`ClientSettings` is read from the environment (``ADAPTLOOP_*``) or ``./adaptloop.toml``, like
the worker's :class:`adaptloop.settings.Settings`, which extends it. Every client of this layer has
a ``from_settings`` constructor that takes one (or reads it), so a service's first lines are::

    with ModelClient.from_settings("churn") as model, EventProducer.from_settings() as events:
        ...

The settings make a :class:`KafkaConnection` (:meth:`ClientSettings.connection`): a frozen value
holding the bootstrap address, the connection properties (TLS, SASL; the secret ones as
:class:`~pydantic.SecretStr`, so that they never print) and the topic prefix. It makes every Kafka
client adaptloop uses::

    KafkaConnection ──┬── producer()          EventProducer (idempotent; transactional on request)
                      ├── reader(topic)       TopicReader (a short-lived read: to the end, or follow)
                      ├── group_consumer(g)   Consumer in group g (the roles, the group's offsets)
                      ├── admin()             AdminClient (topics, ACLs, the broker's answer)
                      └── config(**extra)     the librdkafka configuration behind each of them

Two identities in one process (a worker and an operator) are two values; nothing is registered
anywhere. A bare address where a connection is expected (:data:`ConnectionLike`) is a broker without
login.

Each client also gets an ``error_cb`` (:class:`ClientErrors`): librdkafka retries a refused login
for ever and reports it only there, so the callback raises
:class:`~adaptloop.schemas.errors.AuthenticationFailed` (naming the user and the mechanism, never
the password) from the client's next poll. A command line run can ask for the first client of each
address to check that a broker answers there (:func:`fail_fast`), so that a wrong address is said in
one line within seconds rather than after each client's own timeouts.
"""

from __future__ import annotations

import os
import time
import traceback
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from confluent_kafka import Consumer, KafkaError
from confluent_kafka.admin import AdminClient
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from adaptloop.schemas.errors import AuthenticationFailed, ConfigError

if TYPE_CHECKING:
    from adaptloop.learners.store import ModelStore
    from adaptloop.streams.producer import EventProducer
    from adaptloop.streams.reader import Start, TopicReader


def default_home() -> Path:
    """The user's own home for adaptloop: ``$XDG_DATA_HOME/adaptloop``, by default
    ``~/.local/share/adaptloop``.

    It is absolute, so a worker and the services and commands its user runs on the same machine find
    the same home from any folder. A relative ``XDG_DATA_HOME`` is ignored, as the XDG Base
    Directory spec says.
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
        description="Where the local broker's data, models and archives live; the worker logs "
        "it when it starts. The "
        "default is the user's, so a worker and the services and commands of one user on "
        "one machine share it from "
        "any folder.",
        json_schema_extra={
            "shown_default": ("~/.local/share/adaptloop ($XDG_DATA_HOME/adaptloop if set)")
        },
    )
    bootstrap: str | None = Field(
        None, description="Kafka bootstrap servers; unset: the local broker."
    )
    kafka_host: str = Field(
        "127.0.0.1", description="The local broker's host (when `bootstrap` is unset)."
    )
    kafka_port: int = Field(
        9092, ge=1, le=65535, description="The local broker's port (when `bootstrap` is unset)."
    )
    topic_prefix: str = Field(
        "", description="Prefix of every topic name, to share a cluster between setups."
    )
    store: str | None = Field(
        None,
        description="Where model versions and checkpoints live: a directory, or an object store "
        "that workers and "
        "services on other hosts share (s3://bucket/prefix; options in the URI's query, e.g. "
        "?endpoint_override=minio:9000&scheme=http; credentials from the AWS environment); "
        "unset: <home>/models.",
    )
    model_verify_key: Path | list[Path] | None = Field(
        None,
        description="The deployment's public key (made with its private key by `adaptloop keys "
        "create`) that every "
        "model file's signature is checked with before it is loaded, or a list of them (a "
        "JSON list in the "
        "environment; during a key rotation: the old and the new); a worker accepts these "
        "beside its own key. "
        "Unset: `<home>/keys/model-signing.pub`.",
    )
    kafka: dict[str, str] = Field(
        default_factory=dict,
        description="librdkafka connection properties for every client (worker, SDK, CLI): "
        "`security.protocol`, "
        "`sasl.mechanism`, `sasl.username`, `sasl.password`, `ssl.ca.location`, ... In the "
        "environment one "
        "per variable: ADAPTLOOP_KAFKA__SASL_USERNAME (underscores for dots). A value "
        "`file:/path` is read from "
        "that file (a mounted secret). Passwords and keys are never shown or logged.",
    )

    @field_validator("home")
    @classmethod
    def _expand_user(cls, value: Path) -> Path:
        """``~/adaptloop`` (in ``adaptloop.toml``, where no shell expands it) is in the user's home
        directory."""
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
        """The Kafka address (``bootstrap``, or the local broker's), as it may be shown."""
        return self.bootstrap or f"{self.kafka_host}:{self.kafka_port}"

    def connection(self) -> KafkaConnection:
        """The connection every Kafka client of this setup is made from: the address, the ``kafka``
        properties (``file:`` values read) and the topic prefix.

        >>> ClientSettings(kafka={"sasl.password": "hunter2"}, topic_prefix="t.").connection()
        KafkaConnection(bootstrap='127.0.0.1:9092', properties={}, \
secrets={'sasl.password': SecretStr('**********')}, topic_prefix='t.')
        """
        return KafkaConnection.with_properties(
            self.bootstrap_address, self.kafka_properties(), topic_prefix=self.topic_prefix
        )

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
        """The public keys a service trusts: ``model_verify_key``, or
        ``<home>/keys/model-signing.pub``."""
        from adaptloop.learners.signing import PUBLIC_NAME

        key = self.model_verify_key
        if key is None:
            return [self.keys_dir / PUBLIC_NAME]
        return list(key) if isinstance(key, list) else [key]

    def model_store(self) -> ModelStore:
        """The model store as a service reads it: each file's signature checked with
        ``model_verify_key``."""
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
        raise ConfigError(
            f"a kafka setting names the file {path}, which cannot be read: {error}"
        ) from None


class KafkaConnection(BaseModel):
    """How this process reaches one Kafka cluster as one identity, and the clients it makes there.

    ``properties`` are the librdkafka connection properties that may be shown
    (``security.protocol``, ``sasl.username``, ``ssl.ca.location``, ...), ``secrets`` those that may
    not (passwords, keys, tokens): a secret never prints, in a repr, a log line or an error.
    ``topic_prefix`` is the setup's, which the clients made here put before a topic's name.

    >>> login = {"security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": "svc"}
    >>> connection = KafkaConnection.with_properties(
    ...     "broker:9094", {**login, "sasl.password": "hunter2"}, topic_prefix="prod."
    ... )
    >>> connection.secrets, connection.login
    ({'sasl.password': SecretStr('**********')}, "user 'svc' with SASL SCRAM-SHA-512 over SASL_SSL")
    >>> config = connection.config(**{"group.id": "g"})
    >>> config["bootstrap.servers"], config["sasl.password"], config["group.id"], type(config["error_cb"]).__name__
    ('broker:9094', 'hunter2', 'g', 'ClientErrors')
    """

    model_config = ConfigDict(frozen=True)

    bootstrap: str
    properties: dict[str, str] = Field(default_factory=dict)
    secrets: dict[str, SecretStr] = Field(default_factory=dict)
    topic_prefix: str = ""

    @classmethod
    def with_properties(
        cls, bootstrap: str, properties: Mapping[str, str], *, topic_prefix: str = ""
    ) -> KafkaConnection:
        """The connection to ``bootstrap`` with ``properties``, the secret ones (by name) kept as
        secrets."""
        return cls(
            bootstrap=bootstrap,
            properties={key: value for key, value in properties.items() if not _secret(key)},
            secrets={key: SecretStr(value) for key, value in properties.items() if _secret(key)},
            topic_prefix=topic_prefix,
        )

    @classmethod
    def of(cls, target: ConnectionLike) -> KafkaConnection:
        """``target`` itself, or for a bare address a connection without login (a local or test
        broker).

        >>> KafkaConnection.of("localhost:9092").login
        'no login (PLAINTEXT)'
        """
        return target if isinstance(target, KafkaConnection) else cls(bootstrap=target)

    def librdkafka(self) -> dict[str, str]:
        """The connection properties as librdkafka takes them, the secrets revealed (never show
        this)."""
        return {
            **self.properties,
            **{key: value.get_secret_value() for key, value in self.secrets.items()},
        }

    @property
    def login(self) -> str:
        """How this connection logs in, as it may be shown (see :func:`login_of`)."""
        return login_of(self.properties)

    @property
    def principal(self) -> str | None:
        """The Kafka user this connection logs in as (its SASL user name); None when that is not
        known here (no SASL login: a plaintext listener; or a mechanism, GSSAPI or OAUTHBEARER,
        whose principal the broker derives).

        >>> KafkaConnection.with_properties("b:9094", {"sasl.mechanism": "SCRAM-SHA-512",
        ...                                            "sasl.username": "operator"}).principal
        'operator'
        >>> KafkaConnection.of("elsewhere:9092").principal is None
        True
        """
        mechanism = self.properties.get(
            "sasl.mechanism", self.properties.get("sasl.mechanisms", "")
        )
        username = self.properties.get("sasl.username")
        if mechanism.upper() in ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512") and username:
            return username
        return None

    def config(self, **properties: Any) -> dict[str, Any]:
        """The librdkafka configuration of a client of this connection: the address, the connection
        properties, an ``error_cb`` that raises :class:`AuthenticationFailed` when the broker
        refuses the login, then ``properties``.

        With :func:`fail_fast` on, the first configuration made for an address in this process first
        checks that a broker answers there.
        """
        if _FAIL_FAST.seconds is not None and self.bootstrap not in _FAIL_FAST.checked:
            # first: the check's own client is made with this method
            _FAIL_FAST.checked.add(self.bootstrap)
            from adaptloop.streams.admin import wait_for_broker

            wait_for_broker(self, _FAIL_FAST.seconds)
        return {
            "bootstrap.servers": self.bootstrap,
            **self.librdkafka(),
            "error_cb": ClientErrors(self.bootstrap, self.login),
            **properties,
        }

    def producer(self, **options: Any) -> EventProducer:
        """An :class:`~adaptloop.streams.producer.EventProducer` of this connection (``options``:
        its constructor's: ``transactional_id``, ``config``, ``on_error``, ...)."""
        from adaptloop.streams.producer import EventProducer

        return EventProducer(self, **options)

    def reader(
        self, topic: str, *, start: Start = "beginning", committed: bool = True
    ) -> TopicReader:
        """A :class:`~adaptloop.streams.reader.TopicReader` of the topic named ``topic`` (its full
        name), from ``start``; ``committed``: only records of committed transactions."""
        from adaptloop.streams.reader import TopicReader

        return TopicReader(self, topic, start=start, committed=committed)

    def group_consumer(self, group: str, **properties: Any) -> Consumer:
        """A consumer in ``group`` (to subscribe, or to ask the group's committed offsets);
        ``properties`` after the connection's."""
        from adaptloop.streams.producer import KAFKA_LOG

        return Consumer(self.config(**{"group.id": group, **properties}), logger=KAFKA_LOG)

    def admin(self, **properties: Any) -> AdminClient:
        """An admin client (topics, ACLs, metadata);
        :func:`~adaptloop.streams.admin.wait_for_broker` gives one once a broker answers."""
        return AdminClient(self.config(**properties))


ConnectionLike = KafkaConnection | str
"""Where a Kafka client connects: a :class:`KafkaConnection`, or a bare address (a broker without
login)."""


def login_of(properties: dict[str, str]) -> str:
    """How a client with these connection properties logs in, as it may be shown (never the
    password).

    >>> login_of({"security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": "svc"})
    "user 'svc' with SASL SCRAM-SHA-512 over SASL_SSL"
    >>> login_of({})
    'no login (PLAINTEXT)'
    """
    protocol = properties.get("security.protocol", "PLAINTEXT").upper()
    if not protocol.startswith("SASL"):
        return f"no login ({protocol})"
    # librdkafka's
    mechanism = properties.get("sasl.mechanism") or properties.get("sasl.mechanisms") or "GSSAPI"
    user = (
        properties.get("sasl.username")
        or properties.get("sasl.kerberos.principal")
        or ("(no user name set)")
    )
    return f"user {user!r} with SASL {mechanism.upper()} over {protocol}"


def refused_login(error: KafkaError) -> bool:
    """Whether librdkafka's ``error`` says the broker refused the login (a wrong user, password or
    mechanism), rather than that the connection broke while logging in (an outage: the broker went
    away).

    >>> refused_login(KafkaError(KafkaError._AUTHENTICATION, "SASL authentication error: Authentication failed"))
    True
    >>> refused_login(KafkaError(KafkaError._AUTHENTICATION, "SASL authentication failure: Disconnected"))
    False
    >>> refused_login(KafkaError(KafkaError._TRANSPORT, "Connection refused"))
    False
    """
    if error.code() != KafkaError._AUTHENTICATION:
        return False
    reason = error.str().lower()
    return not any(
        word in reason for word in ("disconnected", "broker handle destroyed", "timed out")
    )


@dataclass
class ClientErrors:
    """A client's ``error_cb``: remembers the last error librdkafka reported and how many, and
    raises :class:`AuthenticationFailed` (from the poll, consume or flush that served it) when the
    login is refused: librdkafka would retry it for ever, and the client would wait as for a broker
    that is down."""

    bootstrap: str
    login: str
    count: int = 0
    last: str = ""
    started: float = field(default_factory=time.monotonic)
    # raised already: the client is being given up, and its closing (where librdkafka reports the
    # refusal again) must not raise a second time from inside its teardown
    refused: bool = False

    def __call__(self, error: KafkaError) -> None:
        self.count += 1
        self.last = _without_address(error.str())
        if refused_login(error) and not self.refused:
            self.refused = True
            raise AuthenticationFailed(self.bootstrap, self.login, self.last)

    def summary(self) -> str:
        """What was tried and what came of it, in one line."""
        tried = f"tried for {time.monotonic() - self.started:.0f}s, {self.login}"
        return (
            f"{tried}: {self.last} ({self.count} error(s))"
            if self.count
            else (f"{tried}: no answer")
        )


def forget_frames(error: BaseException) -> None:
    """Let go of what the frames ``error`` (and the errors it chains to) passed through hold.

    Call it where such an error ends a command or a role, once its traceback is of no more use.
    confluent-kafka, on Python 3.11, keeps a reference to each exception a client's callback raises
    (:class:`ClientErrors`' :class:`AuthenticationFailed` above all): that exception never dies, nor
    its traceback's frames, nor the clients they hold, whose librdkafka threads then still run when
    the process exits, and crash it (SIGSEGV) if OpenSSL's exit cleanup frees its locks under a
    SASL_SSL reconnect. Cleared here, those clients are destroyed at once, their threads joined.
    """
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        traceback.clear_frames(current.__traceback__)  # frames still running are left as they are
        current.__traceback__ = None  # and those, once they return
        current = current.__cause__ or current.__context__


def _without_address(reason: str) -> str:
    """librdkafka's error text without the leading ``host:port/id: `` that names the broker
    connection.

    >>> _without_address("127.0.0.1:9/bootstrap: Connect to ipv4#127.0.0.1:9 failed: Connection refused")
    'Connect to ipv4#127.0.0.1:9 failed: Connection refused'
    """
    head, separator, rest = reason.partition(": ")
    return rest if separator and "/" in head and " " not in head else reason


@dataclass
class _FailFast:
    seconds: float | None = None
    checked: set[str] = field(default_factory=set)  # the addresses checked in this process


_FAIL_FAST = _FailFast()


def fail_fast(seconds: float | None) -> None:
    """Make the first client of each address in this process check that a broker answers there
    within ``seconds`` (raising :class:`~adaptloop.schemas.errors.BrokerUnavailable` or
    :class:`AuthenticationFailed` in one line); None: no check (each client waits as long as its own
    timeouts say). For command line runs, which should not wait 30 s per client to say that nothing
    listens."""
    _FAIL_FAST.seconds = seconds
    _FAIL_FAST.checked.clear()
