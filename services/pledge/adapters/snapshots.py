"""Snapshots of one partition's campaigns on the compacted ``pledge-snapshots`` topic.

A snapshot round of partition *p* writes, to partition *p* of the snapshot topic and inside
the same Kafka transaction as the events that follow it, one record per campaign changed since
the previous round (key = campaign id) and one **manifest** (key ``__manifest__``) holding the
event-topic offsets the round covers. Since every changed campaign is rewritten each round,
the latest record of every key, read together with the latest manifest, is the exact state of
every campaign of *p* as of those offsets; recovery replays only the events from there on.
Compaction keeps the latest record per key; an aborted round leaves nothing behind.

Sizes are judged **per campaign**: a campaign whose snapshot is over the topic's limit gets a
*stub* record instead (its key, no state), and the round goes on for every other campaign of
the partition (another tenant's campaigns included). A stub means "fold this campaign from
its first event": recovery then reads the partition's event topics from their start, and the
seq check skips what the other campaigns' snapshots already cover. Only the big campaign
costs a longer recovery; its neighbours keep their snapshots.
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
from services.streams.kafka_security import kafka_client_kwargs

__all__ = [
    "MANIFEST_KEY",
    "MAX_SNAPSHOT_BYTES",
    "PartitionSnapshot",
    "decode_campaign",
    "encode_campaign",
    "encode_manifest",
    "encode_stub",
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


def encode_stub(offsets: Mapping[str, int]) -> bytes:
    """The record of a campaign too big to snapshot: no state, fold it from its first event."""
    return zlib.compress(orjson.dumps({"v": FORMAT_VERSION, "offsets": dict(offsets)}), 1)


def decode_campaign(value: bytes) -> tuple[CampaignState | None, dict[str, int]]:
    """Inverse of :func:`encode_campaign` (and of :func:`encode_stub`: no state)."""
    body = orjson.loads(zlib.decompress(value))
    state = body.get("state")
    return (None if state is None else CampaignState.from_snapshot(state)), dict(body["offsets"])


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
    stubs = []
    for key, value in latest.items():
        state, _ = decode_campaign(value)
        if state is None:
            stubs.append(key.decode())
        else:
            snapshot.states[state.campaign_id] = state
    if stubs:  # fold those from their first event: read the topics from their start
        log.info("partition %s: %d campaign(s) without a snapshot: replay from the start",
                 partition, len(stubs))  # fmt: skip
        snapshot.offsets = {topic: 0 for topic in snapshot.offsets}
    return snapshot


async def snapshot_limit(bootstrap: str, topic: str) -> int:
    """The biggest campaign snapshot ``topic`` takes: its ``max.message.bytes`` less the
    headers. A topic created before the registry raised that limit keeps the broker's 1 MiB
    until its config is changed, and a too-big record would fail the whole transaction, so
    the limit is read from the topic rather than assumed (:data:`MAX_SNAPSHOT_BYTES` when it
    cannot be read)."""
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **kafka_client_kwargs())
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
    """``(key, value)`` records of one round, manifest last. A campaign whose snapshot is
    over ``max_bytes`` gets a stub (see the module docstring); the round is never skipped
    (the ``None`` of the return type is kept for callers written when it was)."""
    records: list[tuple[bytes, bytes]] = []
    for state in states:
        value = encode_campaign(state, offsets)
        if len(value) > max_bytes:
            log.warning(
                "partition %s: campaign %s's snapshot is %d bytes (limit %d): stub written, "
                "it is folded from its first event on recovery",
                partition, state.campaign_id, len(value), max_bytes,
            )  # fmt: skip
            value = encode_stub(offsets)
        records.append((state.campaign_id.encode(), value))
    records.append((MANIFEST_KEY, encode_manifest(partition, offsets, len(records))))
    return records
