"""Shared fixtures: a real Kafka broker for the session, and an isolated topic prefix per test."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import KafkaError, KafkaException

from adaptloop.localkafka import LocalKafka
from adaptloop.schemas.errors import AdaptloopError
from adaptloop.settings import Settings
from adaptloop.streams.admin import ensure_topics, wait_for_broker
from adaptloop.testing import secure_listener, test_broker
from tests.release import Release, build_release

SKIP_ENV = "ADAPTLOOP_SKIP_KAFKA_TESTS"
SETTINGS_ENV = re.compile(
    "ADAPTLOOP_(" + "|".join(name.upper() for name in Settings.model_fields) + ")(__.*)?",
    re.IGNORECASE,
)


@pytest.fixture(autouse=True)
def _settings_from_the_test_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Unset the developer's ``ADAPTLOOP_<SETTING>`` variables for the test (and the processes it
    starts): a test gets the settings it makes itself, whatever the shell exported
    (``ADAPTLOOP_KAFKA_PORT`` would otherwise change what ``Settings()`` reads). The test suite's
    own knobs (``ADAPTLOOP_TEST_*``, ``ADAPTLOOP_SKIP_*``...) name no setting and stay; session
    fixtures (the broker) were made before and keep what they read."""
    for name in list(os.environ):
        if SETTINGS_ENV.fullmatch(name):
            monkeypatch.delenv(name)


def pytest_configure(config: pytest.Config) -> None:
    """A run of the tests has a data directory of its own: nothing a test starts without a home of
    its own (the default one, ``$XDG_DATA_HOME/adaptloop``) writes into the user's."""
    data = tempfile.mkdtemp(prefix="adaptloop-tests-data-")
    os.environ["XDG_DATA_HOME"] = data
    config.add_cleanup(lambda: shutil.rmtree(data, ignore_errors=True))


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Bootstrap address of a real broker: testcontainers if Docker answers, else the local broker.

    No broker is a failure, not a skip, unless ADAPTLOOP_SKIP_KAFKA_TESTS=1.
    """
    if os.environ.get(SKIP_ENV) == "1":
        pytest.skip(f"{SKIP_ENV}=1: Kafka tests skipped on request")
    try:
        with test_broker(tmp_path_factory.mktemp("broker")) as bootstrap:
            yield bootstrap
    except AdaptloopError as error:
        pytest.fail(
            f"no Kafka broker for integration tests: {error} (set {SKIP_ENV}=1 to skip "
            "them on purpose)"
        )


@pytest.fixture(autouse=True)
def _leave_the_broker_as_found(request: pytest.FixtureRequest) -> Iterator[None]:
    """Delete the topics a broker test created, once it is over: a broker's background work grows
    with the partitions it holds, and later tests would pay for earlier ones."""
    if "kafka_bootstrap" not in request.fixturenames:
        yield
        return
    admin = wait_for_broker(request.getfixturevalue("kafka_bootstrap"))
    before = set(admin.list_topics(timeout=30).topics)
    yield
    created = sorted(set(admin.list_topics(timeout=30).topics) - before)
    if created:
        for future in admin.delete_topics(created, operation_timeout=60).values():
            try:
                future.result()
            except KafkaException as error:  # deleted meanwhile (the test deleted its own): fine
                if error.args[0].code() != KafkaError.UNKNOWN_TOPIC_OR_PART:
                    raise


@pytest.fixture
def topic_prefix(kafka_bootstrap: str) -> str:
    """A fresh prefix with every adaptloop topic created, so tests never see each other's
    records."""
    prefix = f"t{uuid.uuid4().hex[:10]}."
    ensure_topics(kafka_bootstrap, prefix=prefix, partitions=3)
    return prefix


@pytest.fixture
def secure_kafka(kafka_bootstrap: str) -> LocalKafka:
    """The session broker's SASL_SSL listener (ACLs enforced): ``secure_bootstrap`` and its users'
    settings."""
    try:
        return secure_listener()
    except AdaptloopError as error:
        pytest.fail(str(error))


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real S3 API server on 127.0.0.1 (moto's server, in its own process): the endpoint,
    host:port.

    Clients find it through the store URI's query (``?endpoint_override=...&scheme=http``) and the
    AWS variables set here.
    """
    import subprocess
    import sys
    import time
    from pathlib import Path

    from adaptloop.testing import free_port

    server = str(
        Path(sys.executable).parent / "moto_server"
    )  # this environment's (the dev extra's), not another on PATH
    port = free_port()
    log = tmp_path_factory.mktemp("s3") / "moto.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [server, "-H", "127.0.0.1", "-p", str(port)], stdout=out, stderr=subprocess.STDOUT
        )
    os.environ.update(
        {
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
    )
    import socket

    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the S3 API server did not start:\n{log.read_text()[-2000:]}")
            time.sleep(0.2)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(10)


@pytest.fixture
def s3_bucket(s3_server: str) -> str:
    """A fresh bucket on the S3 API server; its URI with the options to reach it."""
    import pyarrow.fs as pafs

    name = f"b{uuid.uuid4().hex[:12]}"
    fs = pafs.S3FileSystem(endpoint_override=s3_server, scheme="http", allow_bucket_creation=True)
    fs.create_dir(name)
    return f"s3://{name}/models?endpoint_override={s3_server}&scheme=http"


@pytest.fixture(scope="session")
def release(tmp_path_factory: pytest.TempPathFactory) -> Release:
    """This checkout's sdist and the wheel built from it, built once for the session (the Rust core
    compiled once): the packaging tests check them, install them, and build the image with the same
    cargo target."""
    return build_release(tmp_path_factory.mktemp("release"))


NODE_TOOLS = Path(__file__).parent / "node"


@pytest.fixture(scope="session")
def node_tools() -> Path:
    """tests/node with its npm packages (Ajv), installed from the npm registry on first use."""
    npm = shutil.which("npm")
    assert npm is not None, "npm is needed for the tests of other languages (Node.js 20 with npm)"
    if not (NODE_TOOLS / "node_modules" / "ajv").exists():
        subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"],
            cwd=NODE_TOOLS,
            check=True,
            capture_output=True,
            timeout=300,
        )
    return NODE_TOOLS


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's chromium, installed with apt-get on first use when the machine lacks it."""
    found = shutil.which("chromium")
    if found is None:
        subprocess.run(
            ["apt-get", "install", "-y", "--no-install-recommends", "chromium"],
            check=True,
            capture_output=True,
            timeout=900,
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
        )
        found = shutil.which("chromium")
    assert found is not None, (
        "chromium is needed to check the HTML report (apt-get install chromium)"
    )
    return found
