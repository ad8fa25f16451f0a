"""Least-privilege access: the Kafka ACLs that let each principal do its part of the loop and
nothing more.

- the **worker** reads and writes adaptloop's topics and its own state topics, in its consumer
  groups and transactions (everything named ``<topic_prefix><group>...``);
- a **service** writes ``predictions``, ``outcomes``, ``agent-feedback`` and ``preferences`` and
  reads ``model-updates``, ``model-specs`` and ``preference-store`` (to be served); it cannot write
  a model, a spec, a training example, a command or a dead letter;
- an **operator** reads every topic (audits, status, dead letters), writes ``model-commands``
  (rollbacks, promotions) and ``model-specs`` (models added, changed, retired), and replays dead
  letters to the inputs, with their records on ``dead-letter-replays``, in transactions of its own
  (:func:`replay_transactional_id`).

Only the worker writes ``training-examples``, ``model-updates`` and ``preference-store``; only an
operator writes ``model-commands``, ``model-specs`` and ``dead-letter-replays`` (the worker reads
them). So the ``principal`` a command, a spec or a replay record carries, the Kafka user the CLI
logged in as (:func:`login_principal`), was written by an operator: someone holding the operator's
(or an admin's) credentials could write another name there, no one else can write those topics at
all. :func:`acl_bindings` is the set; ``adaptloop acls --apply`` creates it (as an admin).
"""

from __future__ import annotations

from dataclasses import dataclass

from confluent_kafka.admin import (
    AclBinding,
    AclOperation,
    AclPermissionType,
    ResourcePatternType,
    ResourceType,
)

from adaptloop.schemas import topics as t
from adaptloop.streams.admin import wait_for_broker
from adaptloop.streams.connection import ConnectionLike, KafkaConnection

SERVICE_WRITES = (t.PREDICTIONS, t.OUTCOMES, t.AGENT_FEEDBACK, t.PREFERENCES)
SERVICE_READS = (t.MODEL_UPDATES, t.MODEL_SPECS, t.PREFERENCE_STORE)
# commands, model specs, replays
OPERATOR_ONLY = (t.MODEL_COMMANDS, t.MODEL_SPECS, t.DEAD_LETTER_REPLAYS)
OPERATOR_WRITES = (*OPERATOR_ONLY, *SERVICE_WRITES)  # (replayed records go back to the inputs)


def replay_transactional_id(prefix: str) -> str:
    """The transactional id of ``adaptloop deadletters replay`` (the operator's, outside the
    worker's prefix).

    >>> replay_transactional_id("prod.")
    'prod.letters-replay'
    """
    return f"{prefix}letters-replay"


def login_principal(connection: ConnectionLike) -> str | None:
    """The Kafka user ``connection`` logs in as (see :attr:`KafkaConnection.principal`)."""
    return KafkaConnection.of(connection).principal


@dataclass(frozen=True)
class Grant:
    """One allowed operation, in words and as Kafka's binding."""

    principal: str
    operation: AclOperation
    resource: ResourceType
    pattern: ResourcePatternType
    name: str

    def binding(self) -> AclBinding:
        return AclBinding(
            self.resource,
            self.name,
            self.pattern,
            self.principal,
            "*",
            self.operation,
            AclPermissionType.ALLOW,
        )


def acl_bindings(
    prefix: str,
    group: str,
    *,
    worker: str = "User:worker",
    service: str = "User:service",
    operator: str = "User:operator",
) -> list[Grant]:
    """The ACLs of one deployment (``prefix``: its topic prefix; ``group``: its consumer-group
    prefix).

    >>> grants = acl_bindings("prod.", "adaptloop")
    >>> sorted({g.name for g in grants if g.principal == "User:service" and g.operation.name == "WRITE"})
    ['prod.agent-feedback', 'prod.outcomes', 'prod.predictions', 'prod.preferences']
    """
    topic, literal, prefixed = (
        ResourceType.TOPIC,
        ResourcePatternType.LITERAL,
        ResourcePatternType.PREFIXED,
    )
    op = AclOperation
    grants: list[Grant] = []
    own = f"{prefix}{group}"  # the worker's groups, transactions and state topics
    replay_id = replay_transactional_id(prefix)
    covered = [
        n for n in (replay_id, *(x.full_name(prefix) for x in OPERATOR_ONLY)) if n.startswith(own)
    ]
    if covered:
        raise ValueError(
            f"the group {group!r} would give the worker (everything named {own}...) "
            f"{', '.join(covered)}, which "
            "only operators may write; choose another group"
        )
    for topic_ in t.ALL_TOPICS:
        name = topic_.full_name(prefix)
        worker_may = [op.READ, op.DESCRIBE, op.DESCRIBE_CONFIGS, op.CREATE]
        if topic_ not in OPERATOR_ONLY:
            worker_may.append(op.WRITE)
        grants += [Grant(worker, operation, topic, literal, name) for operation in worker_may]
        grants += [
            Grant(operator, operation, topic, literal, name) for operation in (op.READ, op.DESCRIBE)
        ]
    for operation in (op.READ, op.WRITE, op.DESCRIBE, op.DESCRIBE_CONFIGS, op.CREATE):
        grants.append(Grant(worker, operation, topic, prefixed, own))
    grants += [
        Grant(worker, op.READ, ResourceType.GROUP, prefixed, own),
        Grant(worker, op.DESCRIBE, ResourceType.GROUP, prefixed, own),
        Grant(worker, op.WRITE, ResourceType.TRANSACTIONAL_ID, prefixed, own),
        Grant(worker, op.DESCRIBE, ResourceType.TRANSACTIONAL_ID, prefixed, own),
        # lag in `adaptloop status`
        Grant(operator, op.DESCRIBE, ResourceType.GROUP, prefixed, own),
        # replays, with their records
        Grant(operator, op.WRITE, ResourceType.TRANSACTIONAL_ID, literal, replay_id),
        Grant(operator, op.DESCRIBE, ResourceType.TRANSACTIONAL_ID, literal, replay_id),
    ]
    for topic_ in SERVICE_WRITES:
        grants += [
            Grant(service, o, topic, literal, topic_.full_name(prefix))
            for o in (op.WRITE, op.DESCRIBE)
        ]
    for topic_ in SERVICE_READS:
        grants += [
            Grant(service, o, topic, literal, topic_.full_name(prefix))
            for o in (op.READ, op.DESCRIBE)
        ]
    grants += [
        Grant(operator, op.WRITE, topic, literal, topic_.full_name(prefix))
        for topic_ in OPERATOR_WRITES
    ]
    return grants


def apply_acls(connection: ConnectionLike, grants: list[Grant], timeout: float = 30.0) -> int:
    """Create the ACLs (idempotent: an existing one is created again as is); return how many."""
    admin = wait_for_broker(connection, timeout)
    futures = admin.create_acls([grant.binding() for grant in grants], request_timeout=timeout)
    for future in futures.values():
        future.result()
    return len(grants)
