"""The loop on a secured cluster: SASL_SSL (SCRAM, TLS) with ACLs, each principal allowed its part only.

The worker logs in as ``worker``, services as ``service``, an operator as ``operator``, with the ACLs of
``adaptloop acls``. The loop learns every decision exactly; a client without credentials is refused; a
service cannot publish a model version, forge a training example or roll a model back.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient

from adaptloop.learners.spec import LearnerSpec
from adaptloop.schemas import ModelCommand, ModelVersion, OutcomeEvent, PredictionEvent, TrainingExample
from adaptloop.schemas.codec import encode
from adaptloop.schemas.topics import MODEL_COMMANDS, MODEL_UPDATES, TRAINING_EXAMPLES
from adaptloop.settings import Settings
from adaptloop.streams import EventProducer
from adaptloop.streams.acls import acl_bindings, apply_acls
from adaptloop.streams.admin import ensure_topics
from adaptloop.streams.connection import kafka_config, resolve_secrets, use_connection
from adaptloop.streams.versions import read_all

from .loop_helpers import no_role_stopped, running_worker

pytestmark = pytest.mark.kafka

N = 400


def _refused(producer_config: dict, topic: str, value: bytes) -> KafkaError | None:
    """The error a produce to ``topic`` ends with (None: it was written)."""
    errors: list[KafkaError] = []
    producer = Producer({**producer_config, "enable.idempotence": False, "message.timeout.ms": 10_000})
    producer.produce(topic, value, b"k", on_delivery=lambda error, _: errors.append(error))
    producer.flush(15)
    return errors[0] if errors else None


def test_the_loop_runs_with_least_privilege_and_refuses_what_a_principal_may_not_do(secure_kafka, tmp_path):
    run = uuid.uuid4().hex[:6]
    prefix, group = f"sec{run}.", f"g{run}"
    address = secure_kafka.secure_bootstrap
    users = {user: secure_kafka.client_properties(user) for user in ("admin", "worker", "service", "operator")}

    use_connection(address, resolve_secrets(users["admin"]))
    apply_acls(address, acl_bindings(prefix, group))
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
    ensure_topics(worker.bootstrap_address, prefix=prefix, partitions=2, replication=worker.replication)

    with running_worker(worker, tmp_path / "worker.log") as running:
        service = Settings(bootstrap=address, kafka=users["service"], topic_prefix=prefix)
        start = datetime.now(UTC)
        with EventProducer.from_settings(service) as producer:
            for i in range(N):
                at = start + timedelta(milliseconds=i)
                features = {"x": (i % 7) / 7.0}
                producer.send(
                    PredictionEvent(decision_id=f"d{i}", model="m", model_version="v0", features=features, timestamp=at)
                )
                producer.send(OutcomeEvent(decision_id=f"d{i}", label=i % 2 == 0, source="svc", timestamp=at))

        # The service reads the model's versions (what a ModelClient does): every decision learned, once.
        use_connection(address, service.kafka_properties())  # this process speaks as the service from here
        deadline = datetime.now(UTC) + timedelta(seconds=120)
        learned = 0
        while learned < N and datetime.now(UTC) < deadline:
            running.check_alive()
            versions = [v for v in read_all(address, MODEL_UPDATES, prefix) if isinstance(v, ModelVersion)]
            learned = max((v.examples_seen for v in versions), default=0)
        assert learned == N

        service_config = kafka_config(address)
        version = max(versions, key=lambda v: v.examples_seen)
        forged_version = version.model_copy(update={"examples_seen": 10**9})
        error = _refused(service_config, MODEL_UPDATES.full_name(prefix), encode(forged_version))
        assert error is not None and error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
        example = TrainingExample(
            model="m", decision_id="forged", model_version="v0", features={"x": 1.0}, label=True, predicted_at=start
        )
        error = _refused(service_config, TRAINING_EXAMPLES.full_name(prefix), encode(example))
        assert error is not None and error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
        rollback = ModelCommand(model="m", action="rollback", to_version=version.version, actor="svc")
        error = _refused(service_config, MODEL_COMMANDS.full_name(prefix), encode(rollback))
        assert error is not None and error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED

        # An operator may roll back.
        operator = Settings(bootstrap=address, kafka=users["operator"], topic_prefix=prefix)
        assert (
            _refused(kafka_config(operator.bootstrap_address), MODEL_COMMANDS.full_name(prefix), encode(rollback))
            is None
        )
    assert no_role_stopped(tmp_path / "worker.log")

    # No credentials: no answer at all from the secured listener.
    anonymous = AdminClient({"bootstrap.servers": address, "socket.timeout.ms": 3000, "log_level": 0})
    with pytest.raises(KafkaException):
        anonymous.list_topics(timeout=5)
    # The wrong password: refused too.
    wrong = {**resolve_secrets(users["service"]), "sasl.password": "not-the-password", "log_level": 0}
    with pytest.raises(KafkaException):
        AdminClient({"bootstrap.servers": address, **wrong}).list_topics(timeout=5)
