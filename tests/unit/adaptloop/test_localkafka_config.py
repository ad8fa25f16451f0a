"""The local broker's configuration: a secure home is closed everywhere (the controller too) and
stays so."""

from __future__ import annotations

import pytest

from adaptloop.localkafka import LocalKafka
from adaptloop.localkafka.security import CONTROLLER_PRINCIPAL
from adaptloop.schemas.errors import KafkaLaunchError


def _properties(kafka: LocalKafka) -> dict[str, str]:
    kafka.data_dir.mkdir(parents=True, exist_ok=True)
    lines = kafka._write_config().read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line)


def test_a_secure_broker_authenticates_its_controller_listener_and_has_no_anonymous_super_user(
    tmp_path,
):
    kafka = LocalKafka(
        tmp_path / "data", tmp_path / "cache", port=1, controller_port=2, secure_port=3
    )
    kafka.security.create(kafka.host)
    config = _properties(kafka)
    assert config["listeners"] == "CONTROLLER://127.0.0.1:2,SASL_SSL://127.0.0.1:3"
    assert "CONTROLLER:SSL" in config["listener.security.protocol.map"].split(",")
    assert config["listener.name.controller.ssl.client.auth"] == "required"
    assert config["listener.name.controller.ssl.truststore.location"] == str(
        kafka.security.controller_ca
    )
    assert config["super.users"].split(";") == ["User:admin", CONTROLLER_PRINCIPAL]


def test_a_home_made_secure_keeps_its_port_and_opens_plaintext_only_when_asked(tmp_path):
    first = LocalKafka(
        tmp_path / "data", tmp_path / "cache", port=1, controller_port=2, secure_port=3
    )
    first.security.create(first.host)
    first._secure_port_file.write_text("3\n")  # as its up() records

    # a plain `kafka up`
    again = LocalKafka(tmp_path / "data", tmp_path / "cache", port=1, controller_port=2)
    assert (again.secure_port, again.plaintext, again.bootstrap) == (3, False, "127.0.0.1:3")
    assert "PLAINTEXT://" not in _properties(again)["listeners"]

    asked = LocalKafka(
        tmp_path / "data", tmp_path / "cache", port=1, controller_port=2, plaintext=True
    )
    config = _properties(asked)
    assert asked.open_to_anonymous and "PLAINTEXT://127.0.0.1:1" in config["listeners"]
    assert config["super.users"].split(";") == [
        "User:admin",
        CONTROLLER_PRINCIPAL,
        "User:ANONYMOUS",
    ]


def test_a_plain_home_stays_plain(tmp_path):
    kafka = LocalKafka(tmp_path / "data", tmp_path / "cache", port=1, controller_port=2)
    config = _properties(kafka)
    assert (kafka.secure_port, kafka.plaintext) == (None, True)
    assert config["listener.security.protocol.map"] == "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT"
    assert "super.users" not in config and "authorizer.class.name" not in config


def test_a_worker_or_demo_without_a_bootstrap_is_told_how_to_log_in_to_a_secure_home(tmp_path):
    kafka = LocalKafka(
        tmp_path / "data", tmp_path / "cache", port=1, controller_port=2, secure_port=3
    )
    kafka.security.create(kafka.host)
    kafka._secure_port_file.write_text("3\n")
    again = LocalKafka(tmp_path / "data", tmp_path / "cache", port=1, controller_port=2)
    with pytest.raises(
        KafkaLaunchError,
        match=r"is secure: it has no plaintext "
        r"listener.*BOOTSTRAP=127.0.0.1:3",
    ):
        again.up_for_plaintext_clients()
