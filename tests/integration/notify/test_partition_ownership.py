"""Who may deliver and record a partition's notifications, on real Redis and Kafka: the owner
token refuses an older owner's claims, a fenced recorder stands down instead of fencing the new
owner back, releasing a partition never leaves a record waiting for good, and a worker's full
lane serves its partitions oldest first (none starves)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from uuid import uuid4

import pytest
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry

from schemas.events import NotificationSent
from schemas.topics import Topics, ensure_topics
from services.notify.adapters.http_webhook import PostOutcome
from services.notify.adapters.kafka_recorder import NotifyStreamRecorder
from services.notify.adapters.redis_queue import RedisDeliveryQueue
from services.notify.adapters.smtp import SmtpTransport
from services.notify.config import NotifySettings
from services.notify.directory import Directory, endpoint_key, endpoint_value
from services.notify.dispatch import Dispatcher
from services.notify.domain import Notification, WebhookEndpoint
from services.notify.mail import MailRenderer
from services.notify.metrics import NotifyMetrics
from services.notify.ports import NotOwner, Queued, Room
from services.notify.webhooks import new_secret
from tests.support.api import eventually
from tests.support.invariants import wipe_namespace
from tests.support.notify_fakes import MemoryRecorder
from tests.support.notify_worker import notify_stream
from tests.unit.notify.events import NOW

pytestmark = pytest.mark.integration


def _notification(nid: str, campaign: str) -> Notification:
    return Notification(
        notification_id=nid,
        cause_event_id=uuid4(),
        campaign_id=campaign,
        tenant_id="tenant-a",
        event_type="PledgeMade",
        occurred_at=NOW,
        channel="webhook",
        recipient_kind="platform",
        recipient="hook",
        template="pledge_made",
        params={},
    )


def _sent(nid: str) -> NotificationSent:
    return NotificationSent(
        notification_id=nid,
        cause_event_id=uuid4(),
        channel="webhook",
        recipient_kind="platform",
        recipient="hook",
        template="pledge_made",
        attempt=1,
    )


def _ids(items: list[Queued]) -> list[str]:
    return [q.notification.notification_id for q in items]


async def test_an_older_owner_claims_nothing_and_never_takes_a_leased_item(
    redis_server: str, unique: str
) -> None:
    client = aioredis.Redis.from_url(redis_server)
    old = RedisDeliveryQueue(client, prefix=unique, fenced=True)
    new = RedisDeliveryQueue(client, prefix=unique, fenced=True)
    one = Room(default=1)
    try:
        await old.acquire([0])
        first, second = _notification("msg_a", "c1"), _notification("msg_b", "c1")
        assert await old.enqueue(first, 1_000)
        assert await old.enqueue(second, 1_001)
        assert await old.owns(0)
        assert _ids(await old.take(2_000, 60_000, [0], one)) == ["msg_a"]

        await new.acquire([0])  # the group gave partition 0 to another worker
        assert not await old.owns(0)
        assert await new.owns(0)
        assert await old.take(2_000, 60_000, [0], one) == []  # the zombie sends nothing
        # the new owner takes what is due, not the old owner's leased item (due at 62 s)
        assert _ids(await new.take(2_000, 60_000, [0], Room(default=8))) == ["msg_b"]
        lane = new.lane_key(0, "webhook:hook")
        assert await client.zscore(lane, "msg_a") == 62_000
        assert await client.zscore(lane, "msg_b") == 62_000
        assert _ids(await new.take(62_000, 60_000, [0], Room(default=8))) == ["msg_a", "msg_b"]
        # a worker never assigned a partition claims nothing on it
        assert await new.enqueue(_notification("msg_c", "c1"), 1_000)
        assert await new.take(99_000, 1, [1], Room(default=8)) == []
    finally:
        await wipe_namespace(redis_server, f"{unique}notify:")
        await client.aclose()


async def test_a_fenced_recorder_stands_down_and_the_new_owner_goes_on(
    bootstrap: str, redis_server: str, unique: str
) -> None:
    topics = Topics(prefix=unique, partitions=1)
    await ensure_topics(bootstrap, [topics.get(t) for t in topics.for_stream("notify")])
    client = aioredis.Redis.from_url(redis_server)
    queues = [RedisDeliveryQueue(client, prefix=unique, fenced=True) for _ in range(2)]
    old, new = (
        NotifyStreamRecorder(bootstrap, f"{unique}notify-stream", topics, lambda _c: 0, owns=q.owns)
        for q in queues
    )
    try:
        with pytest.raises(NotOwner):  # not acquired: nothing is written
            await old.record("c1", [_sent("msg_0")], "msg_0")
        await queues[0].acquire([0])
        await old.acquire({0})
        await old.record("c1", [_sent("msg_1")], "msg_1")

        await queues[1].acquire([0])
        await new.acquire({0})  # starts its writer: fences the old one
        with pytest.raises(NotOwner):
            await old.record("c1", [_sent("msg_2")], "msg_2")
        with pytest.raises(NotOwner):  # it stays down: no new writer behind the group's back
            await old.record("c1", [_sent("msg_3")], "msg_3")
        await new.record("c1", [_sent("msg_4")], "msg_4")  # not fenced back

        events = await notify_stream(bootstrap, topics)
        assert [(e.seq, e.payload.notification_id) for e in events] == [  # type: ignore[union-attr]
            (1, "msg_1"),
            (2, "msg_4"),
        ]
    finally:
        await old.close()
        await new.close()
        await wipe_namespace(redis_server, f"{unique}notify:")
        await client.aclose()


async def test_releasing_a_partition_mid_write_leaves_no_record_waiting(
    bootstrap: str, redis_server: str, unique: str
) -> None:
    topics = Topics(prefix=unique, partitions=1)
    await ensure_topics(bootstrap, [topics.get(t) for t in topics.for_stream("notify")])
    client = aioredis.Redis.from_url(redis_server)
    queue = RedisDeliveryQueue(client, prefix=unique, fenced=True)
    recorder = NotifyStreamRecorder(
        bootstrap, f"{unique}notify-stream", topics, lambda _c: 0, owns=queue.owns
    )
    try:
        await queue.acquire([0])
        await recorder.acquire({0})
        for round_ in range(3):
            writes = [
                asyncio.create_task(recorder.record("c1", [_sent(f"m{round_}-{i}")], "x"))
                for i in range(20)
            ]
            await asyncio.sleep(0.005 * round_)  # released before, during, after the flush
            await asyncio.wait_for(recorder.release({0}), 40)
            outcomes = await asyncio.wait_for(asyncio.gather(*writes, return_exceptions=True), 40)
            assert all(o is None or isinstance(o, NotOwner) for o in outcomes), outcomes
            await queue.acquire([0])
            await recorder.acquire({0})
        await recorder.record("c1", [_sent("last")], "x")
        events = await notify_stream(bootstrap, topics)
        assert [e.seq for e in events] == list(range(1, len(events) + 1))
    finally:
        await recorder.close()
        await wipe_namespace(redis_server, f"{unique}notify:")
        await client.aclose()


@dataclass
class _Poster:
    """Answers every POST at once and keeps the order of the webhook ids."""

    ids: list[str] = field(default_factory=list)

    async def post(self, url: str, headers: dict[str, str], body: bytes) -> PostOutcome:
        self.ids.append(headers["webhook-id"])
        return PostOutcome(True)


class _NoDeadLetters:
    async def put(
        self, notification: Notification, reason: str, detail: str, attempts: int
    ) -> None:
        raise AssertionError("nothing fails here")


async def test_a_full_lane_serves_the_oldest_notification_of_any_partition_first(
    redis_server: str, unique: str
) -> None:
    client = aioredis.Redis.from_url(redis_server)
    queue = RedisDeliveryQueue(client, prefix=unique, partition_of=lambda c: int(c[-1]))
    directory = Directory()
    endpoint = WebhookEndpoint(
        "hook", "tenant-a", "http://127.0.0.1:9/hook", frozenset({"PledgeMade"}), new_secret()
    )
    directory.apply_endpoint(endpoint_key("tenant-a", "hook"), endpoint_value(endpoint))
    poster = _Poster()
    settings = NotifySettings(partitions=2, notify_endpoint_concurrency=1)
    dispatcher = Dispatcher(
        queue=queue,
        directory=directory,
        poster=poster,
        transport=SmtpTransport("127.0.0.1", 1),
        renderer=MailRenderer(sender="n@x.test", message_id_domain="x.test"),
        recorder=MemoryRecorder(),
        dead_letters=_NoDeadLetters(),
        settings=settings,
        metrics=NotifyMetrics.create(CollectorRegistry()),
    )
    # partition 0 has a backlog; partition 1's one notification is older than all of it
    for i in range(5):
        await queue.enqueue(_notification(f"msg_new{i}", "c0"), 2_000 + i)
    await queue.enqueue(_notification("msg_old", "c1"), 1_000)
    stop = asyncio.Event()
    task = asyncio.create_task(dispatcher.run(stop))
    try:
        await eventually(lambda: _true(len(poster.ids) == 6), within=10, every=0.05)
    finally:
        stop.set()
        await task
        await wipe_namespace(redis_server, f"{unique}notify:")
        await client.aclose()
    assert poster.ids == ["msg_old", *(f"msg_new{i}" for i in range(5))]


async def _true(value: bool) -> bool:
    return value
