"""Strimzi ``KafkaUser`` per service for the prod overlay, ACLs derived from the topic registry.

Each process gets SCRAM-SHA-512 credentials and ``simple`` ACLs on the topics its stream role
reads or writes (event topics by the stream that writes them, command/secret/registration
topics by kind), its consumer group and its transactional ids. Every user may Describe every
topic: each pod's ``wait-topics`` init container checks the whole registry is served. The role
table below is the one hand-written part: when a process starts using a topic, add it here and
run ``pledgeflow deploy render``; ``tests/integration/test_kafka_acls_live.py`` runs every
process against a broker enforcing the rendered ACLs, so a missing grant fails there.
"""

from __future__ import annotations

from typing import Any

from schemas.topics import (
    CHECKPOINTS_TOPIC,
    COMMANDS_TOPIC,
    NOTIFY_CONTACTS_TOPIC,
    NOTIFY_ENDPOINTS_TOPIC,
    PAYMENT_TOKENS_TOPIC,
    SETTLEMENT_COMMANDS_TOPIC,
    SNAPSHOTS_TOPIC,
    Topics,
)

__all__ = ["CLUSTER", "kafka_users"]

CLUSTER = "pledgeflow"
_READ = ["Read", "Describe"]
_WRITE = ["Write", "Describe"]


def _roles(topics: Topics) -> dict[str, dict[str, Any]]:
    """Per service: topics read, topics written, consumer groups, transactional-id prefixes."""
    events = {s: topics.for_stream(s) for s in ("campaign", "settlement", "notify")}
    every_event = [name for names in events.values() for name in names]
    registrations = [NOTIFY_ENDPOINTS_TOPIC, NOTIFY_CONTACTS_TOPIC]
    return {
        "api": {
            "read": [*registrations, *every_event],
            "write": [
                COMMANDS_TOPIC,
                SETTLEMENT_COMMANDS_TOPIC,
                PAYMENT_TOKENS_TOPIC,
                *registrations,
            ],
            "groups": [],
            "transactions": [],
        },
        "processor": {
            "read": [COMMANDS_TOPIC, SNAPSHOTS_TOPIC, *events["campaign"]],
            "write": [*events["campaign"], SNAPSHOTS_TOPIC, f"{COMMANDS_TOPIC}.dlq"],
            "groups": ["pledge-processor"],
            "transactions": ["pledge-processor"],
            # The snapshot size limit is the topic's ``max.message.bytes``, read at start.
            "described_configs": [SNAPSHOTS_TOPIC],
        },
        "projector": {
            "read": every_event,
            "write": ["readmodel.dlq"],
            "groups": ["pledge-readmodel"],
            "transactions": [],
        },
        "settlement": {
            "read": [SETTLEMENT_COMMANDS_TOPIC, PAYMENT_TOKENS_TOPIC, *every_event],
            # payment-tokens: the tombstones of resolved pledges' tokens.
            "write": [*events["settlement"], "settlement.dlq", PAYMENT_TOKENS_TOPIC],
            # settlement-commands: marks of the commands it dead-lettered (no member joins).
            "groups": ["settlement", "settlement-commands"],
            "transactions": ["settlement"],
        },
        "settlement-readmodel": {
            "read": events["settlement"],
            "write": ["readmodel.dlq"],
            "groups": ["settlement-readmodel"],
            "transactions": [],
        },
        "notify": {
            # Its own stream too: a writer rebuilds its chain heads from it before appending;
            # and its dead letters, which ``pledgeflow notify redrive`` (run in a notify pod)
            # reads in the group ``notify-redrive``.
            "read": [*registrations, *every_event, "notify.dlq"],
            "write": [*events["notify"], "notify.dlq"],
            # faust's group, and its internal topics (``notify-__assignor-__leader``; not
            # ``notify-*``, which would let notify rewrite ``notify-endpoints``).
            "groups": ["notify", "notify-redrive"],
            # The notify stream's transactional writers, ``notify-stream-<partition>``.
            "transactions": ["notify-stream"],
            "prefixed_topics": ["notify-__"],
        },
        # KEDA's Kafka scaler: reads the lag of the groups it scales on, nothing else.
        "keda": {
            "read": [],
            "write": [],
            "groups": [],
            "transactions": [],
            "described_groups": [
                "pledge-processor",
                "pledge-readmodel",
                "settlement",
                "settlement-readmodel",
            ],
        },
        "checkpointer": {
            "read": [spec.name for spec in topics if spec.kind != "secret"],
            "write": [CHECKPOINTS_TOPIC, "audit.dlq"],
            "groups": [],
            "transactions": [],
        },
    }


def _acl(kind: str, name: str, operations: list[str], pattern: str = "literal") -> dict[str, Any]:
    return {
        "resource": {"type": kind, "name": name, "patternType": pattern},
        "operations": operations,
    }


def kafka_users(topics: Topics | None = None) -> list[dict[str, Any]]:
    """One ``KafkaUser`` per service (``pledgeflow-<service>``), least privilege by role."""
    registry = topics or Topics()
    users = []
    for service, role in _roles(registry).items():
        ops: dict[str, set[str]] = {}
        for name in role["read"]:
            ops.setdefault(name, set()).update(_READ)
        for name in role["write"]:
            ops.setdefault(name, set()).update(_WRITE)
        for name in role.get("described_configs", []):
            ops.setdefault(name, set()).add("DescribeConfigs")
        acls = [_acl("topic", "*", ["Describe"])]
        acls += [_acl("topic", name, sorted(ops[name])) for name in sorted(ops)]
        acls += [_acl("group", g, ["Read", "Describe"]) for g in role["groups"]]
        acls += [_acl("group", g, ["Describe"]) for g in role.get("described_groups", [])]
        acls += [
            _acl("transactionalId", t, ["Write", "Describe"], "prefix")
            for t in role["transactions"]
        ]
        acls += [
            _acl("topic", p, ["Create", "Read", "Write", "Describe"], "prefix")
            for p in role.get("prefixed_topics", [])
        ]
        users.append(
            {
                "apiVersion": "kafka.strimzi.io/v1beta2",
                "kind": "KafkaUser",
                "metadata": {
                    "name": f"pledgeflow-{service}",
                    "labels": {"strimzi.io/cluster": CLUSTER},
                },
                "spec": {
                    "authentication": {"type": "scram-sha-512"},
                    "authorization": {"type": "simple", "acls": acls},
                },
            }
        )
    return users
