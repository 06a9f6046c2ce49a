"""The topic registry: one topic per event type, co-partitioned, prefixable for tests."""

from __future__ import annotations

import pytest

from schemas import EVENT_TYPES
from schemas.topics import DLQ_RETENTION_MS, Topics


def test_every_event_type_has_its_own_topic_named_after_it() -> None:
    topics = Topics()
    assert topics.event_topics() == {name: name for name in EVENT_TYPES}
    for name in EVENT_TYPES:
        spec = topics.get(topics.for_event(name))
        assert spec.event_types == (name,)
        assert (spec.retention_ms, spec.cleanup_policy) == (-1, "delete")


def test_every_topic_shares_one_partition_count_and_the_campaign_key() -> None:
    topics = Topics(partitions=9)
    assert {spec.partitions for spec in topics} == {9}
    # Signed checkpoints (services.audit.checkpoints) and notify's compacted registrations are
    # per tenant, payment tokens per pledge (services.pledge.adapters.payment_tokens), the rest
    # per campaign.
    other_keys = {"checkpoint", "registration", "secret"}
    assert {spec.key for spec in topics if spec.kind not in other_keys} == {"campaign_id"}
    assert {spec.key for spec in topics if spec.kind == "registration"} == {"tenant_id"}


def test_default_partition_count_is_six() -> None:
    assert {spec.partitions for spec in Topics()} == {6}


def test_prefix_isolates_every_topic_name() -> None:
    topics = Topics(prefix="t123.", partitions=3)
    assert all(spec.name.startswith("t123.") for spec in topics)
    assert topics.commands == "t123.pledge-commands"
    assert topics.for_event("PledgeMade") == "t123.PledgeMade"
    assert topics.dead_letter("pledge-commands") == "t123.pledge-commands.dlq"


def test_streams_list_their_event_topics() -> None:
    topics = Topics()
    assert topics.for_stream("campaign") == [
        "CampaignLaunched", "PledgeMade", "PledgeRejected", "PledgeCancelled", "GoalReached",
        "CampaignClosed",
    ]  # fmt: skip
    assert topics.for_stream("notify") == ["NotificationSent", "NotificationFailed"]
    assert len(topics.for_stream("settlement")) == 9


def test_commands_are_kept_forever_and_snapshots_compacted() -> None:
    topics = Topics()
    assert topics.get(topics.commands).config["retention.ms"] == "-1"
    assert topics.get(topics.snapshots).config["cleanup.policy"] == "compact"


def test_checkpoints_are_compacted_per_tenant() -> None:
    topics = Topics(prefix="t1.")
    spec = topics.get(topics.checkpoints)
    assert (spec.name, spec.kind, spec.key) == ("t1.audit-checkpoints", "checkpoint", "tenant_id")
    assert spec.config["cleanup.policy"] == "compact"


def test_dead_letter_topics_expire() -> None:
    topics = Topics()
    spec = topics.get(topics.dead_letter("settlement"))
    assert spec.kind == "dead_letter"
    assert spec.retention_ms == DLQ_RETENTION_MS


def test_unknown_dead_letter_consumer_is_an_error() -> None:
    with pytest.raises(KeyError, match="known"):
        Topics().dead_letter("nobody")


def test_unknown_event_type_has_no_topic() -> None:
    with pytest.raises(KeyError):
        Topics().for_event("PledgeTeleported")


def test_partitions_must_be_positive() -> None:
    with pytest.raises(ValueError, match="partitions"):
        Topics(partitions=0)
