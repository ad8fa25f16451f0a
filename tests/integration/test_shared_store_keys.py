"""Two worker hosts, one deployment key: workers with their own homes share a model store in S3 (a
real S3 API server) and the key `adaptloop keys create` made; one is SIGKILLed and the other takes
its model over from its checkpoint. No worker makes a key of its own or signs a file it did not
write: every version verifies with the deployment's public key, and a file planted in the store
stays unsigned and is never loaded by a ModelClient."""

from __future__ import annotations

import os
import pickle
import re
import time
from pathlib import Path

import pytest
from river import datasets
from typer.testing import CliRunner

from adaptloop import ModelClient
from adaptloop.cli import app
from adaptloop.learners.spec import LearnerSpec
from adaptloop.learners.storage import Storage
from adaptloop.learners.store import version_of
from adaptloop.schemas import ModelVersion
from adaptloop.schemas.topics import MODEL_UPDATES
from adaptloop.settings import Settings
from adaptloop.streams import EventProducer
from adaptloop.worker import kill_worker_process, stop_worker_process

from .loop_helpers import Worker, loop_settings, read_until, send_decisions

pytestmark = pytest.mark.kafka

MODELS = ("alpha", "churn")  # on partitions 0 and 1 of 2: one for each worker
ROWS = 600


class _Planted:
    """A pickle that runs code when loaded: it writes a file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_two_hosts_share_a_store_and_one_key_one_dies_the_other_takes_over_and_a_planted_file_stays_refused(
    kafka_bootstrap, s3_bucket, tmp_path
):
    secrets = tmp_path / "secrets"
    made = CliRunner().invoke(
        app, ["keys", "create", "--private", str(secrets / "model-signing.key")]
    )
    assert made.exit_code == 0, made.output
    specs = [
        LearnerSpec(name=name, recipe="logistic", checkpoint_every=100, checkpoint_seconds=1)
        for name in MODELS
    ]
    host_a = loop_settings(kafka_bootstrap, tmp_path / "host-a", specs, partitions=2).model_copy(
        update={
            "store": s3_bucket,
            "model_signing_key": secrets / "model-signing.key",
            "log_level": "debug",
        }
    )
    host_b = host_a.model_copy(update={"home": tmp_path / "host-b"})
    storage = Storage(s3_bucket)
    marker = tmp_path / "ran"
    planted = pickle.dumps(_Planted(marker))
    # in the store before any worker starts
    storage.write(f"alpha/versions/{version_of(planted)}.pkl", planted)

    rows = list(datasets.Phishing())[:ROWS]
    workers = [Worker(host_a, tmp_path / "worker-a.log"), Worker(host_b, tmp_path / "worker-b.log")]
    try:
        _wait_for_assignments(workers, [[0], [1]])
        owner = {name: _owner(workers, name) for name in MODELS}
        assert sorted(owner.values()) == [0, 1]
        _send(host_a, rows[: ROWS // 2], first=0)
        _versions_until(host_a, ROWS // 2, workers)
        kill_worker_process(workers[0].process)  # SIGKILL: no checkpoint on the way out
        _wait_for_assignments(workers[1:], [[0, 1]], timeout=240)
        _send(host_a, rows[ROWS // 2 :], first=ROWS // 2)
        versions = _versions_until(host_a, ROWS, workers[1:])
        workers[1].check_alive()
    finally:
        for worker in workers:
            stop_worker_process(worker.process)

    for host in ("host-a", "host-b"):
        assert not (tmp_path / host / "keys").exists(), f"{host} made a key of its own"
    # The killed worker's model went on from its checkpoint on the other host: its versions' numbers
    # go on.
    for name in MODELS:
        numbers = [v.sequence or 0 for v in versions if v.model == name]
        # In publication order, each one more than the last (or the same: a record published again
        # after the crash), from 1 on, with no gap at the hand-over.
        assert numbers == sorted(numbers) and sorted(set(numbers)) == list(
            range(1, len(set(numbers)) + 1)
        ), numbers
        assert max(v.examples_seen for v in versions if v.model == name) == ROWS
    taken_over = next(name for name in MODELS if owner[name] == 0)
    assert re.search(
        rf"published {taken_over} \w+ \((\d+) examples\)", (tmp_path / "worker-b.log").read_text()
    )

    # A service on a third host, with only the deployment's public key: every version in the store
    # verifies.
    service = Settings(
        bootstrap=kafka_bootstrap,
        topic_prefix=host_a.topic_prefix,
        home=tmp_path / "service-host",
        store=s3_bucket,
        model_verify_key=secrets / "model-signing.pub",
    )
    store = service.model_store()
    stored = {(v.model, v.version) for v in versions if v.version in store.versions(v.model)}
    assert {
        (name, max((v for v in versions if v.model == name), key=lambda v: v.examples_seen).version)
        for name in MODELS
    } <= stored
    for name, version in stored:
        store.load_bytes(name, version)
    planted_version = version_of(planted)
    assert not storage.exists(f"alpha/versions/{planted_version}.sig")  # nobody signed it
    assert store.unsigned() == [f"alpha/versions/{planted_version}.pkl"]

    # A record naming the planted file, newer than any: the client refuses the file and serves the
    # real version.
    newest = max((v for v in versions if v.model == "alpha"), key=lambda v: v.sequence or 0)
    forged = newest.model_copy(
        update={
            "version": planted_version,
            "sha256": "0" * 64,
            "sequence": (newest.sequence or 0) + 100,
        }
    )
    with EventProducer(kafka_bootstrap, topic_prefix=host_a.topic_prefix) as producer:
        producer.send(forged)
    with ModelClient.from_settings("alpha", service) as client:
        assert client.wait_for(lambda served: served.version == newest.version, timeout=60)
        x, _ = rows[0]
        assert client.predict(x).model_version == newest.version
    assert not marker.exists()  # never unpickled


def _send(settings: Settings, rows, first: int) -> None:
    with EventProducer(settings.bootstrap_address, topic_prefix=settings.topic_prefix) as producer:
        for n, name in enumerate(MODELS):
            send_decisions(producer, rows, first=first + n * 100_000, model=name)


def _versions_until(settings: Settings, examples: int, workers: list[Worker]) -> list[ModelVersion]:
    """The versions published, once every model has one of ``examples`` examples."""
    seen = read_until(
        settings,
        [MODEL_UPDATES],
        lambda events: (
            {e.model for e in events if isinstance(e, ModelVersion) and e.examples_seen == examples}
            == set(MODELS)
        ),
        timeout=300,
        worker=workers[0],
    )
    versions = [e for e in seen if isinstance(e, ModelVersion)]
    assert {v.model for v in versions if v.examples_seen == examples} == set(MODELS), (
        "not learned in time"
    )
    return versions


def _assigned(worker: Worker) -> list[int]:
    lines = (
        re.findall(r"learner assigned \[(.*?)\]", worker.log_file.read_text())
        if worker.log_file.exists()
        else []
    )
    return sorted({int(p) for p in re.findall(r"\((\d+),", lines[-1])}) if lines else []


def _wait_for_assignments(
    workers: list[Worker], expected: list[list[int]], timeout: float = 120
) -> None:
    deadline = time.monotonic() + timeout
    while sorted(_assigned(w) for w in workers) != expected and time.monotonic() < deadline:
        for worker in workers:
            worker.check_alive()
        time.sleep(0.5)
    assert sorted(_assigned(w) for w in workers) == expected, (
        "the learners did not take the partitions"
    )


def _owner(workers: list[Worker], model: str) -> int:
    from adaptloop.schemas.topics import partition_for

    partition = partition_for(model.encode(), 2)
    return next(n for n, worker in enumerate(workers) if partition in _assigned(worker))
