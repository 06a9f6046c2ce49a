"""``pledgeflow audit export``: copy event topics into a portable archive, incrementally.

A plain consumer (no group, nothing committed, ``read_committed``) reads each topic-partition
from the manifest's cursor (the beginning the first time) up to the end offsets taken at the
start. The processor writes a campaign's events of different types to different topics, so
they may arrive out of seq order; the exporter holds an event back until its chain's
predecessor is written (the stream runtime's :class:`~services.streams.SeqOrderer`, seeded
with the chain heads the manifest persists across runs), so every chain is stored in seq
order. Values are written byte for byte (they are the canonical envelope).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from services.audit.archive import (
    DEFAULT_SEGMENT_EVENTS,
    MANIFEST,
    ArchiveWriter,
    Manifest,
    SegmentInfo,
)
from services.audit.checkpointer import checkpoints_for_export, store_checkpoints
from services.audit.sources import (
    KafkaSourceError,
    discover,
    partition_for,
    reading_consumer,
    stop_consumer,
)
from services.audit.tenants import TenantFilter
from services.streams import Pushed, SeqOrderer, StreamKey

__all__ = ["ExportOptionError", "ExportResult", "export_archive"]


class ExportOptionError(ValueError):
    """The options contradict the archive already in the folder (prefix, topics, campaign)."""


@dataclass
class ExportResult:
    """What one export run added."""

    folder: Path
    events: int
    segments: list[SegmentInfo] = field(default_factory=list)
    #: Events whose predecessor never arrived (written after their chain, in seq order).
    gaps: int = 0
    seconds: float = 0.0
    manifest: Manifest | None = None
    #: ``--tenant``: events left out as belonging to no campaign of the tenant.
    left_out: int = 0
    #: Checkpoints the archive holds after this run.
    checkpoints: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "folder": str(self.folder),
            "events": self.events,
            "segments": [s.name for s in self.segments],
            "gaps": self.gaps,
            "left_out": self.left_out,
            "checkpoints": self.checkpoints,
            "seconds": round(self.seconds, 3),
            "archive_events": None if self.manifest is None else self.manifest.events,
        }


#: ``(partition, value, topic, offset, parsed)`` of a line to write.
_Line = tuple[int, bytes, str, int, Any]


def _chain(raw: Any) -> tuple[StreamKey, int] | None:
    if not isinstance(raw, dict):
        return None
    cid, stream, seq = raw.get("campaign_id"), raw.get("stream"), raw.get("seq")
    if isinstance(cid, str) and isinstance(stream, str) and type(seq) is int:
        return (cid, stream), seq
    return None


def _chain_key(key: StreamKey) -> str:
    """The manifest's name of a chain: ``"<stream> <campaign id>"``."""
    cid, stream = key
    return f"{stream!s} {cid!s}"


def _stream_key(chain_key: str) -> StreamKey:
    stream, _, cid = chain_key.partition(" ")
    return (cid, stream)


async def export_archive(
    bootstrap: str,
    folder: Path,
    topics: list[str],
    *,
    topic_prefix: str = "",
    campaign: str | None = None,
    tenant: str | None = None,
    segment_events: int = DEFAULT_SEGMENT_EVENTS,
    progress: Callable[[int, int], None] | None = None,
    settle_seconds: float = 3.0,
) -> ExportResult:
    """Append the topics' new events to the archive in ``folder`` (created if missing)."""
    from aiokafka import TopicPartition

    started = time.perf_counter()
    if (folder / MANIFEST).exists():
        manifest = Manifest.load(folder)
        if manifest.topic_prefix != topic_prefix:
            raise ExportOptionError(
                f"--topic-prefix: the archive holds prefix {manifest.topic_prefix!r}"
            )
        if manifest.campaign != campaign:
            raise ExportOptionError(f"--campaign: the archive holds campaign {manifest.campaign!r}")
        if manifest.tenant != tenant:
            raise ExportOptionError(f"--tenant: the archive holds tenant {manifest.tenant!r}")
        if sorted(manifest.topics) != sorted(topics):
            raise ExportOptionError(f"--topics: the archive holds {sorted(manifest.topics)}")
    else:
        manifest = Manifest(
            topic_prefix=topic_prefix, topics=list(topics), campaign=campaign, tenant=tenant
        )
    # Checkpoints first: every one read now signed events below the end offsets taken next.
    fetched = await checkpoints_for_export(bootstrap, manifest)
    gate = None if tenant is None else TenantFilter(tenant, manifest.tenant_campaigns)
    count = await discover(bootstrap, topics)
    if manifest.partitions and manifest.partitions != count:
        raise KafkaSourceError(
            f"--topics: {count} partitions now, {manifest.partitions} when the archive began"
        )
    manifest.partitions = count
    partitions = [partition_for(campaign, count)] if campaign is not None else list(range(count))
    key_filter = None if campaign is None else campaign.encode()

    writer = ArchiveWriter(folder, manifest, segment_events=segment_events)
    heads = manifest.chain_heads
    # The runtime's hold-back, seeded with the chain heads the archive already holds.
    orderer: SeqOrderer[StreamKey, _Line] = SeqOrderer(limit=1 << 62)
    for chain_key, seq in heads.items():
        orderer.seed(_stream_key(chain_key), seq)
    gaps = 0

    def write(partition: int, value: bytes, topic: str, offset: int, raw: Any) -> None:
        event_id = raw.get("event_id") if isinstance(raw, dict) else None
        writer.add(partition, value, topic, offset, event_id if isinstance(event_id, str) else "")

    def accept(partition: int, value: bytes, topic: str, offset: int) -> None:
        if b"\n" in value or b"\r" in value:
            # A line break would split the line; canonical JSON never has one.
            try:
                value = orjson.dumps(orjson.loads(value), option=orjson.OPT_SORT_KEYS)
            except orjson.JSONDecodeError:
                value = value.replace(b"\r", b" ").replace(b"\n", b" ")
        try:
            raw = orjson.loads(value)
        except orjson.JSONDecodeError:
            raw = None
        chain = _chain(raw)
        line = (partition, value, topic, offset, raw)
        if chain is None:
            write(*line)  # the verifier names it
            return
        pushed, run = orderer.push(chain[0], chain[1], line)
        if pushed is Pushed.HELD:
            return
        if pushed is not Pushed.RELEASED:
            write(*line)  # a redelivery or a second copy: kept, the verifier names it
            return
        for item in run:
            write(*item)

    consumer = reading_consumer(bootstrap)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for topic in topics for p in partitions]
        consumer.assign(tps)
        begin = await consumer.beginning_offsets(tps)
        start = {}
        for tp in tps:
            cursor = manifest.next_offsets.get(tp.topic, {}).get(str(tp.partition))
            start[tp] = max(begin[tp], cursor if cursor is not None else 0)
            consumer.seek(tp, start[tp])
        end = await consumer.end_offsets(tps)
        total = sum(max(0, end[tp] - start[tp]) for tp in tps)
        done = 0
        deadline: float | None = None
        while True:
            remaining = {tp for tp in tps if await consumer.position(tp) < end[tp]}
            if not remaining:
                if not orderer.held:
                    break
                # Held-back events wait for a predecessor on another topic: a transaction
                # that committed while we read. Read a little further to let it arrive.
                now = time.monotonic()
                deadline = deadline or now + settle_seconds
                if now > deadline:
                    break
                end = await consumer.end_offsets(tps)
                remaining = {tp for tp in tps if await consumer.position(tp) < end[tp]}
                if not remaining:
                    await _sleep(0.1)
                    continue
            batch = await consumer.getmany(*remaining, timeout_ms=500, max_records=20_000)
            for tp, records in batch.items():
                for record in records:
                    if key_filter is not None and record.key != key_filter:
                        continue
                    if gate is None:
                        accept(tp.partition, record.value or b"", tp.topic, record.offset)
                        continue
                    item = (tp.partition, record.value or b"", tp.topic, record.offset)
                    for admitted in gate.admit(item[1], item):
                        accept(*admitted)
                done += len(records)
            if progress is not None:
                progress(done, total)
        for key in sorted(orderer.held_keys()):
            # Their predecessors never arrived: keep them (the verifier names the gap).
            while (lowest := orderer.take_lowest(key)) is not None:
                gaps += 1
                write(*lowest[1])
        for key, seq in orderer.applied().items():
            if seq:
                heads[_chain_key(key)] = seq
        for tp in tps:
            position = await consumer.position(tp)
            manifest.next_offsets.setdefault(tp.topic, {})[str(tp.partition)] = position
    finally:
        await stop_consumer(consumer)
    segments = writer.close()
    left_out = 0 if gate is None else gate.left_out
    if gate is not None:
        manifest.tenant_campaigns = gate.campaigns
    writer.record_export(topics=list(topics), partitions=partitions, gaps=gaps, bootstrap=bootstrap)
    signed = store_checkpoints(folder, manifest, fetched)
    manifest.save(folder)
    return ExportResult(
        folder, writer.written, segments, gaps, time.perf_counter() - started, manifest,
        left_out=left_out, checkpoints=signed,
    )  # fmt: skip


async def _sleep(seconds: float) -> None:
    import asyncio

    await asyncio.sleep(seconds)
