"""A partition assignor that keeps co-partitioning: partition *p* of every topic goes to one
member.

A campaign's events of different types sit in partition *p* of several topics, and a reader
can only put them back in seq order if it owns partition *p* of all of them. aiokafka's
default round-robin assignor deals topic-partitions out one by one across members, so with
two members partition 0 of ``PledgeMade`` and partition 0 of ``GoalReached`` can land on
different members (and the held-back event would wait forever). Kafka's range assignor is
co-partitioned only while every member subscribes to the same topics with the same partition
counts; this one assigns partition *numbers*, so it holds whatever the subscriptions are.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from aiokafka.cluster import ClusterMetadata
from aiokafka.coordinator.assignors.abstract import AbstractPartitionAssignor
from aiokafka.coordinator.protocol import (
    ConsumerProtocolMemberAssignment,
    ConsumerProtocolMemberMetadata,
)

__all__ = ["CoPartitionedAssignor", "spread"]


def spread(numbers: list[int], members: list[str]) -> dict[str, list[int]]:
    """Contiguous ranges of ``numbers`` (sorted) for ``members`` (sorted), the first ones
    taking one more when it does not divide evenly."""
    numbers = sorted(numbers)
    members = sorted(members)
    share, extra = divmod(len(numbers), len(members)) if members else (0, 0)
    out: dict[str, list[int]] = {}
    start = 0
    for i, member in enumerate(members):
        length = share + (1 if i < extra else 0)
        out[member] = numbers[start : start + length]
        start += length
    return out


class CoPartitionedAssignor(AbstractPartitionAssignor):  # type: ignore[misc]
    """Assigns partition numbers to members; a member gets partition *p* of each topic it
    subscribes to. Every member of a group must use it (its protocol name is checked)."""

    name = "pledgeflow-copartitioned"
    version = 0

    @classmethod
    def assign(
        cls,
        cluster: ClusterMetadata,
        members: Mapping[str, ConsumerProtocolMemberMetadata],
    ) -> dict[str, ConsumerProtocolMemberAssignment]:
        numbers: set[int] = set()
        for metadata in members.values():
            for topic in metadata.subscription:
                numbers.update(cluster.partitions_for_topic(topic) or ())
        owner = {
            number: member
            for member, owned in spread(sorted(numbers), list(members)).items()
            for number in owned
        }
        assignment: dict[str, ConsumerProtocolMemberAssignment] = {}
        for member, metadata in members.items():
            topics: list[tuple[str, list[int]]] = []
            for topic in sorted(set(metadata.subscription)):
                mine = sorted(
                    p for p in cluster.partitions_for_topic(topic) or () if owner.get(p) == member
                )
                if mine:
                    topics.append((topic, mine))
            assignment[member] = ConsumerProtocolMemberAssignment(cls.version, topics, b"")
        return assignment

    @classmethod
    def metadata(cls, topics: Iterable[str]) -> ConsumerProtocolMemberMetadata:
        return ConsumerProtocolMemberMetadata(cls.version, list(topics), b"")

    @classmethod
    def on_assignment(cls, assignment: ConsumerProtocolMemberAssignment) -> None:
        return None
