"""Shared fixtures: a real Kafka broker for the session, and an isolated topic prefix per test."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from adaptloop.schemas.errors import AdaptloopError
from adaptloop.streams.admin import ensure_topics, wait_for_broker
from adaptloop.testing import test_broker

SKIP_ENV = "ADAPTLOOP_SKIP_KAFKA_TESTS"


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
        pytest.fail(f"no Kafka broker for integration tests: {error} (set {SKIP_ENV}=1 to skip them on purpose)")


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
            future.result()


@pytest.fixture
def topic_prefix(kafka_bootstrap: str) -> str:
    """A fresh prefix with every adaptloop topic created, so tests never see each other's records."""
    prefix = f"t{uuid.uuid4().hex[:10]}."
    ensure_topics(kafka_bootstrap, prefix=prefix, partitions=3)
    return prefix
