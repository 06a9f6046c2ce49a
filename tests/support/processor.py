"""Helpers of the processor tests: settings, commands, producing them, reading the log back."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from schemas import (
    CancelPledge,
    Envelope,
    LaunchCampaign,
    MakePledge,
    Money,
    decode,
    encode_command,
    message_key,
)
from schemas.topics import Topics, ensure_topics
from services.pledge.config import PledgeSettings
from services.pledge.domain import CampaignState, replay

AnyCommand = LaunchCampaign | MakePledge | CancelPledge

T0 = datetime(2030, 1, 1, tzinfo=UTC)


class FakeClock:
    """A clock tests move by hand."""

    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


def processor_settings(bootstrap: str, prefix: str, **overrides: Any) -> PledgeSettings:
    """Settings isolating one test: its own topics, group and transactional ids."""
    values: dict[str, Any] = {
        "kafka_bootstrap": bootstrap,
        "topic_prefix": f"{prefix}.",
        "partitions": 3,
        "processor_poll_ms": 50,
        "deadline_sweep_seconds": 0.1,
        "processor_session_timeout_ms": 6000,
        **overrides,
    }
    return PledgeSettings(**values)


async def create_topics(settings: PledgeSettings) -> Topics:
    topics = Topics(prefix=settings.topic_prefix, partitions=settings.partitions)
    await ensure_topics(settings.kafka_bootstrap, topics)
    return topics


def launch(
    campaign_id: str,
    *,
    goal_minor: int = 100_000,
    deadline: datetime = T0 + timedelta(days=30),
    issued_at: datetime = T0,
    tenant: str = "tenant-1",
    funding_model: str = "all_or_nothing",
) -> LaunchCampaign:
    return LaunchCampaign.model_validate(
        {
            "command_id": f"launch-{campaign_id}",
            "tenant_id": tenant,
            "correlation_id": f"corr-launch-{campaign_id}",
            "issued_at": issued_at,
            "campaign_id": campaign_id,
            "creator_id": f"creator-{campaign_id}",
            "title": f"Campaign {campaign_id}",
            "goal": {"amount_minor": goal_minor, "currency": "EUR"},
            "deadline": deadline,
            "funding_model": funding_model,
            "settlement_mode": "authorize_then_capture",
            "commission_bps": 500,
        }
    )


def pledge(
    campaign_id: str,
    pledge_id: str,
    *,
    amount_minor: int = 2_500,
    currency: str = "EUR",
    command_id: str | None = None,
    issued_at: datetime | None = None,
    tenant: str = "tenant-1",
) -> MakePledge:
    return MakePledge(
        command_id=command_id or f"cmd-{pledge_id}",
        tenant_id=tenant,
        correlation_id=f"corr-{pledge_id}",
        issued_at=issued_at or datetime.now(UTC),
        campaign_id=campaign_id,
        pledge_id=pledge_id,
        backer_id=f"backer-{pledge_id}",
        amount=Money(amount_minor=amount_minor, currency=currency),
    )


async def produce_commands(
    bootstrap: str, topic: str, commands: Iterable[AnyCommand | tuple[bytes | None, bytes]]
) -> None:
    """Append commands (or raw ``(key, value)`` pairs) with the default key partitioner."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=5
    )
    await producer.start()
    try:
        futures = []
        for command in commands:
            if isinstance(command, tuple):
                key, value = command
            else:
                key, value = message_key(command.campaign_id), encode_command(command)
            futures.append(await producer.send(topic, value, key=key))
        await producer.flush()
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def read_topics(
    bootstrap: str,
    topics: Iterable[str],
    partitions: int,
    *,
    isolation_level: str = "read_committed",
) -> list[tuple[str, int, int, bytes | None, bytes, list[tuple[str, bytes]]]]:
    """Every record now in ``topics`` as ``(topic, partition, offset, key, value, headers)``."""
    tps = [TopicPartition(t, p) for t in topics for p in range(partitions)]
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        isolation_level=isolation_level,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=8 * 1024 * 1024,
        fetch_max_bytes=32 * 1024 * 1024,
    )
    await consumer.start()
    out = []
    try:
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        await consumer.seek_to_beginning(*tps)
        remaining = {tp for tp in tps if ends[tp] > 0}
        while remaining:
            batches = await consumer.getmany(*remaining, timeout_ms=500, max_records=20_000)
            for tp, records in batches.items():
                for r in records:
                    if r.offset < ends[tp]:
                        out.append(
                            (r.topic, r.partition, r.offset, r.key, r.value, list(r.headers))
                        )
            for tp in list(remaining):
                if await consumer.position(tp) >= ends[tp]:
                    remaining.discard(tp)
    finally:
        await consumer.stop()
    return out


async def read_events(
    bootstrap: str, topics: Topics, *, isolation_level: str = "read_committed"
) -> list[Envelope]:
    """Every campaign-stream event, decoded, in (campaign, seq) order."""
    records = await read_topics(
        bootstrap, topics.for_stream("campaign"), topics.partitions, isolation_level=isolation_level
    )
    events = [decode(value) for *_, value, _ in records]
    events.sort(key=lambda e: (e.campaign_id, e.seq))
    return events


def by_campaign(events: Iterable[Envelope]) -> dict[str, list[Envelope]]:
    grouped: dict[str, list[Envelope]] = defaultdict(list)
    for event in events:
        grouped[event.campaign_id].append(event)
    for stream in grouped.values():
        stream.sort(key=lambda e: e.seq)
    return dict(grouped)


def replay_all(events: Iterable[Envelope]) -> dict[str, CampaignState]:
    return {cid: replay(cid, stream) for cid, stream in by_campaign(events).items()}


async def wait_for_events(
    bootstrap: str,
    topics: Topics,
    done: Any,
    *,
    within: float = 60.0,
    every: float = 0.3,
) -> list[Envelope]:
    """Poll the log until ``done(events)`` is true; return the events then."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        events = await read_events(bootstrap, topics)
        if done(events):
            return events
        if loop.time() > deadline:
            raise TimeoutError(f"log never reached the expected shape ({len(events)} events)")
        await asyncio.sleep(every)
