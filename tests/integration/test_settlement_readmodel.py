"""The settlement read model on the real broker and Redis: projected from the settlement
stream, unchanged by a redelivery of everything (a second group reading from the start),
rebuilt identically by ``rebuild`` after a wipe, rebuilt by a running projector when Redis
loses it, and deaf to a record whose key is not its campaign's (dead-lettered ``wrong_key``)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry

from schemas.envelope import Envelope
from schemas.topics import ensure_topics
from services.settlement.adapters.memory_gateway import MemoryGateway
from services.settlement.adapters.redis_readmodel import RedisSettlementReads, SettlementKeys
from services.settlement.config import SettlementSettings
from services.settlement.domain import Policy
from services.settlement.projector import SettlementProjector, rebuild
from tests.support.settlement import CampaignBook, settle
from tests.support.settlement_kafka import write_campaigns

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


async def write_settlement(settings: SettlementSettings, envelopes: list[Envelope]) -> None:
    topics = settings.topics()
    group = settings.topic_prefix + "rm-test"
    await write_campaigns(settings.kafka_bootstrap, topics, group, envelopes, "settlement")


@pytest.fixture
async def settings(bootstrap: str, redis_server: str) -> AsyncIterator[SettlementSettings]:
    from tests.conftest import delete_topics
    from tests.support.infra import unique_name

    prefix = unique_name() + "."
    settings = SettlementSettings(
        kafka_bootstrap=bootstrap, redis_url=redis_server, topic_prefix=prefix, partitions=2
    )
    await ensure_topics(bootstrap, settings.topics())
    try:
        yield settings
    finally:
        client = aioredis.Redis.from_url(redis_server)
        await RedisSettlementReads(client, SettlementKeys(prefix)).wipe()
        await client.aclose()
        await delete_topics(bootstrap, {prefix})


async def project_once(settings: SettlementSettings, group: str) -> None:
    settings = settings.model_copy(update={"settlement_readmodel_group": group})
    client = aioredis.Redis.from_url(settings.redis_url)
    projector = SettlementProjector(settings, client, registry=CollectorRegistry())
    try:
        await projector.start()
        await projector.run_until_caught_up()
    finally:
        await projector.stop()
        await client.aclose()


async def snapshot(settings: SettlementSettings, pledges: list[str]) -> dict[str, Any]:
    client = aioredis.Redis.from_url(settings.redis_url)
    reads = RedisSettlementReads(client, SettlementKeys(settings.topic_prefix))
    try:
        return {
            "summary": await reads.summary("camp-1"),
            **{p: await reads.payment("camp-1", p) for p in pledges},
        }
    finally:
        await client.aclose()


def settled_log() -> list[Envelope]:
    book = CampaignBook(goal_minor=1_000).launch()
    book.pledge("p1", 2_500)
    book.pledge("p2", 4_000)
    book.pledge("p3", 1_000, "tok_declined")
    book.close("funded")
    settle(book, MemoryGateway(), policy=Policy(retry_schedule=(timedelta(days=1),)))
    assert book.state.settled is not None
    return book.log


async def test_projected_redelivered_and_rebuilt_identically(settings: SettlementSettings) -> None:
    await write_settlement(settings, settled_log())
    await project_once(settings, "rm-a")
    first = await snapshot(settings, ["p1", "p2", "p3"])
    summary = first["summary"]
    assert summary is not None and summary["settled"]["outcome"] == "funded"
    assert summary["captured_count"] == 2 and summary["released_count"] == 1
    assert first["p3"]["status"] == "dropped"
    # Everything handed again (another group from the start): applied once, by seq.
    await project_once(settings, "rm-b")
    assert await snapshot(settings, ["p1", "p2", "p3"]) == first
    assert await rebuild(settings) == summary["seq"]
    assert await snapshot(settings, ["p1", "p2", "p3"]) == first


async def test_a_running_projector_rebuilds_what_redis_lost(settings: SettlementSettings) -> None:
    await write_settlement(settings, settled_log())
    client = aioredis.Redis.from_url(settings.redis_url)
    registry = CollectorRegistry()
    projector = SettlementProjector(settings, client, registry=registry, epoch_check_seconds=0.2)
    stop = asyncio.Event()
    await projector.start()
    task = asyncio.create_task(projector.run(stop))
    try:
        for _ in range(200):
            if (await snapshot(settings, []))["summary"] is not None:
                break
            await asyncio.sleep(0.05)
        first = await snapshot(settings, ["p1", "p3"])
        await RedisSettlementReads(client, SettlementKeys(settings.topic_prefix)).wipe()
        for _ in range(300):
            again = await snapshot(settings, ["p1", "p3"])
            if again == first:
                break
            await asyncio.sleep(0.05)
        assert again == first and projector.rebuilds == 1
        # The marker (the API's "read model whole") is back once the replay caught up.
        marker = SettlementKeys(settings.topic_prefix).epoch()
        for _ in range(100):
            if await client.exists(marker):
                break
            await asyncio.sleep(0.05)
        assert await client.exists(marker)
        assert registry.get_sample_value("pledgeflow_settlement_readmodel_rebuilds_total") == 1
    finally:
        stop.set()
        await task
        await projector.stop()
        await client.aclose()


async def test_the_projector_joins_as_a_static_member(settings: SettlementSettings) -> None:
    from aiokafka.admin import AIOKafkaAdminClient

    from tests.support.fleet import wait_group

    instance = f"{settings.topic_prefix}srm-0"
    settings = settings.model_copy(
        update={"settlement_readmodel_instance_id": instance, "settlement_readmodel_group": "s"}
    )
    group = f"{settings.topic_prefix}s"
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    client = aioredis.Redis.from_url(settings.redis_url)
    projector = SettlementProjector(settings, client, registry=CollectorRegistry())
    stop = asyncio.Event()
    await projector.start()
    task = asyncio.create_task(projector.run(stop))
    try:
        view, _ = await wait_group(
            admin, group, lambda v: v.stable_with([instance], 2), within=30, what=group
        )
        assert set(view.owners) == {instance}
    finally:
        stop.set()
        await task
        await projector.stop()
        await client.aclose()
        await admin.close()


async def test_a_record_keyed_for_another_campaign_is_dead_lettered_not_applied(
    settings: SettlementSettings,
) -> None:
    from schemas.codec import encode, message_key
    from services.streams import PartitionWriter, key_partition
    from tests.support.processor import read_topics

    log = settled_log()
    settlement = [e for e in log if e.stream == "settlement"]
    last = settlement[-1]
    await write_settlement(settings, [e for e in log if e is not last])
    # The campaign's next event, keyed as another campaign (so in that one's partition).
    topics = settings.topics()
    wrong = message_key("camp-2")
    writer = PartitionWriter(
        settings.kafka_bootstrap,
        settings.topic_prefix + "forger",
        key_partition(wrong, topics.partitions),
    )
    await writer.start()
    try:
        await writer.write({topics.for_event(last.event_type): [(wrong, encode(last), [])]})
    finally:
        await writer.close()
    await project_once(settings, "rm-key")
    summary = (await snapshot(settings, []))["summary"]
    assert summary is not None and summary["seq"] == last.seq - 1  # the forged one not applied
    letters = await read_topics(
        settings.kafka_bootstrap, [topics.dead_letter("readmodel")], topics.partitions
    )
    causes = [dict(headers)["dlq.cause"] for *_, headers in letters]
    assert causes == [b"wrong_key"]
    assert letters[0][3] == wrong and letters[0][4] == encode(last)
