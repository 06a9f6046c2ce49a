"""A pump's work follows what can start, not what waits: a lane with room is served at once
while another lane's huge backlog waits, a full lane's backlog is never read, everything
a pump starts is taken in one Redis call, and the old single due set of a partition is moved
into the lanes when the partition is acquired.

Real Redis queue (its commands counted by a thin client subclass), an in-memory poster that
holds the busy endpoint's sends, and a clock moved on by a second per pump, so anything the
queue pushes back is due again at the next pump.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal
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
from services.notify.ports import Room
from services.notify.records import encode_notification, lane_of
from services.notify.webhooks import new_secret
from tests.support.api import eventually
from tests.support.invariants import wipe_namespace
from tests.support.notify_fakes import MemoryRecorder

pytestmark = pytest.mark.integration

SLOTS = 2


class CountingRedis(aioredis.Redis):
    """A client that keeps every command it sends and the reply (the pump's Redis work)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.calls: list[tuple[tuple[Any, ...], Any]] = []

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        reply = await super().execute_command(*args, **options)
        self.calls.append((args, reply))
        return reply


def _flat(value: Any) -> list[str]:
    if isinstance(value, list | tuple):
        return [x for v in value for x in _flat(v)]
    return [value.decode(errors="replace") if isinstance(value, bytes) else str(value)]


@dataclass
class Poster:
    """Answers at once, except on the ``busy`` endpoint, whose sends wait for ``release``."""

    posted: list[str] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    down: set[str] = field(default_factory=set)

    async def post(self, url: str, headers: dict[str, str], body: bytes) -> PostOutcome:
        self.posted.append(headers["webhook-id"])
        if url.endswith("/busy"):
            await self.release.wait()
        if url.rpartition("/")[2] in self.down:
            return PostOutcome(False, "http_503", status=503)
        return PostOutcome(True)


@dataclass
class Rig:
    dispatcher: Dispatcher
    queue: RedisDeliveryQueue
    client: CountingRedis
    poster: Poster
    recorder: MemoryRecorder
    clock: list[float]
    added: int = 0

    async def add(self, endpoint: str, count: int) -> list[str]:
        """Enqueue ``count`` notifications for ``endpoint``, due now, in this order."""
        ids = []
        for i in range(count):
            n = Notification(
                notification_id=f"msg_{endpoint}_{i:05d}_{uuid4().hex[:6]}",
                cause_event_id=uuid4(),
                campaign_id=f"c{i % 3}",
                tenant_id="tenant-a",
                event_type="PledgeMade",
                occurred_at=datetime.now(UTC),
                channel="webhook",
                recipient_kind="platform",
                recipient=endpoint,
                template="pledge_made",
                params={"type": "PledgeMade", "data": {"i": i}},
            )
            self.added += 1  # each later than the one before, across calls
            assert await self.queue.enqueue(n, int(self.clock[0] * 1000) - 60_000 + self.added)
            ids.append(n.notification_id)
        return ids

    async def pump(self) -> int:
        """One pump, the clock a second later (anything pushed back is due again)."""
        self.clock[0] += 1.0
        return await self.dispatcher.pump()


@asynccontextmanager
async def rig(
    redis_server: str, unique: str, *, partitions: int = 3, **overrides: Any
) -> AsyncIterator[Rig]:
    clock = [1_800_000_000.0]
    settings = NotifySettings(
        redis_url=redis_server,
        topic_prefix=unique,
        partitions=partitions,
        notify_allow_private_urls=True,
        notify_endpoint_concurrency=SLOTS,
        **overrides,
    )
    client = CountingRedis.from_url(redis_server)
    queue = RedisDeliveryQueue(client, prefix=unique, partition_of=lambda c: int(c[-1]))
    directory = Directory()
    for name in ("busy", "idle", "other", "down"):
        ep = WebhookEndpoint(
            name, "tenant-a", f"http://127.0.0.1:9/{name}", frozenset({"PledgeMade"}), new_secret()
        )
        directory.apply_endpoint(endpoint_key("tenant-a", name), endpoint_value(ep))
    poster, recorder = Poster(), MemoryRecorder()
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
        clock=lambda: clock[0],
    )
    try:
        yield Rig(dispatcher, queue, client, poster, recorder, clock)
    finally:
        poster.release.set()
        await dispatcher.drain()
        await wipe_namespace(redis_server, f"{unique}notify:")
        await client.aclose()


async def test_a_lane_with_room_is_served_while_another_lane_has_a_huge_backlog(
    redis_server: str, unique: str
) -> None:
    async with rig(redis_server, unique) as r:
        backlog = await r.add("busy", 3000)  # all older than the idle lane's
        idle = await r.add("idle", 3)
        assert await r.pump() == 2 * SLOTS  # the busy lane's slots, and the idle lane's
        await eventually(lambda: _true(len(r.poster.posted) == 2 * SLOTS), within=5, every=0.01)
        # (the busy lane's oldest and the next of its partition: backlog[3], also in c0)
        assert set(r.poster.posted) == {backlog[0], backlog[3], *idle[:SLOTS]}
        await eventually(lambda: _true(len(r.recorder.sent) == SLOTS), within=5, every=0.01)
        assert await r.pump() == 1  # the idle lane's last one; the busy lane is still full
        await eventually(lambda: _true(len(r.recorder.sent) == 3), within=5, every=0.01)
        assert r.recorder.sent == idle
        assert r.poster.posted[-1] == idle[-1]


async def test_a_full_lanes_backlog_is_not_read_by_the_pump(redis_server: str, unique: str) -> None:
    for size in (50, 2000):
        async with rig(redis_server, f"{unique}{size}.") as r:
            backlog = await r.add("busy", size)
            assert await r.pump() == SLOTS  # its slots are taken; the sends hang
            await eventually(lambda: _true(len(r.poster.posted) == SLOTS), within=5, every=0.01)
            waiting = set(backlog) - set(r.poster.posted)
            r.client.calls.clear()
            for _ in range(5):
                assert await r.pump() == 0
            read = [
                x
                for args, reply in r.client.calls
                for x in (*_flat(args), *_flat(reply))
                if x in waiting
            ]
            # no item of the waiting backlog goes to or comes from Redis, however long it is
            assert read == [], f"backlog {size}: {len(read)} items moved over 5 pumps"
            assert len(r.client.calls) <= 5  # one call a pump at most
            r.poster.release.set()
            await r.dispatcher.drain()
            assert await r.pump() == SLOTS  # slots free: the next ones, at once
            await r.dispatcher.drain()
            # the oldest waiting (partition 1) and the next of its partition
            assert r.poster.posted[SLOTS:] == [backlog[1], backlog[4]]


async def test_an_open_circuit_starts_nothing_reads_none_of_its_lane_then_probes_once(
    redis_server: str, unique: str
) -> None:
    settings = {"notify_breaker_threshold": SLOTS, "notify_breaker_cooldown_seconds": 30}
    async with rig(redis_server, unique, **settings) as r:
        r.poster.down.add("down")
        backlog = await r.add("down", 50)
        assert await r.pump() == SLOTS  # both fail: the circuit opens
        await r.dispatcher.drain()
        idle = await r.add("idle", 1)
        r.client.calls.clear()
        assert await r.pump() == 1  # the other lane only
        await r.dispatcher.drain()
        assert r.poster.posted[SLOTS:] == idle
        for _ in range(3):
            assert await r.pump() == 0
        waiting = set(backlog) - set(r.poster.posted)
        assert not [x for args, reply in r.client.calls for x in _flat(reply) if x in waiting]
        r.clock[0] += 30  # the cooldown is over: one probe, and only one at a time
        assert await r.pump() == 1
        assert await r.pump() == 0
        await r.dispatcher.drain()  # the probe failed: open again
        assert await r.pump() == 0
        assert len(r.poster.posted) == SLOTS + 2


async def test_a_pump_takes_everything_it_starts_in_one_redis_call(
    redis_server: str, unique: str
) -> None:
    async with rig(redis_server, unique) as r:
        for name in ("busy", "idle", "other"):
            await r.add(name, 5)
        r.client.calls.clear()
        assert await r.pump() == 3 * SLOTS
        assert len(r.client.calls) == 1, [args[0] for args, _ in r.client.calls]


async def test_a_lanes_slots_go_to_the_oldest_then_to_the_next_ones_of_its_partition(
    redis_server: str, unique: str
) -> None:
    async with rig(redis_server, unique) as r:
        ids = await r.add("idle", 12)  # c0, c1, c2, c0, ...: partitions 0, 1, 2, 0, ...
        pumps = []
        while len(r.recorder.sent) < len(ids):
            before = len(r.poster.posted)
            assert await r.pump() == SLOTS
            await r.dispatcher.drain()
            pumps.append(r.poster.posted[before:])
        # the oldest waiting, then its partition's next one (one Kafka transaction records
        # both): every partition is served in turn, none starves
        assert pumps == [[ids[i], ids[i + 3]] for i in (0, 1, 2, 6, 7, 8)]


async def test_acquiring_a_partition_moves_the_old_single_due_set_into_the_lanes(
    redis_server: str, unique: str
) -> None:
    client = aioredis.Redis.from_url(redis_server)
    queue = RedisDeliveryQueue(client, prefix=unique, fenced=True)
    old_set = f"{unique}notify:due:0"
    hooks = [_stored("webhook", f"hook{i % 2}", i) for i in range(2500)]  # more than a chunk
    mails = [_stored("email", "backer-1", i) for i in range(3)]
    try:
        # as the previous version left them: one set for the partition, every lane mixed
        for i, n in enumerate([*mails, *hooks]):
            await client.hset(
                f"{unique}notify:n:{n.notification_id}",
                mapping={
                    "data": encode_notification(n),
                    "lane": lane_of(n),
                    "attempts": 0,
                    "state": "pending",
                    "part": 0,
                },
            )
            await client.zadd(old_set, {n.notification_id: 1_000 + i})
        await client.zadd(old_set, {"msg_forgotten": 999})  # its hash expired long ago
        assert await queue.pending([0]) == 0  # not seen by the new layout yet

        await queue.acquire([0])

        assert not await client.exists(old_set)
        assert await queue.pending([0]) == len(hooks) + len(mails)
        lane = queue.lane_key(0, "webhook:hook0")
        assert await client.zscore(lane, hooks[0].notification_id) == 1_000 + len(mails)
        taken = await queue.take(10_000, 60_000, [0], Room(default=2, lanes={"email": 5}))
        # oldest first per lane, one e-mail per person at a time, due times kept
        assert [(q.lane, q.notification.notification_id) for q in taken] == [
            ("email|tenant-a/backer/backer-1", mails[0].notification_id),
            ("webhook:hook0", hooks[0].notification_id),
            ("webhook:hook0", hooks[2].notification_id),
            ("webhook:hook1", hooks[1].notification_id),
            ("webhook:hook1", hooks[3].notification_id),
        ]
        assert taken[0].notification == mails[0]
    finally:
        await wipe_namespace(redis_server, f"{unique}notify:")
        await client.aclose()


async def test_a_persons_emails_of_several_partitions_go_oldest_first_one_at_a_time(
    redis_server: str, unique: str
) -> None:
    client = aioredis.Redis.from_url(redis_server)
    queue = RedisDeliveryQueue(client, prefix=unique, partition_of=lambda c: int(c[-1]))
    other = _stored("email", "backer-y", 0, "c0")
    older = _stored("email", "backer-x", 1, "c1")
    newer = _stored("email", "backer-x", 2, "c0")  # same partition as the oldest of all
    try:
        for due, n in enumerate((other, older, newer)):
            assert await queue.enqueue(n, 1_000 + due)
        room = Room(default=8, lanes={"email": 8})
        taken = await queue.take(10_000, 60_000, [0, 1], room)
        assert [q.notification for q in taken] == [other, older]
        person = "email|tenant-a/backer/backer-x"
        assert await queue.take(10_000, 60_000, [0, 1], Room(8, {"email": 8}, [person])) == []
        await queue.finish(taken[1], "sent")
        taken = await queue.take(10_000, 60_000, [0, 1], room)
        assert [q.notification for q in taken] == [newer]
    finally:
        await wipe_namespace(redis_server, f"{unique}notify:")
        await client.aclose()


def _stored(
    channel: Literal["webhook", "email"], recipient: str, i: int, campaign: str = "c0"
) -> Notification:
    return Notification(
        notification_id=f"msg_{channel}_{i:05d}_{uuid4().hex[:6]}",
        cause_event_id=uuid4(),
        campaign_id=campaign,
        tenant_id="tenant-a",
        event_type="PledgeMade",
        occurred_at=datetime(2026, 11, 30, tzinfo=UTC),
        channel=channel,
        recipient_kind="platform" if channel == "webhook" else "backer",
        recipient=recipient,
        template="pledge_made",
        params={"i": i},
    )


async def _true(value: bool) -> bool:
    return value
