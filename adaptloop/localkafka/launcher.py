"""A real single-node Apache Kafka 4.x broker (KRaft), assembled from Maven Central jars.

``install`` fetches the jars once into the cache (keyed by the pom's hash, so the
second start needs no network); ``up`` formats storage once, starts the broker
detached, and waits until it answers; ``down`` stops it and keeps the data.

With ``secure_port`` the home is made secure: the broker has a SASL_SSL listener (SCRAM-SHA-512
users, a locally made CA, :mod:`adaptloop.localkafka.security`), enforces ACLs with Kafka's
StandardAuthorizer, and its KRaft controller listener takes TLS with the broker's own client
certificate only (so no one reaches the controller, ``--bootstrap-controller``, without that file).
The super users are ``admin`` and the broker's own certificate; a secure home keeps that port and
opens no plaintext listener for clients at its next starts, whatever the settings say, unless
``plaintext=True`` asks for one explicitly: then that listener's clients, ``User:ANONYMOUS`` (a
principal only a plaintext connection gets), are super users too (the test suite's broker). A home
without a secured listener has plaintext listeners only and no authorizer.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from adaptloop.localkafka.security import (
    CONTROLLER_PRINCIPAL,
    MECHANISM,
    USERS,
    SecureFiles,
    client_properties,
)
from adaptloop.schemas.errors import BrokerUnavailable, KafkaLaunchError
from adaptloop.settings import Settings
from adaptloop.streams.admin import wait_for_broker
from adaptloop.streams.connection import KafkaConnection, resolve_secrets

log = logging.getLogger(__name__)

MIN_JAVA = 17
DEFAULT_SECURE_PORT = 9094


@dataclass(frozen=True)
class BrokerStatus:
    running: bool
    pid: int | None
    bootstrap: str
    data_dir: Path
    log_file: Path
    already_running: bool = False


def _resource(name: str) -> bytes:
    return resources.files("adaptloop.localkafka").joinpath(name).read_bytes()


def _free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def java_version(java: str) -> int:
    """The major version of ``java`` (e.g. 17)."""
    output = subprocess.run([java, "-version"], capture_output=True, text=True, check=False).stderr
    match = re.search(r'version "(\d+)(?:\.(\d+))?', output)
    if not match:
        raise KafkaLaunchError(f"could not read the version of {java}: {output.strip()[:200]}")
    major = int(match.group(1))
    return int(match.group(2)) if major == 1 and match.group(2) else major


def new_cluster_id() -> str:
    """A Kafka cluster id: 22 url-safe base64 characters, never starting with '-' (as Kafka's Uuid).

    >>> all(len(new_cluster_id()) == 22 and not new_cluster_id().startswith("-") for _ in range(1000))
    True
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cluster_id.startswith("-"):
            return cluster_id


class LocalKafka:
    """Manage a local broker under ``data_dir``, with jars cached under ``cache_dir``.

    >>> kafka = LocalKafka(Path("/tmp/k"), Path("/tmp/cache"), port=19092, controller_port=19093)
    >>> kafka.bootstrap
    '127.0.0.1:19092'
    """

    def __init__(
        self,
        data_dir: Path,
        cache_dir: Path,
        *,
        host: str = "127.0.0.1",
        port: int = 9092,
        controller_port: int = 9093,
        heap: str = "512m",
        start_timeout: float = 90.0,
        secure_port: int | None = None,
        plaintext: bool | None = None,
        secure: bool = False,
    ) -> None:
        self.data_dir = data_dir.absolute()
        # a secure home keeps its port
        if secure_port is None and (secure or self.security.exists()):
            secure_port = self._recorded_secure_port() or DEFAULT_SECURE_PORT
        if plaintext is None:
            # a secure home opens a plaintext listener only when asked
            plaintext = secure_port is None
        if secure_port is None and not plaintext:
            raise KafkaLaunchError("a broker without its plaintext listener needs a secure port")
        self.secure_port, self.plaintext = secure_port, plaintext
        self.cache_dir = cache_dir.absolute()
        self.host = host
        self.port = port
        self.controller_port = controller_port
        self.heap = heap
        self.start_timeout = start_timeout
        pom = _resource("pom.xml")
        self.lib_dir = self.cache_dir / f"kafka-{hashlib.sha256(pom).hexdigest()[:12]}" / "lib"

    @property
    def bootstrap(self) -> str:
        """Where clients connect: the plaintext listener, else the secured one."""
        return f"{self.host}:{self.port}" if self.plaintext else self.secure_bootstrap

    @property
    def secure_bootstrap(self) -> str:
        if self.secure_port is None:
            raise KafkaLaunchError(
                "this broker has no secured listener (ADAPTLOOP_KAFKA_SECURE_PORT)"
            )
        return f"{self.host}:{self.secure_port}"

    @property
    def security(self) -> SecureFiles:
        """The CA, the server certificate and the users' passwords of the secured listener."""
        return SecureFiles(self.data_dir / "security")

    def client_properties(self, user: str) -> dict[str, str]:
        """The ``kafka`` setting that logs in to the secured listener as ``user`` (see
        :data:`USERS`)."""
        return client_properties(self.security, user)

    def secure_connection(self, user: str) -> KafkaConnection:
        """The connection to the secured listener as ``user`` (see :data:`USERS`)."""
        return KafkaConnection.with_properties(
            self.secure_bootstrap, resolve_secrets(self.client_properties(user))
        )

    @property
    def admin_connection(self) -> KafkaConnection:
        """How this broker's own commands reach it: its plaintext listener, else the secured one as
        admin."""
        return (
            KafkaConnection(bootstrap=self.bootstrap)
            if self.plaintext
            else self.secure_connection("admin")
        )

    def up_for_plaintext_clients(self) -> BrokerStatus:
        """:meth:`up` for a caller that connects without credentials (a worker or demo given no
        bootstrap); a secure home refuses, saying how to log in instead."""
        if not self.plaintext:
            raise KafkaLaunchError(
                f"the local broker's home {self.data_dir} is secure: it has no plaintext "
                "listener. Start it with "
                "`adaptloop kafka up` and log in: "
                f"ADAPTLOOP_BOOTSTRAP={self.secure_bootstrap} and ADAPTLOOP_KAFKA "
                "set to a user's setting (it prints them)"
            )
        return self.up()

    @property
    def open_to_anonymous(self) -> bool:
        """Whether a secured broker also has a plaintext listener, whose clients are super users."""
        return self.plaintext and self.secure_port is not None

    @property
    def _secure_port_file(self) -> Path:
        return self.data_dir / "security" / "secure.port"

    def _recorded_secure_port(self) -> int | None:
        try:
            return int(self._secure_port_file.read_text())
        except (OSError, ValueError):
            return None

    @property
    def log_file(self) -> Path:
        return self.data_dir / "broker.log"

    @property
    def _pid_file(self) -> Path:
        return self.data_dir / "broker.pid"

    @property
    def _log_dirs(self) -> Path:
        return self.data_dir / "logs"

    # -- install ---------------------------------------------------------------------------

    def install(self) -> Path:
        """Fetch the broker's jars with Maven (once); return the lib directory."""
        done = self.lib_dir / ".complete"
        if done.exists():
            return self.lib_dir
        mvn = shutil.which("mvn")
        if mvn is None:
            raise KafkaLaunchError(
                "Maven (mvn) is needed once to fetch the Kafka jars from Maven Central and "
                "was not found; "
                "install it (apt-get install maven) or set ADAPTLOOP_BOOTSTRAP to an "
                "existing broker"
            )
        work = self.lib_dir.parent
        work.mkdir(parents=True, exist_ok=True)
        with open(work / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # two processes installing at once share one download
            if done.exists():
                return self.lib_dir
            (work / "pom.xml").write_bytes(_resource("pom.xml"))
            log.info("fetching Kafka jars into %s", self.lib_dir)
            result = subprocess.run(
                [
                    mvn,
                    "-q",
                    "-B",
                    "-f",
                    str(work / "pom.xml"),
                    "dependency:copy-dependencies",
                    f"-DoutputDirectory={self.lib_dir}",
                    "-DincludeScope=runtime",
                ],
                capture_output=True,
                text=True,
                check=False,
            )
            if result.returncode != 0:
                raise KafkaLaunchError(
                    "mvn could not fetch the Kafka "
                    f"jars:\n{(result.stdout + result.stderr)[-3000:]}"
                )
            done.touch()
        return self.lib_dir

    # -- lifecycle -------------------------------------------------------------------------

    def pid(self) -> int | None:
        """The broker's pid if our broker process is alive."""
        try:
            pid = int(self._pid_file.read_text())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError):
            return None
        # Guard against a recycled pid: it must be a kafka.Kafka JVM on our data dir.
        if b"kafka.Kafka" not in cmdline or str(self.data_dir).encode() not in cmdline:
            return None
        return pid

    def status(self) -> BrokerStatus:
        pid = self.pid()
        return BrokerStatus(pid is not None, pid, self.bootstrap, self.data_dir, self.log_file)

    def up(self) -> BrokerStatus:
        """Start the broker unless ours is already running; return once it answers."""
        pid = self.pid()
        if pid is not None:
            self._wait(self.start_timeout)
            return BrokerStatus(
                True, pid, self.bootstrap, self.data_dir, self.log_file, already_running=True
            )
        java = self._java()
        ports = [
            ("broker", self.port),
            ("controller", self.controller_port),
            ("secured", self.secure_port),
        ]
        for name, port in ports:
            if port is None:
                continue
            if not _free(self.host, port):
                raise KafkaLaunchError(
                    f"{self.host}:{port} ({name} port) is taken by another process; stop "
                    "it, choose another port "
                    "(ADAPTLOOP_KAFKA_PORT / ADAPTLOOP_KAFKA_CONTROLLER_PORT / "
                    "ADAPTLOOP_KAFKA_SECURE_PORT) or point "
                    "ADAPTLOOP_BOOTSTRAP at it"
                )
        lib = self.install()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        formatted = (self._log_dirs / "meta.properties").exists()
        if self.secure_port is not None and not self.security.exists():
            if formatted:  # SCRAM users are made when the storage is formatted
                raise KafkaLaunchError(
                    f"the broker's storage in {self.data_dir} was formatted without users "
                    "for a secured listener; "
                    "start the secured broker in another home (ADAPTLOOP_HOME), or remove "
                    "that directory"
                )
            self.security.create(self.host)
        if self.secure_port is not None:
            # a home made secure before the controller needed it
            if not self.security.controller.exists():
                self.security.create_controller(self.host)
            self._secure_port_file.write_text(f"{self.secure_port}\n")
            if self.open_to_anonymous:
                log.warning(
                    "the secured broker in %s also listens in plaintext at %s:%d: anyone "
                    "who reaches that port is "
                    "a super user (ACLs do not apply to them)",
                    self.data_dir,
                    self.host,
                    self.port,
                )
        properties = self._write_config()
        log4j = self.data_dir / "log4j2.yaml"
        log4j.write_bytes(_resource("log4j2.yaml"))
        classpath = f"{lib}/*"
        if not formatted:
            self._format(java, classpath, properties)
        with open(self.log_file, "ab") as out:
            process = subprocess.Popen(
                [
                    java,
                    f"-Xmx{self.heap}",
                    "-XX:+UseG1GC",
                    "-Djava.awt.headless=true",
                    f"-Dlog4j2.configurationFile={log4j}",
                    f"-Dadaptloop.data={self.data_dir}",
                    "-cp",
                    classpath,
                    "kafka.Kafka",
                    str(properties),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # survives the CLI that started it
            )
        self._pid_file.write_text(str(process.pid))
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise KafkaLaunchError(
                    f"the broker exited with code {process.returncode}:\n{self._log_tail()}"
                )
            try:
                self._wait(2.0)
                return BrokerStatus(True, process.pid, self.bootstrap, self.data_dir, self.log_file)
            except BrokerUnavailable:
                continue
        self.down()
        raise KafkaLaunchError(
            f"the broker did not answer within {self.start_timeout:.0f}s:\n{self._log_tail()}"
        )

    def down(self, timeout: float = 30.0) -> bool:
        """Stop the broker (data is kept); False if it was not running."""
        pid = self.pid()
        if pid is None:
            self._pid_file.unlink(missing_ok=True)
            return False
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.pid() is not None:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)  # reap it if it is our child
            time.sleep(0.1)
        if self.pid() is not None:
            os.kill(pid, signal.SIGKILL)
            time.sleep(0.5)
        self._pid_file.unlink(missing_ok=True)
        return True

    # -- helpers ---------------------------------------------------------------------------

    def _wait(self, timeout: float) -> None:
        """Until the broker answers on its client listener (logged in as admin on a secured-only
        broker)."""
        wait_for_broker(self.admin_connection, timeout)

    def _java(self) -> str:
        home = os.environ.get("JAVA_HOME")
        java = (
            str(Path(home) / "bin" / "java")
            if home and (Path(home) / "bin" / "java").exists()
            else shutil.which("java")
        )
        if java is None:
            raise KafkaLaunchError(
                f"Java {MIN_JAVA}+ is needed to run the local Kafka broker and was not "
                "found; install it "
                "(apt-get install openjdk-17-jre-headless), set JAVA_HOME, or set "
                "ADAPTLOOP_BOOTSTRAP to an existing "
                "broker"
            )
        version = java_version(java)
        if version < MIN_JAVA:
            raise KafkaLaunchError(
                f"Kafka 4 needs Java {MIN_JAVA}+, {java} is Java {version}; set JAVA_HOME "
                "to a newer JDK"
            )
        return java

    def _write_config(self) -> Path:
        path = self.data_dir / "server.properties"
        listeners = [f"CONTROLLER://{self.host}:{self.controller_port}"]
        advertised, protocols = (
            [],
            [f"CONTROLLER:{'PLAINTEXT' if self.secure_port is None else 'SSL'}"],
        )
        if self.plaintext:
            listeners.append(f"PLAINTEXT://{self.host}:{self.port}")
            advertised.append(f"PLAINTEXT://{self.host}:{self.port}")
            protocols.append("PLAINTEXT:PLAINTEXT")
        if self.secure_port is not None:
            listeners.append(f"SASL_SSL://{self.host}:{self.secure_port}")
            advertised.append(f"SASL_SSL://{self.host}:{self.secure_port}")
            protocols.append("SASL_SSL:SASL_SSL")
        lines = [
            "process.roles=broker,controller",
            "node.id=1",
            f"controller.quorum.bootstrap.servers={self.host}:{self.controller_port}",
            f"listeners={','.join(listeners)}",
            f"advertised.listeners={','.join(advertised)}",
            "controller.listener.names=CONTROLLER",
            f"listener.security.protocol.map={','.join(protocols)}",
            f"inter.broker.listener.name={'PLAINTEXT' if self.plaintext else 'SASL_SSL'}",
            f"log.dirs={self._log_dirs}",
            "num.partitions=1",
            # Topics are created explicitly, with their partitions and compaction.
            "auto.create.topics.enable=false",
            "offsets.topic.replication.factor=1",
            "offsets.topic.num.partitions=10",
            "transaction.state.log.replication.factor=1",
            "transaction.state.log.min.isr=1",
            "share.coordinator.state.topic.replication.factor=1",
            "share.coordinator.state.topic.min.isr=1",
            "group.initial.rebalance.delay.ms=0",
            "log.cleaner.backoff.ms=1000",
        ]
        if self.secure_port is not None:
            files = self.security
            lines += [
                f"sasl.enabled.mechanisms={MECHANISM}",
                f"sasl.mechanism.inter.broker.protocol={MECHANISM}",
                (
                    f"listener.name.sasl_ssl.{MECHANISM.lower()}.sasl.jaas.config="
                    "org.apache.kafka.common.security.scram.ScramLoginModule required "
                    'username="admin" '
                    f'password="{files.password("admin")}";'
                ),
                "ssl.keystore.type=PEM",
                f"ssl.keystore.location={files.server}",
                "ssl.truststore.type=PEM",
                f"ssl.truststore.location={files.ca}",
                # The controller listener: TLS, and only the broker's own certificate gets in. The
                # broker's side of that connection (its registration, heartbeats, the metadata log)
                # uses the same listener settings.
                "listener.name.controller.ssl.client.auth=required",
                "listener.name.controller.ssl.keystore.type=PEM",
                f"listener.name.controller.ssl.keystore.location={files.controller}",
                "listener.name.controller.ssl.truststore.type=PEM",
                f"listener.name.controller.ssl.truststore.location={files.controller_ca}",
                "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
                f"super.users={';'.join(self._super_users())}",
                "allow.everyone.if.no.acl.found=false",
            ]
        path.touch(mode=0o600)  # it holds the admin's password
        path.write_text("\n".join([*lines, ""]))
        return path

    def _super_users(self) -> list[str]:
        """The admin, the broker itself on its controller listener, and, only with an explicitly
        asked plaintext listener, that listener's anonymous clients: SASL and the controller's TLS
        always name someone else."""
        return [
            "User:admin",
            CONTROLLER_PRINCIPAL,
            *(["User:ANONYMOUS"] if self.open_to_anonymous else []),
        ]

    def _format(self, java: str, classpath: str, properties: Path) -> None:
        users = []
        if self.secure_port is not None:
            for user in USERS:
                users += [
                    "--add-scram",
                    f"{MECHANISM}=[name={user},password={self.security.password(user)}]",
                ]
        result = subprocess.run(
            [
                java,
                "-cp",
                classpath,
                "kafka.tools.StorageTool",
                "format",
                "--standalone",
                f"--cluster-id={new_cluster_id()}",
                "-c",
                str(properties),
                *users,
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise KafkaLaunchError(
                f"formatting Kafka storage failed:\n{(result.stdout + result.stderr)[-3000:]}"
            )

    def _log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no broker log)"

    @classmethod
    def from_settings(cls, settings: Settings, *, secure: bool = False) -> LocalKafka:
        """The local broker of ``settings`` (``secure``: make its home secure if it is not)."""
        return cls(
            settings.kafka_data_dir,
            settings.cache_dir,
            host=settings.kafka_host,
            port=settings.kafka_port,
            controller_port=settings.kafka_controller_port,
            heap=settings.kafka_heap,
            start_timeout=settings.kafka_start_timeout,
            secure_port=settings.kafka_secure_port,
            plaintext=settings.kafka_plaintext,
            secure=secure,
        )

    def java_command(self, main_class: str, *args: str) -> list[str]:
        """A command line running ``main_class`` from the broker's jars (e.g. the console
        producer)."""
        return [
            self._java(),
            "-cp",
            f"{self.install()}/*",
            f"-Dlog4j2.configurationFile={self.data_dir / 'log4j2.yaml'}",
            main_class,
            *args,
        ]
