"""The prod KafkaUsers: one per service, each limited to what its role reads and writes."""

from __future__ import annotations

from typing import Any

from schemas.topics import PAYMENT_TOKENS_TOPIC, Topics
from services.ops.kafka_users import kafka_users


def _users() -> dict[str, dict[str, Any]]:
    return {u["metadata"]["name"].removeprefix("pledgeflow-"): u for u in kafka_users()}


def _allowed(user: dict[str, Any], operation: str, kind: str = "topic") -> set[str]:
    return {
        acl["resource"]["name"]
        for acl in user["spec"]["authorization"]["acls"]
        if acl["resource"]["type"] == kind and operation in acl["operations"]
    }


def test_every_service_gets_a_scram_user_with_simple_acls() -> None:
    users = _users()
    assert set(users) == {
        "api", "processor", "projector", "settlement", "settlement-readmodel", "notify", "keda",
        "checkpointer",
    }  # fmt: skip
    for user in users.values():
        assert user["metadata"]["labels"] == {"strimzi.io/cluster": "pledgeflow"}
        assert user["spec"]["authentication"] == {"type": "scram-sha-512"}
        assert user["spec"]["authorization"]["type"] == "simple"


def test_only_the_stream_owner_writes_its_event_topics() -> None:
    users = _users()
    campaign = set(Topics().for_stream("campaign"))
    settlement = set(Topics().for_stream("settlement"))
    writers = {name: _allowed(u, "Write") for name, u in users.items()}
    assert {n for n, w in writers.items() if w & campaign} == {"processor"}
    assert {n for n, w in writers.items() if w & settlement} == {"settlement"}
    assert writers["projector"] == writers["settlement-readmodel"] == {"readmodel.dlq"}
    assert writers["keda"] == set()


def test_payment_tokens_are_read_only_by_settlement_and_keda_reads_nothing() -> None:
    users = _users()
    readers = {n for n, u in users.items() if PAYMENT_TOKENS_TOPIC in _allowed(u, "Read")}
    assert readers == {"settlement"}
    assert _allowed(users["keda"], "Read") == set()
    assert _allowed(users["keda"], "Read", "group") == set()
    assert _allowed(users["keda"], "Describe", "group") == {
        "pledge-processor", "pledge-readmodel", "settlement", "settlement-readmodel"
    }  # fmt: skip
    assert _allowed(users["processor"], "Write", "transactionalId") == {"pledge-processor"}


def test_only_settlement_writes_payment_tokens_besides_the_api() -> None:
    # The API stores tokens; settlement writes the tombstones of resolved pledges' tokens.
    users = _users()
    writers = {n for n, u in users.items() if PAYMENT_TOKENS_TOPIC in _allowed(u, "Write")}
    assert writers == {"api", "settlement"}


def test_notify_writes_its_stream_transactionally_and_reads_it_back() -> None:
    # Found by tests/integration/test_kafka_acls_live.py: notify's PartitionWriters are
    # transactional (``notify-stream-<p>``) and rebuild their chain heads from the notify topics.
    notify = _users()["notify"]
    assert _allowed(notify, "Write", "transactionalId") == {"notify-stream"}
    assert set(Topics().for_stream("notify")) <= _allowed(notify, "Read")


def test_notify_redrive_reads_the_dead_letters_in_its_own_group() -> None:
    notify = _users()["notify"]
    assert "notify.dlq" in _allowed(notify, "Read")
    assert _allowed(notify, "Read", "group") == {"notify", "notify-redrive"}


def test_notify_creates_only_fausts_internal_topics_not_the_registrations() -> None:
    # ``notify-*`` also matched notify-endpoints: notify could have rewritten webhook URLs.
    notify = _users()["notify"]
    prefixed = {
        acl["resource"]["name"]
        for acl in notify["spec"]["authorization"]["acls"]
        if acl["resource"]["patternType"] == "prefix" and acl["resource"]["type"] == "topic"
    }
    assert prefixed == {"notify-__"}
    assert "notify-endpoints" not in _allowed(notify, "Write")


def test_only_the_processor_reads_a_topic_config_its_snapshot_limit() -> None:
    users = _users()
    readers = {n: _allowed(u, "DescribeConfigs") for n, u in users.items()}
    assert {n: r for n, r in readers.items() if r} == {"processor": {"pledge-snapshots"}}
