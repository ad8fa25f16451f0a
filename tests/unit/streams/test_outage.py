"""What a role does about an error (:func:`classify`), and how a refused login is told from an
outage."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError, KafkaException

from adaptloop.schemas.errors import (
    AuthenticationFailed,
    BrokerUnavailable,
    ConfigError,
    DeliveryFailed,
    SpecChanged,
    TimedOut,
    UnknownModel,
)
from adaptloop.streams.connection import ClientErrors, login_of, refused_login
from adaptloop.streams.outage import classify, is_outage, raised_kafka_error


def kafka(code: int, reason: str = "") -> KafkaException:
    return KafkaException(KafkaError(code, reason) if reason else KafkaError(code))


@pytest.mark.parametrize(
    "code",
    [
        KafkaError.NOT_COORDINATOR,  # the archive's commit after a broker restart
        KafkaError.COORDINATOR_NOT_AVAILABLE,
        KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
        KafkaError.REBALANCE_IN_PROGRESS,
        KafkaError.ILLEGAL_GENERATION,
        KafkaError.UNKNOWN_MEMBER_ID,
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError.REQUEST_TIMED_OUT,
        KafkaError._TRANSPORT,
        KafkaError._ALL_BROKERS_DOWN,
        KafkaError._TIMED_OUT,
        KafkaError._WAIT_COORD,
    ],
)
def test_a_broker_that_is_away_or_moving_is_an_outage_for_every_role(code):
    assert classify(kafka(code)) == "outage"


@pytest.mark.parametrize(
    "code",
    [
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError.GROUP_AUTHORIZATION_FAILED,
        KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
        KafkaError.CLUSTER_AUTHORIZATION_FAILED,
        KafkaError.SASL_AUTHENTICATION_FAILED,
    ],
)
def test_a_denied_login_or_acl_is_a_refusal(code):
    assert classify(kafka(code)) == "refused"


def test_adaptloops_own_errors_are_classified_by_what_they_mean():
    login = AuthenticationFailed(
        "b:9094", "user 'worker' with SASL SCRAM-SHA-512 over SASL_SSL", "Authentication failed"
    )
    assert [
        classify(error)
        for error in (
            BrokerUnavailable("b:9092"),
            TimedOut("no answer"),
            DeliveryFailed([("t", b"k", "Local: Message timed out")]),
            DeliveryFailed([("t", b"k", "Broker: Message size too large")]),
            login,
            ConfigError("a wrong setting"),
            SpecChanged("another recipe"),
            UnknownModel("m"),
            ValueError("a bug"),
            kafka(KafkaError.INVALID_CONFIG),
        )
    ] == [
        "outage",
        "outage",
        "outage",
        "crash",
        "refused",
        "refused",
        "refused",
        "crash",
        "crash",
        "crash",
    ]


def _close_after(first: BaseException, then: BaseException, *, cause: bool) -> None:
    """Raise ``then`` while handling ``first`` (as its cause, or only as its context)."""
    try:
        raise first
    except type(first) as error:
        raise then from (error if cause else None)


def test_an_error_raised_while_handling_an_outage_is_still_an_outage():
    """A consumer closing after its coordinator moved raises again on the way out (its revoke
    commits)."""
    with pytest.raises(RuntimeError) as raised:
        _close_after(
            kafka(KafkaError.NOT_COORDINATOR),
            RuntimeError("the consumer could not close"),
            cause=False,
        )
    assert raised.value.__cause__ is None and raised.value.__context__ is not None
    assert classify(raised.value) == "outage"


def test_a_refusal_anywhere_in_the_chain_wins():
    with pytest.raises(ConfigError) as raised:
        _close_after(kafka(KafkaError._TRANSPORT), ConfigError("a wrong setting"), cause=True)
    assert classify(raised.value) == "refused"


def test_the_broker_refusing_a_login_is_told_from_a_login_cut_short():
    assert refused_login(
        KafkaError(
            KafkaError._AUTHENTICATION,
            "sasl_ssl://b:9094/bootstrap: SASL authentication error: Authentication failed "
            "during authentication "
            "due to invalid credentials with SASL mechanism SCRAM-SHA-512",
        )
    )
    assert not refused_login(
        KafkaError(KafkaError._AUTHENTICATION, "SASL authentication failure: Disconnected")
    )
    assert not refused_login(
        KafkaError(KafkaError._TRANSPORT, "Connect to ipv4#127.0.0.1:9 failed: Connection refused")
    )


def test_a_clients_error_callback_raises_a_refused_login_naming_user_and_mechanism_but_never_the_password():
    properties = {
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "worker",
        "sasl.password": "hunter2",
    }
    errors = ClientErrors("b:9094", login_of(properties))
    errors(
        KafkaError(
            KafkaError._TRANSPORT,
            "b:9094/bootstrap: Connect to ipv4#b:9094 failed: Connection refused",
        )
    )
    assert (errors.count, errors.last) == (1, "Connect to ipv4#b:9094 failed: Connection refused")
    with pytest.raises(AuthenticationFailed) as raised:
        errors(
            KafkaError(
                KafkaError._AUTHENTICATION,
                "sasl_ssl://b:9094/bootstrap: SASL authentication error: failed",
            )
        )
    message = str(raised.value)
    assert message.startswith(
        "authentication failed at Kafka b:9094 as user 'worker' with SASL SCRAM-SHA-512 "
        "over SASL_SSL: "
        "SASL authentication error: failed;"
    )
    assert "hunter2" not in message
    assert classify(raised.value) == "refused"


def test_a_bare_kafka_error_from_a_consumer_closing_is_classified_and_caught():
    """confluent-kafka's Consumer.close() raises a KafkaError itself, which only a bare ``except:``
    catches."""
    closing = KafkaError(KafkaError._WAIT_COORD, "Commit failed: Local: Waiting for coordinator")
    assert classify(closing) == "outage"  # type: ignore[arg-type]
    try:
        raise closing  # type: ignore[misc]
    except:  # noqa: E722
        caught = raised_kafka_error()
    assert isinstance(caught, KafkaException) and caught.args[0].code() == KafkaError._WAIT_COORD
    assert classify(caught) == "outage"
    try:
        raise ValueError("not Kafka's")
    except:  # noqa: E722
        assert raised_kafka_error() is None


def test_a_delivery_failure_is_an_outage_only_while_records_wait_or_every_failure_timed_out():
    queued = DeliveryFailed([("t", b"k", "Broker: Message size too large")], undelivered=3)
    mixed = DeliveryFailed(
        [("t", b"a", "Local: Message timed out"), ("t", b"b", "Broker: Invalid message")]
    )
    assert [classify(queued), classify(mixed)] == ["outage", "crash"]


def test_a_retriable_error_is_an_outage_whatever_its_code_and_an_exception_without_an_error_is_a_crash():
    retriable = KafkaException(KafkaError(KafkaError.INVALID_CONFIG, "try again", retriable=True))
    assert [classify(retriable), classify(KafkaException("no KafkaError inside"))] == [
        "outage",
        "crash",
    ]


def test_an_error_chain_that_loops_back_on_itself_is_classified_once_through():
    first, second = ValueError("a bug"), kafka(KafkaError.NOT_COORDINATOR)
    first.__context__, second.__context__ = second, first
    assert classify(first) == "outage" and is_outage(second)
    assert not is_outage(ValueError("alone"))
