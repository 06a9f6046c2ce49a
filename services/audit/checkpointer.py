"""The checkpointer: reads every event topic (``read_committed``), tracks each chain's head and
publishes signed checkpoints per tenant on the compacted ``audit-checkpoints`` topic.

``make_checkpoints`` is the one-shot (``pledgeflow audit checkpoint make``): read to the end
offsets, sign every tenant, publish. ``run_checkpointer`` is the process
(``pledgeflow audit checkpoint run``): it catches up, then signs the tenants whose heads moved
every ``interval`` seconds, and a tenant at once after one of its campaigns closes or settles.
``fetch_checkpoints`` is what an export reads to include them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from schemas.topics import Topics, ensure_topics
from services.audit.archive import Manifest
from services.audit.checkpoints import (
    CHECKPOINTS_FILE,
    Checkpoint,
    CheckpointError,
    HeadTracker,
    read_checkpoints,
    sign_checkpoint,
    write_checkpoints,
)
from services.audit.metrics import CheckpointerMetrics
from services.audit.sources import KafkaSourceError, reading_consumer, stop_consumer
from services.streams.kafka_security import kafka_client_kwargs

__all__ = [
    "checkpoints_for_export",
    "fetch_checkpoints",
    "make_checkpoints",
    "publish",
    "run_checkpointer",
    "store_checkpoints",
]

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]


def _utcnow() -> datetime:
    return datetime.now(UTC)


async def _start(consumer: Any, bootstrap: str) -> None:
    try:
        await consumer.start()
    except Exception as exc:
        await consumer.stop()  # closes what start opened (else "Unclosed AIOKafkaConsumer")
        raise KafkaSourceError(f"--bootstrap: cannot reach Kafka at {bootstrap} ({exc})") from None


async def _assign_all(consumer: Any, topics: list[str]) -> list[Any]:
    from aiokafka import TopicPartition

    tps: list[Any] = []
    for topic in topics:
        parts = consumer.partitions_for_topic(topic)
        if parts is None:
            await consumer._client.force_metadata_update()
            parts = consumer.partitions_for_topic(topic)
        tps.extend(TopicPartition(topic, p) for p in sorted(parts or ()))
    consumer.assign(tps)
    await consumer.seek_to_beginning(*tps)
    return tps


async def _read_until(
    consumer: Any, tps: list[Any], end: dict[Any, int], feed: Callable[[bytes], object]
) -> None:
    """Feed every committed value before ``end`` (offsets taken earlier)."""
    while True:
        remaining = [tp for tp in tps if await consumer.position(tp) < end[tp]]
        if not remaining:
            return
        batch = await consumer.getmany(*remaining, timeout_ms=500, max_records=20_000)
        for tp, records in batch.items():
            for record in records:
                if record.offset < end[tp]:
                    feed(record.value or b"")


async def collect_heads(bootstrap: str, topics: list[str]) -> HeadTracker:
    """Every chain head and campaign tenant of ``topics`` up to their current end offsets."""
    tracker = HeadTracker()
    consumer = reading_consumer(bootstrap)
    await _start(consumer, bootstrap)
    try:
        tps = await _assign_all(consumer, topics)
        end = await consumer.end_offsets(tps)
        await _read_until(consumer, tps, end, tracker.feed)
    finally:
        await stop_consumer(consumer)
    return tracker


async def publish(bootstrap: str, topic: str, checkpoints: list[Checkpoint]) -> None:
    """Write checkpoints keyed by tenant (acks=all: a checkpoint that is not durable is none)."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, **kafka_client_kwargs(), acks="all", enable_idempotence=True
    )
    await producer.start()
    try:
        for checkpoint in checkpoints:
            await producer.send(topic, checkpoint.encode(), key=checkpoint.tenant_id.encode())
        await producer.flush()
    finally:
        await producer.stop()


def _sign_all(
    key: Ed25519PrivateKey, tracker: HeadTracker, tenants: set[str], now: datetime, reason: str
) -> list[Checkpoint]:
    return [
        sign_checkpoint(key, tenant, heads, now, reason)
        for tenant in sorted(tenants)
        if (heads := tracker.of_tenant(tenant))
    ]


async def make_checkpoints(
    bootstrap: str,
    topics: Topics,
    key: Ed25519PrivateKey,
    *,
    tenant: str | None = None,
    clock: Clock = _utcnow,
) -> list[Checkpoint]:
    """Read to the end, sign every tenant (or one) and publish; return what was published."""
    await ensure_topics(bootstrap, [topics.get(topics.checkpoints)])
    tracker = await collect_heads(bootstrap, list(topics.event_topics().values()))
    tenants = set(tracker.tenants.values()) if tenant is None else {tenant}
    made = _sign_all(key, tracker, tenants, clock(), "manual")
    await publish(bootstrap, topics.checkpoints, made)
    return made


async def fetch_checkpoints(
    bootstrap: str, topic: str, tenant: str | None = None
) -> tuple[list[Checkpoint], int]:
    """The checkpoints on ``topic`` now (of one tenant, or all) and how many records were
    unreadable; none when the topic does not exist (no checkpointer ever ran)."""
    found: list[Checkpoint] = []
    bad = 0
    consumer = reading_consumer(bootstrap)
    await _start(consumer, bootstrap)
    try:
        if topic not in await consumer.topics():
            return [], 0
        tps = await _assign_all(consumer, [topic])
        end = await consumer.end_offsets(tps)

        def feed(value: bytes) -> None:
            nonlocal bad
            try:
                checkpoint = Checkpoint.parse(value)
            except CheckpointError:
                bad += 1
                return
            if tenant is None or checkpoint.tenant_id == tenant:
                found.append(checkpoint)

        await _read_until(consumer, tps, end, feed)
    finally:
        await stop_consumer(consumer)
    return found, bad


async def run_checkpointer(
    bootstrap: str,
    topics: Topics,
    key: Ed25519PrivateKey,
    *,
    interval: float,
    stop: asyncio.Event,
    clock: Clock = _utcnow,
    on_publish: Callable[[list[Checkpoint]], None] | None = None,
    metrics: CheckpointerMetrics | None = None,
) -> None:
    """Follow the event topics until ``stop`` is set, publishing checkpoints as they fall due.

    On start it reads the whole log (heads are not persisted: the log is the state); closes
    and settlements seen while catching up do not each trigger a checkpoint — the first one
    after catching up covers every tenant.
    """
    await ensure_topics(bootstrap, [topics.get(topics.checkpoints)])
    tracker = HeadTracker()
    consumer = reading_consumer(bootstrap)
    await _start(consumer, bootstrap)
    loop = asyncio.get_running_loop()
    try:
        tps = await _assign_all(consumer, list(topics.event_topics().values()))
        await _read_until(consumer, tps, await consumer.end_offsets(tps), tracker.feed)
        log.info(
            "caught up: %d chains of %d tenants; following the log",
            len(tracker.heads), len(set(tracker.tenants.values())),
        )  # fmt: skip
        due = loop.time()  # a first checkpoint of every tenant right after catching up
        while not stop.is_set():
            urgent: dict[str, str] = {}
            batch = await consumer.getmany(*tps, timeout_ms=500, max_records=20_000)
            if metrics is not None:
                metrics.events.inc(sum(len(records) for records in batch.values()))
                metrics.chains.set(len(tracker.heads))
            for records in batch.values():
                for record in records:
                    trigger = tracker.feed(record.value or b"")
                    # One checkpoint per tenant per batch; a settlement outranks a close.
                    if trigger is not None and urgent.get(trigger[0]) != "campaign_settled":
                        urgent[trigger[0]] = trigger[1]
            made: list[Checkpoint] = []
            now = clock()
            for reason in sorted(set(urgent.values())):
                tenants = {t for t, r in urgent.items() if r == reason}
                made += _sign_all(key, tracker, tenants, now, reason)
            tracker.dirty -= set(urgent)
            if loop.time() >= due:
                made += _sign_all(key, tracker, tracker.take_dirty(), now, "interval")
                due = loop.time() + interval
            if made:
                await publish(bootstrap, topics.checkpoints, made)
                log.info("published %d checkpoint(s)", len(made))
                if metrics is not None:
                    for checkpoint in made:
                        metrics.published.labels(reason=checkpoint.reason).inc()
                    metrics.last_published.set_to_current_time()
                if on_publish is not None:
                    on_publish(made)
    finally:
        await stop_consumer(consumer)


async def checkpoints_for_export(bootstrap: str, manifest: Manifest) -> list[Checkpoint]:
    """The checkpoints an export of ``manifest``'s scope includes (its tenant's, or all)."""
    topic = Topics(prefix=manifest.topic_prefix).checkpoints
    found, _ = await fetch_checkpoints(bootstrap, topic, manifest.tenant)
    return found


def store_checkpoints(folder: Path, manifest: Manifest, fetched: list[Checkpoint]) -> int:
    """Add ``fetched`` to the archive's checkpoints file (kept across exports: the topic is
    compacted, the archive remembers every checkpoint it saw); note it in the manifest."""
    path = folder / CHECKPOINTS_FILE
    kept = read_checkpoints(path) if path.exists() else []
    merged = {c.checkpoint_id: c for c in [*kept, *fetched]}
    if not merged:
        return 0
    digest = write_checkpoints(path, merged.values())
    manifest.checkpoints = {"file": CHECKPOINTS_FILE, "sha256": digest, "count": len(merged)}
    return len(merged)
