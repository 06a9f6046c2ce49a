"""A change of settlement worker: a campaign whose events span it still settles, and what a
fenced worker had noted to erase is not erased.

The new owner's first poll can bring the partition's records together with its assignment,
before the worker has rebuilt the partition from the log: the reader then meets those
campaigns for the first time and asks the worker which ``seq`` each was applied to. Answered
from a state not rebuilt yet (none: 0), the reader would wait for seq 1 forever and hold back
every later event of the campaign, so a campaign closed after the hand-over would never be
settled.
"""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from prometheus_client import CollectorRegistry

from schemas.events import CampaignSettled
from schemas.tenancy import pledge_key
from schemas.topics import ensure_topics
from services.settlement.adapters.sandbox_gateway import SandboxGateway
from services.settlement.app import SettlementWorker
from services.settlement.config import SettlementSettings
from services.settlement.token_eraser import TokenEraser
from tests.support.settlement import CampaignBook
from tests.support.settlement_kafka import FakeClock, read_stream, write_campaigns

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


async def settled(settings: SettlementSettings, campaign_id: str, within: float) -> bool:
    """Whether the campaign's settlement stream gets a CampaignSettled within ``within`` s."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while loop.time() < deadline:
        stream = await read_stream(
            settings.kafka_bootstrap, settings.topics(), "settlement", campaign_id
        )
        if any(isinstance(e.payload, CampaignSettled) for e in stream):
            return True
        await asyncio.sleep(0.5)
    return False


async def test_a_campaign_spanning_a_hand_over_to_another_worker_settles(
    bootstrap: str, redis_server: str, unique: str
) -> None:
    prefix = f"{unique}."
    settings = SettlementSettings(
        kafka_bootstrap=bootstrap, redis_url=redis_server, topic_prefix=prefix, partitions=1,
        sandbox_prefix=f"{prefix}sbx:",
        # An idle turn polls for a second: the new owner's first poll waits long enough to
        # bring the partition's records with its assignment.
        settlement_tick_seconds=2.0,
    )  # fmt: skip
    topics = settings.topics()

    def worker() -> SettlementWorker:
        # Each its own gateway client (a worker closes its own when it stops).
        sandbox = SandboxGateway.from_url(redis_server, prefix=settings.sandbox_prefix)
        return SettlementWorker(settings, sandbox, clock=FakeClock(), registry=CollectorRegistry())

    book = CampaignBook(campaign_id="spans", goal_minor=1_000).launch()
    for i in range(5):
        book.pledge(f"p{i}", 2_500)
    first = worker()
    second: SettlementWorker | None = None
    try:
        await ensure_topics(bootstrap, topics)
        await write_campaigns(bootstrap, topics, prefix + "t", book.log)
        await first.start()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        while (state := first.engine.states.get("spans")) is None or state.campaign_seq < 6:
            assert loop.time() < deadline, "the first worker did not read the campaign"
            await asyncio.sleep(0.1)
        await first.stop()  # commits what it read and leaves the group

        # One more pledge before the second worker starts: its first poll reads it.
        start = len(book.log)
        book.pledge("p5", 2_500)
        await write_campaigns(bootstrap, topics, prefix + "t", book.log[start:])
        second = worker()
        await second.start()
        await asyncio.wait_for(second.ready.wait(), 60)

        start = len(book.log)
        book.close("funded")
        await write_campaigns(bootstrap, topics, prefix + "t", book.log[start:])
        assert await settled(settings, "spans", within=30), "the campaign was never settled"
    finally:
        if second is not None:
            await second.stop()
        cleanup = SandboxGateway.from_url(redis_server, prefix=settings.sandbox_prefix)
        await cleanup.forget()
        await cleanup.aclose()


async def test_the_tombstones_noted_for_a_fenced_partition_are_not_written(
    bootstrap: str, unique: str
) -> None:
    # A fenced transaction's events never reached the log: its pledges are not resolved, so
    # their payment tokens must stay (the partition's new owner may still need them).
    topics = SettlementSettings(topic_prefix=f"{unique}.", partitions=1).topics()
    await ensure_topics(bootstrap, topics)
    eraser = TokenEraser(bootstrap, topics.payment_tokens)
    await eraser.start()
    try:
        eraser.note("kept", "p1")
        eraser.note("fenced", "p2")
        eraser.forget(lambda campaign_id: campaign_id != "fenced")
        await eraser.flush()
    finally:
        await eraser.stop()
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tp = TopicPartition(topics.payment_tokens, 0)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        records = await consumer.getmany(tp, timeout_ms=5000)
    finally:
        await consumer.stop()
    written = [(r.key, r.value) for r in records.get(tp, [])]
    assert written == [(pledge_key("kept", "p1").encode(), None)]
