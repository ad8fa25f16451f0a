"""The generated ACLs: who writes the topics whose records name an operator, and in which
transactions."""

from __future__ import annotations

import pytest
from confluent_kafka.admin import AclOperation, ResourcePatternType, ResourceType

from adaptloop.schemas.topics import ALL_TOPICS, DEAD_LETTER_REPLAYS, MODEL_COMMANDS, MODEL_SPECS
from adaptloop.streams.acls import acl_bindings, login_principal, replay_transactional_id
from adaptloop.streams.connection import KafkaConnection


def _writers(grants, name: str) -> set[str]:
    return {
        g.principal
        for g in grants
        if g.operation is AclOperation.WRITE
        and g.resource is ResourceType.TOPIC
        and name.startswith(g.name)
        if g.pattern is ResourcePatternType.PREFIXED or g.name == name
    }


def test_only_the_operator_writes_commands_specs_and_replay_records_and_every_other_topic_keeps_its_writers():
    grants = acl_bindings("prod.", "adaptloop")
    assert _writers(grants, MODEL_COMMANDS.full_name("prod.")) == {"User:operator"}
    assert _writers(grants, MODEL_SPECS.full_name("prod.")) == {"User:operator"}
    assert _writers(grants, DEAD_LETTER_REPLAYS.full_name("prod.")) == {"User:operator"}
    readers = {
        g.principal
        for g in grants
        if g.name == MODEL_SPECS.full_name("prod.") and g.operation.name == "READ"
    }
    # the learner, the join, serve
    assert readers == {"User:worker", "User:operator", "User:service"}
    for topic in ALL_TOPICS:
        if topic not in (MODEL_COMMANDS, MODEL_SPECS, DEAD_LETTER_REPLAYS):
            assert "User:worker" in _writers(grants, topic.full_name("prod.")), topic.name


def test_the_operator_has_a_transactional_id_of_its_own_outside_the_workers_prefix():
    grants = acl_bindings("prod.", "adaptloop")
    ids = {
        (g.principal, g.operation, g.pattern, g.name)
        for g in grants
        if g.resource is ResourceType.TRANSACTIONAL_ID
    }
    replay_id = replay_transactional_id("prod.")
    assert ("User:operator", AclOperation.WRITE, ResourcePatternType.LITERAL, replay_id) in ids
    assert ("User:operator", AclOperation.DESCRIBE, ResourcePatternType.LITERAL, replay_id) in ids
    # the worker's prefixed grants do not reach it
    assert not replay_id.startswith("prod.adaptloop")


@pytest.mark.parametrize("group", ["letters", "model-c", "dead-letter-r"])
def test_a_group_whose_prefix_would_cover_what_only_operators_write_is_refused(group):
    with pytest.raises(ValueError, match="only operators may write"):
        acl_bindings("prod.", group)


def test_the_login_principal_is_the_sasl_user_or_unknown():
    logins = [
        {"sasl.mechanism": "SCRAM-SHA-512", "sasl.username": "operator"},
        {"sasl.mechanisms": "PLAIN", "sasl.username": "alice"},
        {"sasl.mechanism": "OAUTHBEARER", "sasl.username": "bob"},
        {"security.protocol": "SSL"},
    ]
    connections = [
        KafkaConnection.with_properties("broker:9094", properties) for properties in logins
    ]
    assert [login_principal(connection) for connection in connections] == [
        "operator",
        "alice",
        None,
        None,
    ]
