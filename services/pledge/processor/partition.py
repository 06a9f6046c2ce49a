"""What the processor keeps per owned partition of ``pledge-commands``, and what one
partition's transaction will write."""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from services.pledge.domain import CampaignState
from services.streams import PartitionWriter

__all__ = ["NO_HEADERS", "Outbox", "OwnedPartition", "PoisonCommand"]


@dataclass
class OwnedPartition:
    """One owned partition of ``pledge-commands``: its writer, its campaigns, its place."""

    number: int
    #: The partition's transactional writer (``<group>-<p>``).
    writer: PartitionWriter
    states: dict[str, CampaignState]
    #: Next command offset to decide (anything below was decided in a committed transaction).
    next_command: int
    event_offsets: dict[str, int]
    dirty: set[str]
    events_since_snapshot: int
    #: ``(deadline, campaign_id)`` of campaigns that were open when pushed.
    deadlines: list[tuple[datetime, str]] = field(default_factory=list)
    #: Command offsets whose decision broke ``evolve``: dead-lettered on the next attempt.
    poison: set[int] = field(default_factory=set)
    #: ``campaign_id -> message key`` of campaigns whose key was checked to map to this
    #: partition (the check is then one comparison per command).
    keys: dict[str, bytes] = field(default_factory=dict)

    def track_deadline(self, state: CampaignState) -> None:
        if state.status == "open" and state.terms is not None:
            heapq.heappush(self.deadlines, (state.terms.deadline, state.campaign_id))


#: Headers of every record but dead letters (shared: never mutated). A list, not a tuple:
#: aiokafka's C record builder accepts nothing else.
NO_HEADERS: list[tuple[str, bytes]] = []


class PoisonCommand(Exception):
    """A decision broke ``evolve``: the partition is rebuilt and the command dead-lettered."""

    def __init__(self, offset: int) -> None:
        super().__init__(f"command at offset {offset} broke evolve")
        self.offset = offset


@dataclass
class Outbox:
    """Everything one partition's transaction will write, and what to count once committed."""

    records: dict[str, list[tuple[bytes | None, bytes, Sequence[tuple[str, bytes]]]]] = field(
        default_factory=dict
    )
    last_offset: int | None = None
    commands: Counter[tuple[str, str]] = field(default_factory=Counter)
    rejections: Counter[str] = field(default_factory=Counter)
    dead_letters: Counter[str] = field(default_factory=Counter)
    events: Counter[str] = field(default_factory=Counter)
    #: ``now - issued_at`` of every decided command (a timedelta costs less than a timestamp).
    issued: list[timedelta] = field(default_factory=list)
    #: The clock reading the batch was decided with.
    now: datetime | None = None
    snapshot: bool = False

    def add(
        self, topic: str, key: bytes | None, value: bytes, headers: Sequence[tuple[str, bytes]]
    ) -> None:
        bucket = self.records.get(topic)
        if bucket is None:
            bucket = self.records[topic] = []
        bucket.append((key, value, headers))

    def __bool__(self) -> bool:
        return bool(self.records) or self.last_offset is not None
