"""Snapshots of one partition's campaigns on the compacted ``pledge-snapshots`` topic.

A snapshot round of partition *p* writes, to partition *p* of the snapshot topic and inside
the same Kafka transaction as the events that follow it, one record per campaign changed since
the previous round (key = campaign id) and one **manifest** (key ``__manifest__``) holding the
event-topic offsets the round covers. Since every changed campaign is rewritten each round,
the latest record of every key, read together with the latest manifest, is the exact state of
every campaign of *p* as of those offsets; recovery replays only the events from there on.
Compaction keeps the latest record per key; an aborted round leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import logging
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import orjson
from aiokafka import ConsumerRecord, TopicPartition

from services.pledge.domain import CampaignState
from services.streams import read_to_end

__all__ = [
    "MANIFEST_KEY",
    "MAX_SNAPSHOT_BYTES",
    "PartitionSnapshot",
    "decode_campaign",
    "encode_campaign",
    "encode_manifest",
    "load_snapshot",
    "snapshot_limit",
    "snapshot_records",
]

log = logging.getLogger("pledgeflow.processor")

MANIFEST_KEY = b"__manifest__"
FORMAT_VERSION = 1
#: Biggest compressed campaign snapshot written when the snapshot topic's own limit is not
#: known (under the broker's default 1 MiB message). A round with a bigger one is skipped, and
#: recovery replays more instead.
MAX_SNAPSHOT_BYTES = 900 * 1024
#: Room left for the record and batch headers under the topic's ``max.message.bytes``.
_RECORD_OVERHEAD = 64 * 1024


@dataclass
class PartitionSnapshot:
    """The latest snapshot round of one partition: campaign states and the offsets covered."""

    partition: int
    #: ``event topic -> first offset NOT covered`` (replay starts there).
    offsets: dict[str, int]
    states: dict[str, CampaignState] = field(default_factory=dict)


def encode_campaign(state: CampaignState, offsets: Mapping[str, int]) -> bytes:
    """One campaign's snapshot value (zlib-compressed canonical JSON: pledge ids repeat)."""
    body = {"v": FORMAT_VERSION, "offsets": dict(offsets), "state": state.to_snapshot()}
    return zlib.compress(orjson.dumps(body), 1)


def decode_campaign(value: bytes) -> tuple[CampaignState, dict[str, int]]:
    """Inverse of :func:`encode_campaign`."""
    body = orjson.loads(zlib.decompress(value))
    return CampaignState.from_snapshot(body["state"]), dict(body["offsets"])


def encode_manifest(partition: int, offsets: Mapping[str, int], campaigns: int) -> bytes:
    """The manifest closing a round: which offsets the round's campaign records cover."""
    return orjson.dumps(
        {
            "v": FORMAT_VERSION,
            "partition": partition,
            "offsets": dict(offsets),
            "campaigns": campaigns,
        }
    )


async def load_snapshot(bootstrap: str, topic: str, partition: int) -> PartitionSnapshot | None:
    """The latest committed snapshot round of ``partition``, or None if none was written."""
    latest: dict[bytes, bytes] = {}

    def keep(record: ConsumerRecord[bytes, bytes]) -> None:
        if record.key is not None and record.value is not None:
            latest[record.key] = record.value

    await read_to_end(bootstrap, [TopicPartition(topic, partition)], keep, max_records=1000)
    manifest = latest.pop(MANIFEST_KEY, None)
    if manifest is None:
        return None
    snapshot = PartitionSnapshot(partition, dict(orjson.loads(manifest)["offsets"]))
    for value in latest.values():
        state, _ = decode_campaign(value)
        snapshot.states[state.campaign_id] = state
    return snapshot


async def snapshot_limit(bootstrap: str, topic: str) -> int:
    """The biggest campaign snapshot ``topic`` takes: its ``max.message.bytes`` less the
    headers. A topic created before the registry raised that limit keeps the broker's 1 MiB
    until its config is changed, and a too-big record would fail the whole transaction, so
    the limit is read from the topic rather than assumed (:data:`MAX_SNAPSHOT_BYTES` when it
    cannot be read)."""
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        await admin.start()
        resource = ConfigResource(ConfigResourceType.TOPIC, topic)
        for _attempt in range(20):  # a topic just created may not be described yet
            for response in await admin.describe_configs([resource]):
                for code, _message, _type, _name, entries in response.resources:
                    for name, value, *_ in entries if code == 0 else ():
                        if name == "max.message.bytes":
                            return max(0, int(value) - _RECORD_OVERHEAD)
            await asyncio.sleep(0.25)
        log.warning(
            "max.message.bytes of %s not described: snapshots up to %d bytes",
            topic,
            MAX_SNAPSHOT_BYTES,
        )
    except Exception as exc:
        log.warning(
            "max.message.bytes of %s unknown (%r): snapshots up to %d bytes",
            topic,
            exc,
            MAX_SNAPSHOT_BYTES,
        )
    finally:
        await admin.close()
    return MAX_SNAPSHOT_BYTES


def snapshot_records(
    states: Iterable[CampaignState],
    offsets: Mapping[str, int],
    partition: int,
    max_bytes: int = MAX_SNAPSHOT_BYTES,
) -> list[tuple[bytes, bytes]] | None:
    """``(key, value)`` records of one round, manifest last; None if a campaign's snapshot
    is over ``max_bytes``."""
    records: list[tuple[bytes, bytes]] = []
    for state in states:
        value = encode_campaign(state, offsets)
        if len(value) > max_bytes:
            return None
        records.append((state.campaign_id.encode(), value))
    records.append((MANIFEST_KEY, encode_manifest(partition, offsets, len(records))))
    return records
