"""Settlement on the real broker: write campaign histories as the processor does
(transactionally, per partition), read a stream back, audit the lot, drive a clock."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta

from schemas.codec import encode, message_key
from schemas.envelope import Envelope
from schemas.topics import Topics
from services.audit.engine import PartitionAuditor
from services.streams import OutRecord, PartitionWriter, key_partition, replay_partition
from tests.support.settlement import T0

__all__ = ["FakeClock", "audit_findings", "read_stream", "write_campaigns"]


class FakeClock:
    """The worker's injected clock; tests move it."""

    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, by: timedelta) -> None:
        self.now += by


async def write_campaigns(
    bootstrap: str, topics: Topics, group: str, envelopes: list[Envelope], stream: str = "campaign"
) -> None:
    """The ``stream`` envelopes given (in order), each partition's in one transaction."""
    batches: dict[int, dict[str, list[OutRecord]]] = defaultdict(lambda: defaultdict(list))
    for envelope in envelopes:
        key = message_key(envelope.campaign_id)
        partition = key_partition(key, topics.partitions)
        if envelope.stream == stream:
            batches[partition][topics.for_event(envelope.event_type)].append(
                (key, encode(envelope), [])
            )
    for partition, records in batches.items():
        writer = PartitionWriter(bootstrap, f"{group}-{stream}-writer", partition)
        await writer.start()
        try:
            await writer.write(records)
        finally:
            await writer.close()


async def read_stream(
    bootstrap: str, topics: Topics, stream: str, campaign_id: str
) -> list[Envelope]:
    """One campaign's chain of ``stream`` from the broker, in seq order."""
    out: list[Envelope] = []
    partition = key_partition(message_key(campaign_id), topics.partitions)

    def keep(envelope: Envelope) -> None:
        if envelope.campaign_id == campaign_id:
            out.append(envelope)

    await replay_partition(bootstrap, topics.for_stream(stream), partition, keep)  # type: ignore[arg-type]
    return out


def audit_findings(envelopes: list[Envelope]) -> list[tuple[str, str]]:
    """The auditor's findings on a campaign's streams (campaign chain first)."""
    auditor = PartitionAuditor(0)
    auditor.feed([encode(e) for e in envelopes], 0)
    return [(f.rule, f.detail) for f in auditor.finish().findings]
