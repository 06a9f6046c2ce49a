"""Helpers of the ingest API tests: isolated settings, the app in-process or under uvicorn,
the read-model projector and the processor running beside it."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import redis.asyncio as aioredis
import uvicorn
from aiokafka import AIOKafkaConsumer
from prometheus_client import CollectorRegistry

from schemas import decode
from schemas.topics import Topics, ensure_topics
from services.pledge.adapters.redis_readmodel import Keys
from services.pledge.api import create_app
from services.pledge.config import PledgeSettings
from services.pledge.projector import Projector
from services.settlement.config import SettlementSettings

KEY_A = "key-a-0123456789"
KEY_B = "key-b-0123456789"
AUTH_A = {"Authorization": f"Bearer {KEY_A}"}
AUTH_B = {"Authorization": f"Bearer {KEY_B}"}


def api_settings(bootstrap: str, redis_url: str, prefix: str, **overrides: Any) -> PledgeSettings:
    """Settings isolating one test: its own topics, groups and Redis namespace."""
    values: dict[str, Any] = {
        "kafka_bootstrap": bootstrap,
        "redis_url": redis_url,
        "topic_prefix": f"{prefix}.",
        "partitions": 3,
        "api_keys": f"tenant-a:{KEY_A},tenant-b:{KEY_B}",
        "processor_poll_ms": 50,
        "deadline_sweep_seconds": 0.2,
        "processor_session_timeout_ms": 6000,
        # Static membership, as make run and k8s set it (a restarted worker rejoins at once).
        "processor_instance_id": f"{prefix}-processor-0",
        **overrides,
    }
    return PledgeSettings(**values)


#: Prefixes of the topics made by :func:`create_topics`: the session deletes them at its end.
CREATED_PREFIXES: set[str] = set()


async def create_topics(settings: PledgeSettings) -> Topics:
    topics = Topics(prefix=settings.topic_prefix, partitions=settings.partitions)
    if settings.topic_prefix:
        CREATED_PREFIXES.add(settings.topic_prefix)
    await ensure_topics(settings.kafka_bootstrap, topics)
    return topics


async def read_model_whole(settings: PledgeSettings) -> None:
    """Mark the read model whole, as a running projector does (its epoch marker): without it
    the API answers a missing campaign 503 (the read model may be rebuilding), not 404."""
    client = aioredis.Redis.from_url(settings.redis_url)
    try:
        await client.set(Keys(settings.topic_prefix).projector_epoch(), b"test")
    finally:
        await client.aclose()


@contextlib.asynccontextmanager
async def api_client(settings: PledgeSettings) -> AsyncIterator[httpx.AsyncClient]:
    """The app in-process (lifespan entered) behind an httpx client."""
    app = create_app(settings, registry=CollectorRegistry())
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            yield client


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.asynccontextmanager
async def uvicorn_server(settings: PledgeSettings) -> AsyncIterator[str]:
    """The app under a real uvicorn server on a loopback port; yields its base URL."""
    app = create_app(settings, registry=CollectorRegistry())
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    for _ in range(200):
        if server.started:
            break
        if task.done():
            task.result()
        await asyncio.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


@contextlib.asynccontextmanager
async def projector(settings: PledgeSettings) -> AsyncIterator[Projector]:
    """The read-model projector running in the background."""
    client = aioredis.Redis.from_url(settings.redis_url)
    proj = Projector(settings, client)
    await proj.start()
    stop = asyncio.Event()
    task = asyncio.create_task(proj.run(stop))
    try:
        yield proj
    finally:
        stop.set()
        await task
        await proj.stop()
        await client.aclose()


@contextlib.asynccontextmanager
async def settlement_projector(settings: SettlementSettings) -> AsyncIterator[None]:
    """The settlement read model's projector running in the background."""
    from services.settlement.projector import SettlementProjector

    client = aioredis.Redis.from_url(settings.redis_url)
    proj = SettlementProjector(settings, client, registry=CollectorRegistry())
    await proj.start()
    stop = asyncio.Event()
    task = asyncio.create_task(proj.run(stop))
    try:
        yield
    finally:
        stop.set()
        await task
        await proj.stop()
        await client.aclose()


def settlement_settings_for(settings: PledgeSettings, **overrides: Any) -> SettlementSettings:
    """Settlement settings sharing the API's broker, Redis and topic prefix."""
    return SettlementSettings(
        kafka_bootstrap=settings.kafka_bootstrap,
        redis_url=settings.redis_url,
        topic_prefix=settings.topic_prefix,
        partitions=settings.partitions,
        **overrides,
    )


@contextlib.asynccontextmanager
async def processor(settings: PledgeSettings) -> AsyncIterator[Any]:
    """The real campaign processor, in-process, owning every partition."""
    from services.pledge.processor.app import build_processor

    proc = build_processor(settings)
    await proc.start()
    await proc.wait_assigned()
    try:
        yield proc
    finally:
        await proc.stop()


async def topic_values(settings: PledgeSettings, name: str) -> list[bytes]:
    """Every committed record value of one topic of the settings' prefix."""
    consumer = AIOKafkaConsumer(
        f"{settings.topic_prefix}{name}",
        bootstrap_servers=settings.kafka_bootstrap,
        isolation_level="read_committed",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        found: list[bytes] = []
        while batch := await consumer.getmany(timeout_ms=1000):
            for records in batch.values():
                found.extend(r.value for r in records if r.value is not None)
        return found
    finally:
        await consumer.stop()


async def events_of(settings: PledgeSettings, event_type: str) -> list[Any]:
    """Every committed event of one type on the settings' topics."""
    return [decode(value) for value in await topic_values(settings, event_type)]


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


async def launched(api: httpx.AsyncClient, base: str = "", **overrides: Any) -> str:
    """A campaign of tenant A, launched through the API at ``base``, open and projected."""
    campaign_id = new_id("c")
    response = await api.post(
        f"{base}/v1/campaigns",
        json=launch_body(campaign_id, **overrides),
        headers=write_headers(new_id("k"), Prefer="wait=10"),
    )
    assert response.status_code == 201, response.text
    return campaign_id


#: One deadline for the whole test run: computed per call, two calls straddling a second would
#: send different bodies, and a retry with the same Idempotency-Key would be refused as reused.
LAUNCH_DEADLINE = (datetime.now(UTC) + timedelta(days=30)).strftime("%Y-%m-%dT%H:%M:%SZ")


def launch_body(campaign_id: str, **overrides: Any) -> dict[str, Any]:
    deadline = LAUNCH_DEADLINE
    body: dict[str, Any] = {
        "campaign_id": campaign_id,
        "title": "Mon album",
        "creator_id": "u-9",
        "goal": {"amount_minor": 500000, "currency": "EUR"},
        "deadline": deadline,
        "funding_model": "all_or_nothing",
        "settlement_mode": "authorize_then_capture",
        "kind": "reward",
        "commission_bps": 500,
        "tiers": [
            {"tier_id": "t1", "title": "CD dédicacé", "min_amount_minor": 2500, "quantity_limit": 1}
        ],
    }
    body.update(overrides)
    return body


def pledge_body(pledge_id: str | None = "p-1", **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "backer_id": "b-1",
        "amount_minor": 2500,
        "currency": "EUR",
        "tier_id": "t1",
        "payment_token": "tok_visa",
        "locale": "fr",
    }
    if pledge_id is not None:
        body["pledge_id"] = pledge_id
    body.update(overrides)
    return body


def write_headers(key: str, auth: dict[str, str] = AUTH_A, **extra: str) -> dict[str, str]:
    return {**auth, "Idempotency-Key": key, **extra}


async def eventually(probe: Any, *, within: float = 20.0, every: float = 0.05) -> Any:
    """Await ``probe()`` until it returns something truthy (or fail after ``within`` s)."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        value = await probe()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {within}s (last: {value!r})")
        await asyncio.sleep(every)
