"""The loop on a secured cluster: SASL_SSL (SCRAM, TLS) with ACLs, each principal allowed its part
only.

The worker logs in as ``worker``, services as ``service``, an operator as ``operator``, with the
ACLs of ``adaptloop acls``. The loop learns every decision exactly; a client without credentials is
refused; a service cannot publish a model version, forge a training example or roll a model back.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import (
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
)

from adaptloop.learners.spec import LearnerSpec
from adaptloop.schemas import (
    DeadLetter,
    DeadLetterReplay,
    ModelCommand,
    ModelSpecRecord,
    ModelVersion,
    OutcomeEvent,
    PredictionEvent,
    TrainingExample,
)
from adaptloop.schemas.codec import encode
from adaptloop.schemas.topics import (
    DEAD_LETTER_REPLAYS,
    DEAD_LETTERS,
    MODEL_COMMANDS,
    MODEL_SPECS,
    MODEL_UPDATES,
    OUTCOMES,
    TRAINING_EXAMPLES,
)
from adaptloop.settings import Settings
from adaptloop.streams import EventProducer
from adaptloop.streams.acls import acl_bindings, apply_acls
from adaptloop.streams.admin import ensure_topics
from adaptloop.streams.connection import resolve_secrets
from adaptloop.streams.versions import read_all

from .loop_helpers import no_role_stopped, running_worker

pytestmark = pytest.mark.kafka

N = 400


def _refused(producer_config: dict, topic: str, value: bytes) -> KafkaError | None:
    """The error a produce to ``topic`` ends with (None: it was written)."""
    errors: list[KafkaError] = []
    producer = Producer(
        {**producer_config, "enable.idempotence": False, "message.timeout.ms": 10_000}
    )
    producer.produce(topic, value, b"k", on_delivery=lambda error, _: errors.append(error))
    producer.flush(15)
    return errors[0] if errors else None


def test_the_loop_runs_with_least_privilege_and_refuses_what_a_principal_may_not_do(
    secure_kafka, tmp_path
):
    run = uuid.uuid4().hex[:6]
    prefix, group = f"sec{run}.", f"g{run}"
    address = secure_kafka.secure_bootstrap
    users = {
        user: secure_kafka.client_properties(user)
        for user in ("admin", "worker", "service", "operator")
    }

    admin = secure_kafka.secure_connection("admin")
    apply_acls(admin, acl_bindings(prefix, group))
    spec = LearnerSpec(name="m", recipe="logistic", checkpoint_every=100, checkpoint_seconds=1)
    worker = Settings(
        bootstrap=address,
        kafka=users["worker"],
        topic_prefix=prefix,
        group=group,
        partitions=2,
        home=tmp_path / "home",
        models=[spec],
        metrics_port=None,
        snapshot_seconds=None,
    )
    ensure_topics(admin, prefix=prefix, partitions=2, replication=worker.replication)

    with running_worker(worker, tmp_path / "worker.log") as running:
        service = Settings(bootstrap=address, kafka=users["service"], topic_prefix=prefix)
        start = datetime.now(UTC)
        with EventProducer.from_settings(service) as producer:
            for i in range(N):
                at = start + timedelta(milliseconds=i)
                features = {"x": (i % 7) / 7.0}
                producer.send(
                    PredictionEvent(
                        decision_id=f"d{i}",
                        model="m",
                        model_version="v0",
                        features=features,
                        timestamp=at,
                    )
                )
                producer.send(
                    OutcomeEvent(decision_id=f"d{i}", label=i % 2 == 0, source="svc", timestamp=at)
                )

        # The service reads the model's versions (what a ModelClient does): every decision learned,
        # once.
        deadline = datetime.now(UTC) + timedelta(seconds=120)
        learned = 0
        while learned < N and datetime.now(UTC) < deadline:
            running.check_alive()
            versions = [
                v
                for v in read_all(service.connection(), MODEL_UPDATES, prefix)
                if isinstance(v, ModelVersion)
            ]
            learned = max((v.examples_seen for v in versions), default=0)
        assert learned == N

        service_config = service.connection().config()
        version = max(versions, key=lambda v: v.examples_seen)
        forged_version = version.model_copy(update={"examples_seen": 10**9})
        error = _refused(service_config, MODEL_UPDATES.full_name(prefix), encode(forged_version))
        assert error is not None and error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
        example = TrainingExample(
            model="m",
            decision_id="forged",
            model_version="v0",
            features={"x": 1.0},
            label=True,
            predicted_at=start,
        )
        error = _refused(service_config, TRAINING_EXAMPLES.full_name(prefix), encode(example))
        assert error is not None and error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
        rollback = ModelCommand(
            model="m", action="rollback", to_version=version.version, actor="svc"
        )
        error = _refused(service_config, MODEL_COMMANDS.full_name(prefix), encode(rollback))
        assert error is not None and error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED

        # An operator may roll back.
        operator = Settings(bootstrap=address, kafka=users["operator"], topic_prefix=prefix)
        assert (
            _refused(
                operator.connection().config(), MODEL_COMMANDS.full_name(prefix), encode(rollback)
            )
            is None
        )
    assert no_role_stopped(tmp_path / "worker.log")

    # No credentials: no answer at all from the secured listener.
    anonymous = AdminClient(
        {"bootstrap.servers": address, "socket.timeout.ms": 3000, "log_level": 0}
    )
    with pytest.raises(KafkaException):
        anonymous.list_topics(timeout=5)
    # The wrong password: refused too.
    wrong = {
        **resolve_secrets(users["service"]),
        "sasl.password": "not-the-password",
        "log_level": 0,
    }
    with pytest.raises(KafkaException):
        AdminClient({"bootstrap.servers": address, **wrong}).list_topics(timeout=5)


def _acl_command(
    kafka, config: dict[str, str], tmp_path, *args: str
) -> subprocess.CompletedProcess[str]:
    """Kafka's own kafka-acls tool, talking to the broker's controller listener directly."""
    properties = tmp_path / f"client-{uuid.uuid4().hex}.properties"
    properties.write_text("".join(f"{k}={v}\n" for k, v in config.items()))
    command = kafka.java_command(
        "org.apache.kafka.tools.AclCommand",
        "--bootstrap-controller",
        f"{kafka.host}:{kafka.controller_port}",
        "--command-config",
        str(properties),
        *args,
    )
    return subprocess.run(command, capture_output=True, text=True, timeout=180, check=False)


def test_no_one_without_the_brokers_certificate_reaches_the_controller(secure_kafka, tmp_path):
    """The escalation of issue 28: no credentials, through --bootstrap-controller, list the ACLs and
    grant ``service`` everything. Both are refused, in plaintext and in TLS without the broker's own
    certificate."""
    kafka = secure_kafka
    quick = {"request.timeout.ms": "5000", "default.api.timeout.ms": "15000"}
    tls = {**quick, "security.protocol": "SSL", "ssl.truststore.type": "PEM"}
    attempts = {
        "plaintext": quick,
        "TLS trusting the controller's CA": {
            **tls,
            "ssl.truststore.location": str(kafka.security.controller_ca),
        },
        "SASL_SSL as admin": {
            **quick,
            "security.protocol": "SASL_SSL",
            "sasl.mechanism": "SCRAM-SHA-512",
            "sasl.jaas.config": "org.apache.kafka.common.security.scram.ScramLoginModule required "
            f'username="admin" password="{kafka.security.password("admin")}";',
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": str(kafka.security.controller_ca),
        },
    }
    everything = (
        "--add",
        "--allow-principal",
        "User:service",
        "--operation",
        "All",
        "--topic",
        "*",
    )
    for how, config in attempts.items():
        listed = _acl_command(kafka, config, tmp_path, "--list")
        assert listed.returncode != 0, f"{how}: the ACLs were listed:\n{listed.stdout}"
        granted = _acl_command(kafka, config, tmp_path, *everything)
        assert granted.returncode != 0, f"{how}: the grant went through:\n{granted.stdout}"

    # Nothing was granted: the admin, on the secured listener, sees no ACL of service on every
    # topic.
    admin = kafka.secure_connection("admin").admin()
    wildcard = AclBindingFilter(
        ResourceType.TOPIC,
        "*",
        ResourcePatternType.LITERAL,
        None,
        None,
        AclOperation.ANY,
        AclPermissionType.ANY,
    )
    assert admin.describe_acls(wildcard, request_timeout=30).result() == []


def _cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    """``adaptloop <args>`` in a process of its own, logged in with ``settings``' kafka setting."""
    env = {
        **os.environ,
        "ADAPTLOOP_BOOTSTRAP": settings.bootstrap_address,
        "ADAPTLOOP_KAFKA": orjson.dumps(settings.kafka).decode(),
        "ADAPTLOOP_TOPIC_PREFIX": settings.topic_prefix,
        "ADAPTLOOP_GROUP": settings.group,
        "ADAPTLOOP_HOME": str(settings.home),
        "COLUMNS": "250",
    }
    return subprocess.run(
        [sys.executable, "-m", "adaptloop", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_an_operator_replays_dead_letters_and_rolls_back_recorded_as_the_user_it_logged_in_as(
    secure_kafka, tmp_path
):
    run = uuid.uuid4().hex[:6]
    prefix, group = f"ops{run}.", f"g{run}"
    address = secure_kafka.secure_bootstrap
    users = {
        user: secure_kafka.client_properties(user)
        for user in ("admin", "worker", "service", "operator")
    }
    admin = secure_kafka.secure_connection("admin")
    apply_acls(admin, acl_bindings(prefix, group))
    ensure_topics(admin, prefix=prefix, partitions=1)
    spec = LearnerSpec(
        name="m", recipe="logistic", checkpoint_every=50, checkpoint_seconds=1, min_examples=0
    )
    home = tmp_path / "home"
    worker = Settings(
        bootstrap=address,
        kafka=users["worker"],
        topic_prefix=prefix,
        group=group,
        partitions=1,
        home=home,
        models=[spec],
        metrics_port=None,
        snapshot_seconds=None,
    )
    operator = worker.model_copy(update={"kafka": users["operator"], "models": []})
    service = Settings(bootstrap=address, kafka=users["service"], topic_prefix=prefix)
    spoofed = "ceo@company (spoofed)"

    with running_worker(worker, tmp_path / "worker.log") as running:
        start = datetime.now(UTC)
        with EventProducer.from_settings(service) as producer:
            for i in range(110):
                at = start + timedelta(milliseconds=i)
                features = {"x": (i % 7) / 7.0}
                producer.send(
                    PredictionEvent(
                        decision_id=f"d{i}",
                        model="m",
                        model_version="v0",
                        features=features,
                        timestamp=at,
                    )
                )
                # The last 10: an integer label for a binary model, which the join refuses (dead
                # letters).
                label: object = i % 2 == 0 if i < 100 else 1
                producer.send(
                    OutcomeEvent(decision_id=f"d{i}", label=label, source="svc", timestamp=at)
                )

        # The operator's view: the letters, then the versions.
        as_operator = operator.connection()
        deadline = datetime.now(UTC) + timedelta(seconds=180)
        letters: list = []
        versions: list = []
        while (
            len(letters) < 10 or not any(v.examples_seen == 100 for v in versions)
        ) and datetime.now(UTC) < deadline:
            running.check_alive()
            letters = [
                d
                for d in read_all(as_operator, DEAD_LETTERS, prefix)
                if isinstance(d, DeadLetter) and d.source_topic == OUTCOMES.full_name(prefix)
            ]
            versions = [
                v
                for v in read_all(as_operator, MODEL_UPDATES, prefix)
                if isinstance(v, ModelVersion)
            ]
        assert len(letters) == 10
        first = min(versions, key=lambda v: v.examples_seen)

        # An operator replays them, in a transaction of its own; each record names the user it
        # logged in as.
        replayed = _cli(
            operator,
            "deadletters",
            "replay",
            "--reason",
            "is an integer",
            "--actor",
            spoofed,
            "--yes",
        )
        assert replayed.returncode == 0, replayed.stdout + replayed.stderr
        assert "replayed 10 record(s)" in replayed.stdout
        records = [
            r
            for r in read_all(as_operator, DEAD_LETTER_REPLAYS, prefix)
            if isinstance(r, DeadLetterReplay)
        ]
        assert len(records) == 10
        assert {(r.principal, r.actor) for r in records} == {("operator", spoofed)}

        # A rollback: the version published for it carries the principal beside the free-text actor.
        rolled = _cli(
            operator, "rollback", "m", "--to", first.version, "--actor", spoofed, "--timeout", "120"
        )
        assert rolled.returncode == 0, rolled.stdout + rolled.stderr
        updates = [
            v for v in read_all(as_operator, MODEL_UPDATES, prefix) if isinstance(v, ModelVersion)
        ]
        rollbacks = [
            (v.principal, v.actor, v.parent is not None) for v in updates if v.reason == "rollback"
        ]
        assert rollbacks == [("operator", spoofed, True)]
        commands = [
            c for c in read_all(as_operator, MODEL_COMMANDS, prefix) if isinstance(c, ModelCommand)
        ]
        assert [(c.principal, c.actor) for c in commands] == [("operator", spoofed)]

        # An operator declares a model; the worker, which may not write model-specs, seeded nothing
        # (its roles take "m" from its settings).
        added = _cli(operator, "models", "add", "m2", "--recipe", "hoeffding", "--actor", spoofed)
        assert added.returncode == 0, added.stdout + added.stderr
        declared = [
            r for r in read_all(as_operator, MODEL_SPECS, prefix) if isinstance(r, ModelSpecRecord)
        ]
        assert [(r.model, r.principal, r.actor) for r in declared] == [("m2", "operator", spoofed)]

        # No one but an operator writes dead-letter-replays (it would mark letters replayed),
        # model-commands or model-specs.
        forged = DeadLetterReplay(
            letter=f"{DEAD_LETTERS.full_name(prefix)}:0@0",
            source_topic="x",
            partition=0,
            offset=0,
            actor="svc",
        )
        for user in ("service", "worker"):
            config = secure_kafka.secure_connection(user).config()
            error = _refused(config, DEAD_LETTER_REPLAYS.full_name(prefix), encode(forged))
            assert error is not None and error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, user
            error = _refused(config, MODEL_COMMANDS.full_name(prefix), encode(commands[0]))
            assert error is not None and error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, user
            error = _refused(config, MODEL_SPECS.full_name(prefix), encode(declared[0]))
            assert error is not None and error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, user
    assert no_role_stopped(tmp_path / "worker.log")
