"""A real Kafka broker for tests: testcontainers when a Docker engine answers, the local broker
otherwise.

Both give the same thing, a bootstrap address. If no broker can be started the
caller gets :class:`~adaptloop.schemas.errors.KafkaLaunchError`; tests turn that into a
failure, never a skip, unless ``ADAPTLOOP_SKIP_KAFKA_TESTS=1`` says so.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import Iterator
from pathlib import Path

from adaptloop.localkafka import LocalKafka
from adaptloop.schemas.errors import KafkaLaunchError
from adaptloop.settings import Settings

log = logging.getLogger(__name__)

KAFKA_IMAGE = "apache/kafka:4.1.1"

# The same single-node KRaft broker as docker-compose.yml and the local launcher.
KRAFT_ENV = {
    "KAFKA_NODE_ID": "1",
    "KAFKA_PROCESS_ROLES": "broker,controller",
    "KAFKA_LISTENERS": "PLAINTEXT://:9092,CONTROLLER://:9093",
    "KAFKA_CONTROLLER_LISTENER_NAMES": "CONTROLLER",
    "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
    "KAFKA_CONTROLLER_QUORUM_VOTERS": "1@localhost:9093",
    "KAFKA_AUTO_CREATE_TOPICS_ENABLE": "false",
    "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR": "1",
    "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR": "1",
    "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR": "1",
    "KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS": "0",
}


def free_ports(count: int) -> list[int]:
    """``count`` distinct free ports (held open together while choosing, so none repeats)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def free_port() -> int:
    return free_ports(1)[0]


def docker_available() -> bool:
    """True if a Docker engine answers (not just a docker client on the PATH)."""
    try:
        import docker

        client = docker.from_env(timeout=3)
        return bool(client.ping())
    except Exception:  # any failure means: no usable engine
        return False


@contextlib.contextmanager
def test_broker(work_dir: Path) -> Iterator[str]:
    """Yield the bootstrap address of a real broker for the duration of the block.

    ``ADAPTLOOP_TEST_BOOTSTRAP`` points at an existing broker instead.
    """
    existing = os.environ.get("ADAPTLOOP_TEST_BOOTSTRAP")
    if existing:
        yield existing
        return
    if docker_available():
        yield from _container_broker()
        return
    global _LOCAL
    settings = Settings()
    port, controller_port, secure_port = free_ports(3)
    kafka = LocalKafka(
        work_dir / "kafka",
        settings.cache_dir,
        port=port,
        controller_port=controller_port,
        heap=settings.kafka_heap,
        start_timeout=settings.kafka_start_timeout,
        secure_port=secure_port,
        # the suite's tests use it; its anonymous clients are super users (see secure_listener)
        plaintext=True,
    )
    try:
        kafka.up()
    except Exception as error:
        kafka.down()
        raise KafkaLaunchError(f"could not start the local test broker: {error}") from error
    _LOCAL = kafka
    try:
        yield kafka.bootstrap
    finally:
        _LOCAL = None
        kafka.down()


_LOCAL: LocalKafka | None = None


def secure_listener() -> LocalKafka:
    """The running local test broker, whose SASL_SSL listener (``secure_bootstrap``) enforces ACLs.

    Its plaintext listener, which the other tests use, stays a super user's: its clients are
    ``User:ANONYMOUS``, a super user of this broker only because it has that listener. No other
    listener yields that principal (the SASL_SSL one names the user who logged in, the controller's
    TLS one the broker's own certificate, the only one it accepts), so the ACLs, and the controller,
    are closed to anyone on the secured listener.
    """
    if _LOCAL is None:
        raise KafkaLaunchError(
            "the secured listener is the local test broker's; this run's broker is another "
            "(ADAPTLOOP_TEST_BOOTSTRAP or a container)"
        )
    return _LOCAL


def _container_broker() -> Iterator[str]:
    from testcontainers.core.container import DockerContainer

    from adaptloop.streams.admin import wait_for_broker

    port = free_port()
    container = DockerContainer(KAFKA_IMAGE).with_bind_ports(9092, port)
    for name, value in KRAFT_ENV.items():
        container = container.with_env(name, value)
    log.info("starting %s with testcontainers on port %d", KAFKA_IMAGE, port)
    with container.with_env(
        "KAFKA_ADVERTISED_LISTENERS", f"PLAINTEXT://localhost:{port}"
    ) as started:
        bootstrap = f"{started.get_container_host_ip()}:{port}"
        wait_for_broker(bootstrap, timeout=120)
        yield bootstrap
