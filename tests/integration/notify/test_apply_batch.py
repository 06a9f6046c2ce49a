"""NotifyService.on_records on real Redis: a batch of events is one Redis round trip, and
applies exactly what one-at-a-time application does (same notifications, same order per lane,
settlement events still waiting for their pledge); a redelivered batch changes nothing; the
events of a partition revoked mid-batch are neither written nor acked."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError

from schemas.codec import encode, message_key
from schemas.envelope import Envelope
from schemas.topics import Topics
from services.notify.adapters.redis_queue import RedisDeliveryQueue
from services.notify.adapters.redis_views import RedisCampaignViews
from services.notify.directory import Directory, endpoint_key, endpoint_value
from services.notify.domain import WebhookEndpoint
from services.notify.partitioning import partition_function
from services.notify.webhooks import new_secret
from services.notify.worker import NotifyService
from services.streams import DeadLetter
from tests.support.invariants import wipe_namespace
from tests.unit.notify.events import Stream, captured, goal, launch, pledge

pytestmark = pytest.mark.integration

PARTITIONS = 2


@dataclass
class Record:
    """What the service reads of a faust message (a plain class: judge_event reads __dict__)."""

    topic: str
    partition: int
    offset: int
    key: bytes
    value: bytes


@dataclass
class Harness:
    service: NotifyService
    client: aioredis.Redis
    queue: RedisDeliveryQueue
    topics: Topics
    commands: list[str] = field(default_factory=list)
    on_command: Callable[[str], None] | None = None
    acked: list[int] = field(default_factory=list)
    offset: int = 0

    def records(self, envelopes: list[Envelope]) -> list[tuple[Record, Callable[[], None]]]:
        out = []
        for e in envelopes:
            self.offset += 1
            record = Record(
                self.topics.for_event(e.event_type),
                self.service.partition_of(e.campaign_id),
                self.offset,
                message_key(e.campaign_id),
                encode(e),
            )
            out.append((record, lambda o=self.offset: self.acked.append(o)))
        return out

    async def lanes(self) -> dict[str, list[str]]:
        """Each due set's notification ids in due order."""
        found: dict[str, list[str]] = {}
        for p in range(PARTITIONS):
            prefix = self.queue.due_prefix(p)
            async for key in self.client.scan_iter(match=f"{prefix}*"):
                name = key.decode()
                if name.endswith(":last"):
                    continue
                ids = await self.client.zrange(name, 0, -1)
                found[f"{p}:{name.removeprefix(prefix)}"] = [i.decode() for i in ids]
        return found


async def harness(redis_url: str, prefix: str) -> Harness:
    client = aioredis.Redis.from_url(redis_url)
    partition_of = partition_function(PARTITIONS)
    queue = RedisDeliveryQueue(client, prefix=prefix, partition_of=partition_of)
    directory = Directory()
    ep = WebhookEndpoint(
        "ep", "tenant-a", "http://127.0.0.1:9/hook", frozenset({"PledgeMade"}), new_secret()
    )
    directory.apply_endpoint(endpoint_key("tenant-a", "ep"), endpoint_value(ep))
    topics = Topics(prefix=prefix, partitions=PARTITIONS)

    async def reject(_letter: DeadLetter) -> None:
        raise AssertionError("nothing is dead-lettered here")

    service = NotifyService(
        views=RedisCampaignViews(client, queue, prefix=prefix),
        directory=directory,
        partition_of=partition_of,
        topic_of=topics.event_topics(),
        reject=reject,
    )
    h = Harness(service, client, queue, topics)
    real = client.execute_command

    async def counted(*args: Any, **kwargs: Any) -> Any:
        h.commands.append(str(args[0]))
        if h.on_command is not None:
            h.on_command(str(args[0]))
        return await real(*args, **kwargs)

    client.execute_command = counted  # type: ignore[method-assign]
    return h


def campaigns() -> tuple[str, str]:
    """Two campaign ids in different partitions."""
    partition_of = partition_function(PARTITIONS)
    names = [f"c-{i}" for i in range(20)]
    first = names[0]
    other = next(n for n in names if partition_of(n) != partition_of(first))
    return first, other


def launches_and_pledges() -> tuple[list[Envelope], list[Envelope]]:
    """The launches of two campaigns, then 40 events: pledges and captures, some captures
    ahead of their pledge (they must wait for it)."""
    a, b = campaigns()
    streams = {a: Stream(a), b: Stream(b)}
    first = [streams[a](launch()), streams[b](launch())]
    rest: list[Envelope] = []
    for i in range(10):
        for c in (a, b):
            s = streams[c]
            if i % 3 == 0:  # the capture is written (and read) before its pledge
                rest.append(s(captured(f"p{i}", f"b{i}", 1000)))
                rest.append(s(pledge(f"p{i}", f"b{i}", 1000)))
            else:
                rest.append(s(pledge(f"p{i}", f"b{i}", 1000)))
                rest.append(s(captured(f"p{i}", f"b{i}", 1000)))
    return first, rest


async def test_a_batch_is_one_round_trip_and_applies_what_one_at_a_time_does(
    redis_server: str, unique: str
) -> None:
    first, rest = launches_and_pledges()
    batched = await harness(redis_server, f"{unique}b.")
    serial = await harness(redis_server, f"{unique}s.")
    try:
        for h in (batched, serial):
            await h.service.on_records(h.records(first))  # loads both views, applies launches
        batched.commands.clear()
        await batched.service.on_records(batched.records(rest))
        assert batched.commands == ["EVALSHA"]  # 40 events, one round trip
        assert sorted(batched.acked) == list(range(1, 43))
        assert batched.service.held == 0

        for record, ack in serial.records(rest):
            await serial.service.on_records([(record, ack)])
        assert sorted(serial.acked) == list(range(1, 43))
        lanes = await batched.lanes()
        assert lanes == await serial.lanes()
        assert sum(len(ids) for ids in lanes.values()) == 60  # hooks, receipts, capture mails
        pending = await batched.queue.pending(range(PARTITIONS))

        # redelivered (a restart before the offsets were committed): nothing changes
        again = await harness(redis_server, f"{unique}b.")
        try:
            await again.service.on_records(again.records(first + rest))
            assert len(again.acked) == 42
            assert await again.lanes() == lanes
            assert await again.queue.pending(range(PARTITIONS)) == pending
            assert again.commands.count("EVALSHA") == 1  # the launches and all the rest
        finally:
            await again.client.aclose()
    finally:
        for h in (batched, serial):
            await h.client.aclose()
        await wipe_namespace(redis_server, unique)


async def test_a_partition_revoked_mid_batch_is_neither_written_nor_acked(
    redis_server: str, unique: str
) -> None:
    a, b = campaigns()
    h = await harness(redis_server, unique)
    try:
        sa, sb = Stream(a), Stream(b)
        await h.service.on_records(h.records([sa(launch())]))
        # a's events come first; b's view is loaded in the middle of the batch, and while
        # that read is under way the group takes a's partition away
        batch = h.records([sa(pledge("p1", "b1", 1000)), sa(pledge("p2", "b2", 1000))])
        batch += h.records([sb(launch()), sb(pledge("p3", "b3", 1000))])

        def revoke(command: str) -> None:
            if command == "HGETALL" and h.on_command is not None:
                h.on_command = None
                h.service.forget({h.service.partition_of(a)})

        h.on_command = revoke
        await h.service.on_records(batch)
        assert sorted(h.acked) == [1, 4, 5]  # a's launch before; b's two events
        lasts = {c: await h.client.hget(f"{unique}notify:v:{c}", "last:campaign") for c in (a, b)}
        assert lasts == {a: b"1", b: b"2"}
        assert h.service.held == 0

        # still buffered after the revocation: not applied, not acked, until assigned again
        again = batch[:2]
        await h.service.on_records(again)
        assert sorted(h.acked) == [1, 4, 5]
        h.service.assigned({h.service.partition_of(a)})
        await h.service.on_records(again)
        assert sorted(h.acked) == [1, 2, 3, 4, 5]
        assert await h.client.hget(f"{unique}notify:v:{a}", "last:campaign") == b"3"
    finally:
        await h.client.aclose()
        await wipe_namespace(redis_server, unique)


async def test_a_batch_waits_for_redis_and_is_written_once_it_answers(
    redis_server: str, unique: str
) -> None:
    a, _ = campaigns()
    h = await harness(redis_server, unique)
    try:
        s = Stream(a)
        await h.service.on_records(h.records([s(launch())]))
        failures = [2]

        def unavailable(command: str) -> None:
            if command == "EVALSHA" and failures[0]:
                failures[0] -= 1
                raise RedisConnectionError("Redis is down")

        h.on_command = unavailable
        h.commands.clear()
        await h.service.on_records(h.records([s(pledge("p1", "b1", 1000)), s(goal(1000, 1))]))
        assert h.commands == ["EVALSHA"] * 3  # two refused, then written
        assert sorted(h.acked) == [1, 2, 3]
        assert await h.client.hget(f"{unique}notify:v:{a}", "last:campaign") == b"3"
    finally:
        await h.client.aclose()
        await wipe_namespace(redis_server, unique)
