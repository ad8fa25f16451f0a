"""Topic administration: wait for the broker, create adaptloop's topics idempotently, delete a run's
topics."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

from adaptloop.schemas.errors import BrokerUnavailable, ConfigError, TimedOut, TopicConfigMismatch
from adaptloop.schemas.topics import ALL_TOPICS, Topic
from adaptloop.streams.connection import ClientErrors, ConnectionLike, KafkaConnection

log = logging.getLogger(__name__)

COMPACTED_CONFIG = {"cleanup.policy": "compact", "segment.ms": "3600000"}
"""Compacted topics roll a segment every hour. Kafka compacts closed segments only; by default a
segment closes after 7 days or 1 GB, and whoever reads the latest value of each key (a ModelClient
starting, the join restoring its state) would read up to a week of history."""

ARRIVAL_TIME_CONFIG = {"message.timestamp.type": "LogAppendTime"}
"""Topics whose quotas count by arrival: the broker stamps each record when it appends it."""


def topic_config(topic: Topic) -> dict[str, str]:
    """The configuration adaptloop creates ``topic`` with."""
    return {
        **(COMPACTED_CONFIG if topic.compacted else {}),
        **(ARRIVAL_TIME_CONFIG if topic.arrival_time else {}),
    }


def wait_for_broker(connection: ConnectionLike, timeout: float = 30.0) -> AdminClient:
    """Return an admin client of ``connection`` once a broker answers there; raise
    :class:`~adaptloop.schemas.errors.AuthenticationFailed` as soon as it refuses the login,
    :class:`BrokerUnavailable` (what was tried, how long, the last error) after ``timeout``."""
    connection = KafkaConnection.of(connection)
    # log_level 0: refused connections while a broker starts are expected; the error_cb keeps the
    # last one.
    config = connection.config(**{"socket.connection.setup.timeout.ms": 5000, "log_level": 0})
    errors: ClientErrors = config["error_cb"]
    # an admin client not returned is destroyed here, its threads joined (see forget_frames)
    with contextlib.ExitStack() as unless_returned:
        admin = unless_returned.enter_context(AdminClient(config))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                metadata = admin.list_topics(
                    timeout=min(5.0, max(0.5, deadline - time.monotonic()))
                )
                if metadata.brokers:
                    unless_returned.pop_all()
                    return admin
            except KafkaException as error:
                errors.last = errors.last or str(error.args[0].str() if error.args else error)
            admin.poll(0.2)  # serves the error_cb: a refused login raises here
    raise BrokerUnavailable(connection.bootstrap, errors.summary())


@dataclass(frozen=True)
class Replication:
    """How the topics adaptloop creates are replicated: ``factor`` copies of each partition, of
    which ``min_insync`` must have a write (acks=all) before it counts. None: from the cluster's
    size (3 copies, 2 in sync where there are 3 brokers or more; as many as there are brokers
    otherwise)."""

    factor: int | None = None
    min_insync: int | None = None

    def resolve(self, brokers: int) -> tuple[int, int]:
        """(factor, min_insync) on a cluster of ``brokers`` brokers.

        >>> Replication().resolve(1), Replication().resolve(5), Replication(factor=2).resolve(5)
        ((1, 1), (3, 2), (2, 1))
        """
        factor = self.factor if self.factor is not None else min(3, brokers)
        if factor > brokers:
            raise ConfigError(
                f"replication_factor {factor} needs {factor} brokers; the cluster has {brokers}"
            )
        return factor, self.min_insync if self.min_insync is not None else max(
            1, min(2, factor - 1)
        )

    def new_topic(
        self, admin: AdminClient, name: str, partitions: int, config: dict[str, str]
    ) -> NewTopic:
        factor, min_insync = self.resolve(len(admin.list_topics(timeout=30).brokers))
        return NewTopic(
            name,
            num_partitions=partitions,
            replication_factor=factor,
            config={**config, "min.insync.replicas": str(min_insync)},
        )


BY_CLUSTER_SIZE = Replication()


def ensure_topics(
    connection: ConnectionLike,
    *,
    prefix: str = "",
    partitions: int = 6,
    topics: Iterable[Topic] = ALL_TOPICS,
    replication: Replication = BY_CLUSTER_SIZE,
    timeout: float = 30.0,
) -> list[str]:
    """Create the topics that do not exist yet; return the names created.

    Existing topics are checked: a compacted topic must be compacted, and
    co-partitioned topics (``predictions``/``outcomes``) must agree on their
    partition count, else the join could not see both sides of a decision.
    """
    admin = wait_for_broker(connection, timeout)
    wanted = {topic.full_name(prefix): topic for topic in topics}
    existing = admin.list_topics(timeout=timeout).topics
    missing = [
        replication.new_topic(admin, name, partitions, topic_config(topic))
        for name, topic in wanted.items()
        if name not in existing
    ]
    created: list[str] = []
    if missing:
        for name, future in admin.create_topics(missing, operation_timeout=timeout).items():
            try:
                future.result()
                created.append(name)
            except KafkaException as error:
                if error.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise
        _wait_for_leaders(admin, [topic.topic for topic in missing], timeout)
    _check_existing(admin, wanted, timeout)
    return created


def _wait_for_leaders(admin: AdminClient, names: list[str], timeout: float) -> None:
    """Wait until every partition of ``names`` has a leader: a topic the controller has just created
    cannot be read or written until then (NOT_LEADER_FOR_PARTITION), and the caller is about to use
    it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        topics = admin.list_topics(timeout=timeout).topics
        if all(
            name in topics
            and topics[name].error is None
            and topics[name].partitions
            and all(p.leader >= 0 and p.error is None for p in topics[name].partitions.values())
            for name in names
        ):
            return
        time.sleep(0.1)


def _check_existing(admin: AdminClient, wanted: dict[str, Topic], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        metadata = admin.list_topics(timeout=timeout).topics
        if (
            all(name in metadata and metadata[name].partitions for name in wanted)
            or time.monotonic() > deadline
        ):
            break
        time.sleep(0.1)
    counts = {name: len(metadata[name].partitions) for name in wanted if name in metadata}
    for group in {topic.copartitioned for topic in wanted.values() if topic.copartitioned}:
        copartitioned = {
            name: counts.get(name) for name, topic in wanted.items() if topic.copartitioned == group
        }
        if len(set(copartitioned.values())) > 1:
            raise TopicConfigMismatch(
                f"co-partitioned topics disagree on partitions: {copartitioned}; "
                "recreate them with the same count or use a new ADAPTLOOP_TOPIC_PREFIX"
            )
    for name, config in describe(admin, [n for n, t in wanted.items() if t.arrival_time]).items():
        if config["message.timestamp.type"].value != ARRIVAL_TIME_CONFIG["message.timestamp.type"]:
            log.warning(
                "topic %r keeps the times its producers give (CreateTime): feedback quotas "
                "count by the time "
                "the worker reads a record instead, which a backlog bunches up; "
                "kafka-configs.sh --alter "
                "--entity-type topics --entity-name %s --add-config "
                "message.timestamp.type=LogAppendTime",
                name,
                name,
            )
    compacted = [name for name, topic in wanted.items() if topic.compacted]
    if compacted:
        for name, config in describe(admin, compacted).items():
            policy = config["cleanup.policy"].value
            if "compact" not in policy:
                raise TopicConfigMismatch(
                    f"topic {name!r} must be compacted (cleanup.policy=compact), has {policy!r}"
                )
            segment_ms = int(config["segment.ms"].value)
            # a topic made by an earlier version
            if segment_ms > int(COMPACTED_CONFIG["segment.ms"]):
                log.warning(
                    "topic %r rolls a segment every %.0f h, and Kafka compacts closed "
                    "segments only: readers "
                    "of its latest values read that much history; kafka-configs.sh --alter "
                    "--entity-type "
                    "topics --entity-name %s --add-config segment.ms=%s",
                    name,
                    segment_ms / 3.6e6,
                    name,
                    COMPACTED_CONFIG["segment.ms"],
                )


def describe(admin: AdminClient, names: list[str]) -> dict[str, Any]:
    """The configuration of each named topic (name -> config entries by key)."""
    if not names:
        return {}
    resources = [ConfigResource(ConfigResource.Type.TOPIC, name) for name in names]
    return {
        resource.name: future.result()
        for resource, future in admin.describe_configs(resources).items()
    }


def arrival_stamped(
    connection: ConnectionLike, names: list[str], timeout: float = 30.0
) -> dict[str, bool]:
    """Whether each named topic stamps records with the time the broker appended them
    (LogAppendTime)."""
    configs = describe(wait_for_broker(connection, timeout), names)
    return {
        name: config["message.timestamp.type"].value == "LogAppendTime"
        for name, config in configs.items()
    }


def ensure_changelog(
    connection: ConnectionLike,
    name: str,
    partitions: int,
    replication: Replication = BY_CLUSTER_SIZE,
    timeout: float = 30.0,
) -> int:
    """Create the compacted topic ``name`` (a role's state changelog) with ``partitions`` partitions
    if it does not exist, and wait until each has a leader (a restore reads them all); return its
    partition count."""
    admin = wait_for_broker(connection, timeout)
    topics = admin.list_topics(timeout=timeout).topics
    if name in topics and topics[name].partitions:
        return len(topics[name].partitions)
    new = replication.new_topic(admin, name, partitions, COMPACTED_CONFIG)
    for future in admin.create_topics([new]).values():
        try:
            future.result()
        except KafkaException as error:
            if error.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
    deadline = time.monotonic() + timeout
    while True:
        found = admin.list_topics(name, timeout=10).topics[name].partitions
        if len(found) >= partitions and all(
            p.leader >= 0 and p.error is None for p in found.values()
        ):
            return len(found)
        if time.monotonic() > deadline:
            raise TimedOut(
                f"{name} was created but its partitions have no leader after {timeout:.0f}s"
            )
        time.sleep(0.1)


def partition_counts(
    connection: ConnectionLike, names: Iterable[str], timeout: float = 10.0
) -> dict[str, int]:
    """The number of partitions of each named topic that exists."""
    metadata = wait_for_broker(connection, timeout).list_topics(timeout=timeout).topics
    return {name: len(metadata[name].partitions) for name in names if name in metadata}


def delete_topics(connection: ConnectionLike, prefix: str, timeout: float = 60.0) -> list[str]:
    """Delete every topic whose name starts with ``prefix`` (a run's topics, its join changelog
    too); return their names.

    A broker's background work (log cleaning, checkpoints) visits every partition it holds: an idle
    broker holding 11,700 partitions (a day of benchmark and test runs) uses 0.13 of a core, and
    0.02 once they are deleted.
    """
    if not prefix:
        raise ConfigError("a prefix is required: this never deletes every topic")
    admin = wait_for_broker(connection, timeout)
    names = sorted(
        name for name in admin.list_topics(timeout=timeout).topics if name.startswith(prefix)
    )
    if names:
        for future in admin.delete_topics(names, operation_timeout=timeout).values():
            try:
                future.result()
            except KafkaException as error:
                # deleted meanwhile: fine
                if error.args[0].code() != KafkaError.UNKNOWN_TOPIC_OR_PART:
                    raise
        # The controller has deleted them; wait until the metadata says so too (a caller may create
        # them again).
        deadline = time.monotonic() + timeout
        while (
            set(names) & set(admin.list_topics(timeout=timeout).topics)
            and time.monotonic() < deadline
        ):
            time.sleep(0.1)
    return names
