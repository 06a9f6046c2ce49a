"""A full lane is refilled as soon as a slot frees, in order, while a busy lane's backlog
stays where it is in the queue (never moved, nor read: tests/integration/notify/
test_lane_queues.py counts that).

The dispatcher's clock is frozen, so a lane's items can only start because a slot freed. Real
Redis queue, an in-memory poster and recorder.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from uuid import uuid4

import pytest
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry

from services.notify.adapters.http_webhook import PostOutcome
from services.notify.adapters.redis_queue import RedisDeliveryQueue
from services.notify.adapters.smtp import SmtpTransport
from services.notify.config import NotifySettings
from services.notify.directory import Directory, endpoint_key, endpoint_value
from services.notify.dispatch import Dispatcher
from services.notify.domain import Notification, WebhookEndpoint
from services.notify.mail import MailRenderer
from services.notify.metrics import NotifyMetrics
from services.notify.webhooks import new_secret
from tests.support.invariants import wipe_namespace
from tests.support.notify_fakes import MemoryRecorder

pytestmark = pytest.mark.integration

SLOTS = 2
N = 20


@dataclass
class Poster:
    """Answers 200 at once, or (``hold``) when released; remembers what was posted, in order."""

    posted: list[str] = field(default_factory=list)
    hold: asyncio.Event | None = None

    async def post(self, url: str, headers: dict[str, str], body: bytes) -> PostOutcome:
        self.posted.append(headers["webhook-id"])
        if self.hold is not None:
            await self.hold.wait()
        return PostOutcome(True)


@dataclass
class Rig:
    dispatcher: Dispatcher
    queue: RedisDeliveryQueue
    poster: Poster
    recorder: MemoryRecorder
    now_ms: int
    ids: list[str]


@asynccontextmanager
async def rig(redis_server: str, unique: str, poster: Poster) -> AsyncIterator[Rig]:
    frozen = time.time()
    settings = NotifySettings(
        redis_url=redis_server,
        topic_prefix=unique,
        partitions=1,
        notify_allow_private_urls=True,
        notify_endpoint_concurrency=SLOTS,
    )
    client = aioredis.Redis.from_url(redis_server)
    queue = RedisDeliveryQueue(client, prefix=unique)
    directory = Directory()
    ep = WebhookEndpoint(
        "ep", "tenant-a", "http://127.0.0.1:9/hook", frozenset({"PledgeMade"}), new_secret()
    )
    directory.apply_endpoint(endpoint_key("tenant-a", "ep"), endpoint_value(ep))
    recorder = MemoryRecorder()
    dispatcher = Dispatcher(
        queue=queue,
        directory=directory,
        poster=poster,
        transport=SmtpTransport("127.0.0.1", 1),
        renderer=MailRenderer(sender="n@x.test", message_id_domain="x.test"),
        recorder=recorder,
        dead_letters=None,  # type: ignore[arg-type]  # every send succeeds here
        settings=settings,
        metrics=NotifyMetrics.create(CollectorRegistry()),
        clock=lambda: frozen,
    )
    now_ms = int(frozen * 1000)
    ids = []
    for i in range(N):
        n = Notification(
            notification_id=f"msg_{i:03d}_{uuid4().hex[:8]}",
            cause_event_id=uuid4(),
            campaign_id=f"c-{unique}",
            tenant_id="tenant-a",
            event_type="PledgeMade",
            occurred_at=datetime.now(UTC),
            channel="webhook",
            recipient_kind="platform",
            recipient="ep",
            template="pledge_made",
            params={"type": "PledgeMade", "data": {"i": i}},
        )
        assert await queue.enqueue(n, now_ms - N + i)  # due in this order, all due now
        ids.append(n.notification_id)
    try:
        yield Rig(dispatcher, queue, poster, recorder, now_ms, ids)
    finally:
        await dispatcher.drain()
        await wipe_namespace(redis_server, f"{unique}notify:")
        await client.aclose()


async def test_a_freed_slot_starts_the_next_delivery_without_waiting_for_its_due_time(
    redis_server: str, unique: str
) -> None:
    async with rig(redis_server, unique, Poster()) as r:
        pumps = 0
        while len(r.recorder.sent) < N and pumps < N:
            started = await r.dispatcher.pump()
            pumps += 1
            assert started <= SLOTS
            await r.dispatcher.drain()  # the fast endpoint answered: both slots are free
        # one pump per pair of deliveries, though the clock never reached a pushed-back item
        assert pumps == N // SLOTS
        assert r.recorder.sent == r.ids  # the lane's order
        assert r.poster.posted == r.ids
        assert await r.queue.pending([0]) == 0


async def test_a_busy_lanes_backlog_keeps_its_place_until_slots_free(
    redis_server: str, unique: str
) -> None:
    hold = asyncio.Event()
    async with rig(redis_server, unique, Poster(hold=hold)) as r:
        lane = r.queue.lane_key(0, "webhook:ep")
        client = aioredis.Redis.from_url(redis_server)
        before = {i: await client.zscore(lane, i) for i in r.ids[SLOTS:]}
        assert await r.dispatcher.pump() == SLOTS
        for _ in range(5):
            assert await r.dispatcher.pump() == 0
        # the rest waits for a slot where it was: never pushed back (nor read)
        assert {i: await client.zscore(lane, i) for i in r.ids[SLOTS:]} == before
        await client.aclose()
        assert r.poster.posted == r.ids[:SLOTS]
        hold.set()
        await r.dispatcher.drain()
        for _ in range(N // SLOTS - 1):
            assert await r.dispatcher.pump() == SLOTS
            await r.dispatcher.drain()
        assert r.poster.posted == r.ids
        assert r.recorder.sent == r.ids
