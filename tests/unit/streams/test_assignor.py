"""The co-partitioned assignor: partition p of every topic goes to one member."""

from __future__ import annotations

from typing import Any

from aiokafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
from aiokafka.coordinator.protocol import ConsumerProtocolMemberMetadata

from services.streams import CoPartitionedAssignor

TOPICS = ["PledgeMade", "GoalReached", "CampaignClosed"]


class Cluster:
    """The one method assignors read."""

    def __init__(self, partitions: dict[str, int]) -> None:
        self._partitions = partitions

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        count = self._partitions.get(topic)
        return None if count is None else set(range(count))


def owners(assignor: Any, members: int, partitions: int = 6) -> dict[tuple[str, int], str]:
    cluster = Cluster({t: partitions for t in TOPICS})
    meta = {f"m{i}": ConsumerProtocolMemberMetadata(0, TOPICS, b"") for i in range(members)}
    assignment = assignor.assign(cluster, meta)
    out: dict[tuple[str, int], str] = {}
    for member, a in assignment.items():
        for topic, parts in a.assignment:
            for p in parts:
                out[(topic, p)] = member
    return out


def test_round_robin_splits_a_partition_number_between_members() -> None:
    """Why the runtime has its own assignor: the default breaks co-partitioning."""
    got = owners(RoundRobinPartitionAssignor, members=4)
    assert any(len({got[(t, p)] for t in TOPICS}) > 1 for p in range(6))


def test_every_topic_partition_is_assigned_once_and_co_partitioned() -> None:
    for members in (1, 2, 4, 6, 7):
        got = owners(CoPartitionedAssignor, members=members)
        assert len(got) == len(TOPICS) * 6
        for p in range(6):
            assert len({got[(t, p)] for t in TOPICS}) == 1


def test_partitions_are_spread_evenly() -> None:
    got = owners(CoPartitionedAssignor, members=4)
    per_member: dict[str, set[int]] = {}
    for (_topic, p), member in got.items():
        per_member.setdefault(member, set()).add(p)
    assert sorted(len(ps) for ps in per_member.values()) == [1, 1, 2, 2]


def test_a_member_gets_only_topics_it_subscribes_to() -> None:
    cluster = Cluster({t: 3 for t in TOPICS})
    meta = {
        "a": ConsumerProtocolMemberMetadata(0, TOPICS, b""),
        "b": ConsumerProtocolMemberMetadata(0, TOPICS[:1], b""),
    }
    assignment = CoPartitionedAssignor.assign(cluster, meta)  # type: ignore[arg-type]
    assert {t for t, _ in assignment["b"].assignment} <= {TOPICS[0]}
