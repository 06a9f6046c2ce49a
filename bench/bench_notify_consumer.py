"""Notify's consumer: campaign + settlement events applied per second by the real worker.

``notify_consumer`` — a launch-day backlog (60 campaigns: a launch, then per pledge a
``PledgeMade`` on the campaign stream and a ``PledgeCaptured`` on the settlement stream, in
Kafka transactions like their writers', one endpoint registered for ``PledgeMade``) is written
to fresh topics; then ``pledgeflow notify worker`` starts and the time from its group's first
committed offset to its last (lag 0) gives events/s, and the worker's CPU over the same span
the CPU per event. The dispatcher is kept idle (a poll of an hour: nothing is delivered), so
the figure is the consumer's alone. The baseline is the same worker, same run, applying one
event at a time (``NOTIFY_APPLY_BATCH=1``: one awaited Redis script call per event, the code
before 30 Nov 2026). Target: >= 1.25x the baseline's events/s (alone, the consumer's cost
is mostly decoding, deciding and the script's work, not the round trips).

``notify_consumer_delivering`` — the same with the dispatcher on, delivering the
``PledgeMade`` webhooks to ``bench/webhook_sink.py`` (answering at once) while the backlog is
applied, as in the end-to-end bench: events/s of the consumer sharing its process's core with
the deliveries, CPU of both per event; vs one event at a time. Target: >= 1,000 events/s
(launch day at 460 pledges/s is ~920: a ``PledgeMade`` and a settlement event per pledge)
and >= 2x one at a time.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import uuid4

import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from bench.bench_notify import sink as receiver
from bench.harness import Target, delete_topics, kafka_bootstrap, redis_url, write_result
from bench.stack import Service, stack_env
from schemas.codec import encode, message_key
from schemas.envelope import stamp
from schemas.events import CampaignLaunched, Event, PledgeCaptured, PledgeMade
from schemas.money import Money
from schemas.topics import Topics, ensure_topics
from services.notify.adapters.registration_store import KafkaRegistrationLog
from services.notify.directory import endpoint_key, endpoint_value
from services.notify.domain import WebhookEndpoint
from services.notify.webhooks import new_secret
from services.streams import PartitionWriter, key_partition

PARTITIONS = 6
CAMPAIGNS = 60
PLEDGES = int(os.environ.get("BENCH_NOTIFY_CONSUMER_PLEDGES", "80"))  # per campaign
NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def money(minor: int) -> Money:
    return Money(amount_minor=minor, currency="EUR")


def launch() -> CampaignLaunched:
    return CampaignLaunched(
        tenant_id="tenant-a",
        creator_id="creator-1",
        title="Launch day",
        goal=money(1_000_000),
        deadline=NOW + timedelta(days=30),
        funding_model="keep_it_all",
        settlement_mode="authorize_then_capture",
        commission_bps=500,
    )


def events_of(campaign: str) -> tuple[list[bytes], list[bytes], list[bytes]]:
    """Encoded launch, pledges and captures of one campaign, each stream's seq from 1."""
    counters = {"campaign": 0, "settlement": 0}

    def stamped(event: Event) -> bytes:
        counters[event.stream] += 1
        seq = counters[event.stream]
        return encode(
            stamp(
                event,
                campaign_id=campaign,
                seq=seq,
                occurred_at=NOW,
                causation_id=f"{campaign}-{event.stream}-{seq}",
                correlation_id="bench",
                index=0,
            )
        )

    launched = [stamped(launch())]
    made, caught = [], []
    for i in range(PLEDGES):
        pid, backer = f"p{i}", f"b{i}"
        made.append(
            stamped(PledgeMade(pledge_id=pid, backer_id=backer, amount=money(1000), locale="en"))
        )
        caught.append(
            stamped(
                PledgeCaptured(
                    pledge_id=pid,
                    backer_id=backer,
                    amount=money(1000),
                    fee=money(50),
                    gateway_ref=f"gw-{pid}",
                )
            )
        )
    return launched, made, caught


async def write_backlog(bootstrap: str, topics: Topics, prefix: str) -> int:
    """Every campaign's events, one transaction per (partition, kind); returns the count."""
    by_partition: dict[int, dict[str, list[tuple[bytes, bytes, list[tuple[str, bytes]]]]]] = {}
    count = 0
    for c in range(CAMPAIGNS):
        campaign = f"tenant-a/bench-{c}"
        launched, made, caught = events_of(campaign)
        part = by_partition.setdefault(key_partition(campaign.encode(), PARTITIONS), {})
        key = message_key(campaign)
        for topic, values in (
            (topics.for_event("CampaignLaunched"), launched),
            (topics.for_event("PledgeMade"), made),
            (topics.for_event("PledgeCaptured"), caught),
        ):
            part.setdefault(topic, []).extend((key, v, []) for v in values)
            count += len(values)
    for p, records in by_partition.items():
        writer = PartitionWriter(bootstrap, f"{prefix}bench-writer", p)
        await writer.start()
        try:
            # campaign events first, then settlement's (their own topic, read concurrently)
            for topic, batch in records.items():
                for i in range(0, len(batch), 500):
                    await writer.write({topic: batch[i : i + 500]})
        finally:
            await writer.close()
    return count


async def register(bootstrap: str, topics: Topics, url: str) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        ep = WebhookEndpoint("ep", "tenant-a", url, frozenset({"PledgeMade"}), new_secret())
        await KafkaRegistrationLog(producer).put(
            topics.notify_endpoints, endpoint_key("tenant-a", "ep"), endpoint_value(ep)
        )
    finally:
        await producer.stop()


class GroupWatch:
    """Committed offsets of one group over the campaign and settlement topics."""

    def __init__(self, bootstrap: str, group: str, topics: Topics) -> None:
        names = topics.for_stream("campaign") + topics.for_stream("settlement")
        self.tps = [TopicPartition(t, p) for t in names for p in range(PARTITIONS)]
        self.group = group
        self.admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap, isolation_level="read_committed"
        )
        self.ends: dict[TopicPartition, int] = {}

    async def start(self) -> None:
        await self.admin.start()
        await self.consumer.start()
        self.ends = await self.consumer.end_offsets(self.tps)

    async def close(self) -> None:
        await self.consumer.stop()
        await self.admin.close()

    async def committed(self) -> tuple[int, bool]:
        """Offsets committed (the transaction markers count: compare with ``total``), and
        whether every partition is read to its end (the group commits up to its last record,
        not past the commit marker after it)."""
        offsets = await self.admin.list_consumer_group_offsets(self.group)
        done = {tp: max(0, o.offset) for tp, o in offsets.items() if tp in self.ends}
        at_end = all(done.get(tp, 0) >= end - 1 for tp, end in self.ends.items() if end)
        return sum(done.values()), at_end

    @property
    def total(self) -> int:
        return sum(self.ends.values())


async def run(batch: int, log_dir: Path, sink: str | None = None) -> tuple[float, float, int]:
    """(events/s, CPU ms per event, events) of a worker applying ``batch`` records at once;
    with ``sink``, its dispatcher delivers the webhooks there meanwhile (CPU: both)."""
    bootstrap = kafka_bootstrap()
    prefix = f"bnc{uuid4().hex[:8]}."
    topics = Topics(prefix=prefix, partitions=PARTITIONS)
    await ensure_topics(bootstrap, topics)
    await register(bootstrap, topics, f"{sink}/hook/ep/0" if sink else "http://127.0.0.1:9/")
    events = await write_backlog(bootstrap, topics, prefix)
    env = stack_env(
        bootstrap,
        redis_url(),
        prefix,
        PARTITIONS,
        PLEDGEFLOW_NOTIFY_APPLY_BATCH=str(batch),
        PLEDGEFLOW_NOTIFY_POLL_SECONDS="0.05" if sink else "3600",
        PLEDGEFLOW_NOTIFY_ALLOW_PRIVATE_URLS="true",
        PLEDGEFLOW_NOTIFY_DATA_DIR=str(log_dir / f"faust-{prefix}"),
    )
    watch = GroupWatch(bootstrap, f"{prefix}notify", topics)
    await watch.start()
    worker = Service("notify", env, log_dir).start()
    try:
        first, _ = await watch.committed()
        while first == 0:
            worker.check()
            await asyncio.sleep(0.05)
            first, _ = await watch.committed()
        t0, cpu0 = time.perf_counter(), worker.cpu_seconds()
        done, at_end = first, False
        while not at_end:
            worker.check()
            await asyncio.sleep(0.05)
            done, at_end = await watch.committed()
        seconds, cpu = time.perf_counter() - t0, worker.cpu_seconds() - cpu0
    finally:
        worker.stop()
        await watch.close()
        client = aioredis.Redis.from_url(redis_url())
        keys = [k async for k in client.scan_iter(match=f"{prefix}*", count=1000)]
        for i in range(0, len(keys), 1000):
            await client.delete(*keys[i : i + 1000])
        await client.aclose()
        await delete_topics(bootstrap, prefix)
    # offsets count the transactions' commit markers too: scale the span to events
    applied = (done - first) * events / watch.total
    return applied / seconds, cpu / applied * 1000, events


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp, receiver() as base:
        log_dir = Path(tmp)
        serial = await run(1, log_dir)
        batched = await run(256, log_dir)
        serial_busy = await run(1, log_dir, base)
        batched_busy = await run(256, log_dir, base)
    write_result(
        "notify_consumer_delivering",
        "events applied per second while the same worker delivers their webhooks",
        "events/s",
        batched_busy[0],
        baseline=("the same, applying one event at a time", serial_busy[0]),
        target=Target(value=1000.0, ratio=2.0),
        extra={
            "cpu_ms_per_event_and_delivery": round(batched_busy[1], 4),
            "baseline_cpu_ms_per_event_and_delivery": round(serial_busy[1], 4),
            "events": batched_busy[2],
        },
    )
    write_result(
        "notify_consumer",
        "campaign + settlement events applied per second by the notify worker (backlog)",
        "events/s",
        batched[0],
        baseline=("the same worker applying one event at a time", serial[0]),
        target=Target(ratio=1.25),
        extra={
            "cpu_ms_per_event": round(batched[1], 4),
            "baseline_cpu_ms_per_event": round(serial[1], 4),
            "events": batched[2],
        },
    )


if __name__ == "__main__":
    asyncio.run(main())
