"""Every consumer against bad records (issue 11, item 5): the processor on ``pledge-commands``
and the projector on each campaign topic. Each bad record is dead-lettered with its cause,
counted, the worker keeps running, and the good records after it are applied.

Commands are appended by the API outside any transaction by design, so "a record outside any
transaction" is a fault only on the event topics (their writers are all transactional).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis
from aiokafka import AIOKafkaProducer
from prometheus_client import CollectorRegistry

from schemas import CancelPledge, CloseCampaign, encode, encode_command, message_key
from schemas.topics import COMMANDS_TOPIC, Topics
from services.pledge.adapters.redis_readmodel import Keys, ReadModelStore
from services.pledge.domain import CampaignState, decide, evolve
from services.pledge.processor import Processor
from services.pledge.processor.metrics import ProcessorMetrics
from services.pledge.projector import Projector
from services.pledge.projector.metrics import ReadModelMetrics
from services.streams import StreamMetrics
from tests.support.api import api_settings, create_topics, eventually
from tests.support.processor import launch, pledge, produce_commands, read_topics

pytestmark = pytest.mark.integration

LIMIT = 4096
NOW = datetime.now(UTC).replace(microsecond=0)


def history(campaign_id: str) -> list[Any]:
    """Commands whose events cover every campaign topic: launch, pledge, refused pledge,
    the goal, a cancellation, the close."""
    common = {
        "tenant_id": "tenant-a",
        "issued_at": NOW,
        "campaign_id": campaign_id,
    }
    return [
        launch(campaign_id, goal_minor=5000, tenant="tenant-a", issued_at=NOW,
               deadline=NOW + timedelta(days=30)),
        pledge(campaign_id, f"{campaign_id}-p1", amount_minor=3000, tenant="tenant-a"),
        pledge(campaign_id, f"{campaign_id}-p2", currency="USD", tenant="tenant-a"),
        pledge(campaign_id, f"{campaign_id}-p3", amount_minor=2500, tenant="tenant-a"),
        CancelPledge(**common, command_id=f"cancel-{campaign_id}",
                     correlation_id="corr-cancel", pledge_id=f"{campaign_id}-p1"),
        CloseCampaign(**common, command_id=f"close-{campaign_id}",
                      correlation_id="corr-close", reason="creator_cancelled"),
    ]  # fmt: skip


def forged_events(campaign_id: str) -> dict[str, bytes]:
    """One real, well-formed event of each campaign type (decided here, not by the processor)."""
    state = CampaignState.empty(campaign_id)
    out: dict[str, bytes] = {}
    for command in history(campaign_id):
        for envelope in decide(state, command, NOW + timedelta(seconds=1)):
            evolve(state, envelope)
            out.setdefault(envelope.event_type, encode(envelope))
    return out


def altered(value: bytes, **fields: Any) -> bytes:
    raw = orjson.loads(value)
    raw.update(fields)
    return orjson.dumps(raw)


def bad_commands(campaign_id: str) -> dict[str, tuple[bytes, bytes]]:
    """``case -> (key, value)`` of bad commands for ``campaign_id``."""
    key = message_key(campaign_id)
    good = encode_command(pledge(campaign_id, "p-fuzz", tenant="tenant-a"))
    return {
        "malformed": (key, b"{not json"),
        "truncated": (key, good[: len(good) // 2]),
        "oversized": (key, b'{"pad":"' + b"x" * (LIMIT + 100) + b'"}'),
        "unknown_type": (key, altered(good, command_type="TeleportPledge")),
        "future_version": (key, altered(good, schema_version=2)),
        "wrong_key": (b"not-" + key, good),
    }


async def write_bad_events(settings: Any, topics: Topics) -> int:
    """Every bad kind into every campaign topic; returns how many were written."""
    forged = forged_events("c-forged")
    transactional = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap,
        transactional_id=f"{settings.topic_prefix}fuzz-writer",
    )
    outsider = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    await transactional.start()
    await outsider.start()
    written = 0
    key = message_key("c-forged")
    try:
        for event_type in sorted(forged):
            topic = topics.for_event(event_type)
            value = forged[event_type]
            async with transactional.transaction():
                for bad_key, bad in (
                    (key, b"{not json"),
                    (key, value[: len(value) // 2]),
                    (key, b'{"event_type":"PledgeMade","pad":"' + b"x" * LIMIT + b'"}'),
                    (key, altered(value, event_type="PledgeTeleported")),
                    (key, altered(value, schema_version=99)),
                    (b"not-c-forged", value),
                ):
                    await transactional.send(topic, bad, key=bad_key)
                    written += 1
            await outsider.send_and_wait(topic, value, key=key)
            written += 1
    finally:
        await transactional.stop()
        await outsider.stop()
    assert written == 7 * 6
    return written


async def test_every_consumer_dead_letters_bad_records_and_applies_the_next_good_one(
    bootstrap: str, redis_server: str, unique: str
) -> None:
    settings = api_settings(
        bootstrap,
        redis_server,
        unique,
        partitions=2,
        max_event_bytes=LIMIT,
        processor_max_command_bytes=LIMIT,
    )
    topics = await create_topics(settings)
    registry = CollectorRegistry()
    processor = Processor(settings, metrics=ProcessorMetrics.create(registry))
    client = aioredis.Redis.from_url(redis_server)
    projector = Projector(
        settings,
        client,
        metrics=ReadModelMetrics.create(registry),
        stream_metrics=StreamMetrics.create(registry),
        lag_every_seconds=0,
    )
    store = ReadModelStore(client, Keys(settings.topic_prefix))
    stop = asyncio.Event()
    await processor.start()
    await processor.wait_assigned()
    await projector.start()
    projecting = asyncio.create_task(projector.run(stop))
    try:
        campaign = "c-fuzz"
        bad = bad_commands(campaign)
        await produce_commands(bootstrap, topics.commands, list(bad.values()))
        bad_events = await write_bad_events(settings, topics)
        await produce_commands(bootstrap, topics.commands, history(campaign))

        async def closed() -> Any:
            row = await store.campaign(campaign)
            return row if row is not None and row.doc and row.doc["status"] == "closed" else None

        row = await eventually(closed, within=60)
        state = processor.state(campaign)
        assert state is not None and state.status == "closed"
        assert row.seq == state.seq  # every good event applied, in order
        assert row.doc["goal_reached_at"] is not None
        assert row.doc["total"]["amount_minor"] == 2500 and row.doc["pledge_count"] == 1
        statuses = {
            p: (await store.pledge(campaign, f"{campaign}-{p}")).status  # type: ignore[union-attr]
            for p in ("p1", "p2", "p3")
        }
        assert statuses == {"p1": "cancelled", "p2": "rejected", "p3": "accepted"}

        async def lettered() -> bool:
            return projector._require().dead_lettered >= bad_events

        await eventually(lettered, within=30)
        assert not projecting.done(), "the projector stopped"
        assert processor._task is not None and not processor._task.done(), "processor stopped"
        assert await store.campaign("c-forged") is None  # no bad event was applied
    finally:
        stop.set()
        await projecting
        await projector.stop()
        await processor.stop()
        await client.aclose()

    command_letters = await read_topics(bootstrap, [topics.dead_letter(COMMANDS_TOPIC)], 2)
    causes = Counter(dict(h)["dlq.cause"].decode() for *_, h in command_letters)
    assert causes == {"undecodable": 4, "oversized": 1, "wrong_key": 1}
    for cause, n in causes.items():
        sample = registry.get_sample_value(
            "pledgeflow_processor_dead_letters_total", {"cause": cause}
        )
        assert sample == n

    event_letters = await read_topics(bootstrap, [topics.dead_letter("readmodel")], 2)
    causes = Counter(dict(h)["dlq.cause"].decode() for *_, h in event_letters)
    assert causes == {
        "malformed": 12,  # malformed and truncated
        "oversized": 6,
        "unknown_event_type": 6,
        "future_schema_version": 6,
        "wrong_key": 6,
        "outside_transaction": 6,
    }
    per_topic = Counter(dict(h)["dlq.topic"].decode() for *_, h in event_letters)
    assert per_topic == {topic: 7 for topic in topics.for_stream("campaign")}
    for *_, headers in event_letters:
        assert dict(headers)["dlq.detail"]
    group = projector.group
    for cause, n in causes.items():
        sample = registry.get_sample_value(
            "pledgeflow_stream_dead_letters_total", {"group": group, "cause": cause}
        )
        assert sample == n
    assert registry.get_sample_value("pledgeflow_readmodel_dead_letters_total") == bad_events
