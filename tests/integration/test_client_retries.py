"""The typed client's retries against the real API, Redis and Kafka: 503s injected in front of
the app - before it saw a request, and after it handled one (the answer lost) - and still
exactly one command on ``pledge-commands`` per logical call."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer
from prometheus_client import CollectorRegistry

from schemas.commands import decode_command
from schemas.tenancy import qualify
from services.pledge.api import create_app
from tests.support.api import (
    KEY_A,
    api_settings,
    create_topics,
    launch_body,
    new_id,
    pledge_body,
)
from tests.support.flaky import client_through_flaky
from tests.support.infra import kafka_bootstrap, redis_url

pytestmark = pytest.mark.integration


async def _commands(bootstrap: str, topic: str) -> list[tuple[str, str]]:
    """(command type, campaign id) of every record on ``topic``."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        isolation_level="read_committed",
    )
    await consumer.start()
    try:
        found: list[tuple[str, str]] = []
        while batch := await consumer.getmany(timeout_ms=1500):
            for records in batch.values():
                for record in records:
                    command = decode_command(record.value)
                    found.append((type(command).__name__, command.campaign_id))
        return found
    finally:
        await consumer.stop()


async def _drop_namespace(url: str, prefix: str) -> None:
    client = aioredis.Redis.from_url(url)
    try:
        found = [key async for key in client.scan_iter(match=f"{prefix}pf:*")]
        if found:
            await client.unlink(*found)
    finally:
        await client.aclose()


async def test_one_command_per_logical_call_across_injected_503s(
    broker: object, redis_server: str, unique: str
) -> None:
    settings = api_settings(kafka_bootstrap(), redis_url(), unique)
    topics = await create_topics(settings)
    app = create_app(settings, registry=CollectorRegistry())
    slept: list[float] = []
    campaign_id = new_id("c")
    async with client_through_flaky(app, KEY_A, attempts=4, slept=slept) as (flaky, api):
        flaky.plan = ["after", "after", "pass"]
        await api.launch_campaign(launch_body(campaign_id))
        for n in range(3):
            flaky.plan = ["before", "after", "pass"]
            await api.make_pledge(campaign_id, pledge_body(f"p-{n}", tier_id=None))
        flaky.plan = ["after", "pass"]
        await api.close_campaign(campaign_id, {"reason": "creator_cancelled"})

    sent = await _commands(settings.kafka_bootstrap, topics.commands)
    await _drop_namespace(settings.redis_url, settings.topic_prefix)
    qualified = qualify("tenant-a", campaign_id)  # the commands carry the internal id
    assert sent == [
        ("LaunchCampaign", qualified),
        ("MakePledge", qualified),
        ("MakePledge", qualified),
        ("MakePledge", qualified),
        ("CloseCampaign", qualified),
    ]
    assert slept == [0.0] * 9  # every 503 retried after its Retry-After: 0
    assert len(flaky.keys) == 14 and len(set(flaky.keys)) == 5  # one key per logical call
