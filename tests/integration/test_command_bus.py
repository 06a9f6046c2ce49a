"""The API's command bus against the real broker: every command once, in order per campaign,
and no produce request sooner than the flush interval after the previous one."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.partitioner import DefaultPartitioner

from services.pledge.adapters.command_bus import CommandBus

pytestmark = pytest.mark.integration


async def read_by_key(bootstrap: str, topic: str, expected: int) -> dict[bytes, list[bytes]]:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    found: dict[bytes, list[bytes]] = defaultdict(list)
    seen = 0
    try:
        deadline = time.monotonic() + 30
        while seen < expected and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for record in records:
                    assert record.key is not None and record.value is not None
                    found[record.key].append(record.value)
                    seen += 1
        for records in (await consumer.getmany(timeout_ms=500)).values():
            seen += len(records)  # nothing beyond what was sent may show up
    finally:
        await consumer.stop()
    assert seen == expected
    return found


async def test_concurrent_sends_land_once_each_in_order_per_campaign(
    bootstrap: str, admin: AIOKafkaAdminClient, unique: str
) -> None:
    topic = f"{unique}.commands"
    await admin.create_topics([NewTopic(topic, 6, 1)])
    bus = CommandBus(bootstrap, topic, flush_interval_ms=5)
    await bus.start()
    try:
        # Waves of concurrent senders: each wave spans several flushes and all partitions.
        for wave in range(4):
            await asyncio.gather(
                *(bus.send(f"c-{i % 37}", b"%d:%d" % (wave, i)) for i in range(500))
            )
        await bus.send_all([(f"c-{i % 37}", b"4:%d" % i) for i in range(500)])
    finally:
        await bus.stop()
    found = await read_by_key(bootstrap, topic, 2500)
    assert len(found) == 37
    for key, values in found.items():
        campaign = int(key.decode().removeprefix("c-"))
        sent = [b"%d:%d" % (w, i) for w in range(5) for i in range(500) if i % 37 == campaign]
        assert values == sent


async def test_a_flush_waits_out_the_interval_after_the_previous_one(
    bootstrap: str, admin: AIOKafkaAdminClient, unique: str
) -> None:
    topic = f"{unique}.commands"
    await admin.create_topics([NewTopic(topic, 2, 1)])
    interval = 0.4
    bus = CommandBus(bootstrap, topic, flush_interval_ms=interval * 1000)
    await bus.start()
    try:
        await bus.send("c-warm", b"warm")  # metadata and connection in place
        await asyncio.sleep(interval)
        started = time.monotonic()
        await bus.send("c-1", b"first")  # after a quiet period: flushed at once
        first = time.monotonic() - started
        await asyncio.gather(*(bus.send(f"c-{i}", b"next") for i in range(20)))
        both = time.monotonic() - started
    finally:
        await bus.stop()
    assert first < interval
    assert both >= interval


async def test_records_of_another_topic_share_the_bus_and_land_where_a_plain_producer_puts_them(
    bootstrap: str, admin: AIOKafkaAdminClient, unique: str
) -> None:
    # The API's payment tokens ride on the command bus; a compacted topic needs every record
    # of a key on the partition Kafka's default partitioner gives it, as before.
    commands, tokens = f"{unique}.commands", f"{unique}.tokens"
    await admin.create_topics([NewTopic(commands, 3, 1), NewTopic(tokens, 6, 1)])
    bus = CommandBus(bootstrap, commands, flush_interval_ms=5, record_topics=[tokens])
    await bus.start()
    keys = [f"tenant-a/c-{i % 7}/p-{i}".encode() for i in range(300)]
    try:
        await asyncio.gather(
            bus.send_records(tokens, [(key, b"tok-" + key) for key in keys[:150]]),
            *(bus.send_records(tokens, [(key, b"tok-" + key)]) for key in keys[150:]),
            *(bus.send(f"c-{i % 7}", b"%d" % i) for i in range(50)),
        )
    finally:
        await bus.stop()
    consumer = AIOKafkaConsumer(
        tokens, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    placed: dict[bytes, int] = {}
    try:
        deadline = time.monotonic() + 30
        while len(placed) < len(keys) and time.monotonic() < deadline:
            for tp, records in (await consumer.getmany(timeout_ms=500)).items():
                for record in records:
                    assert record.key is not None and record.value == b"tok-" + record.key
                    placed[record.key] = tp.partition
    finally:
        await consumer.stop()
    partitioner = DefaultPartitioner()
    assert placed == {key: partitioner(key, list(range(6)), list(range(6))) for key in keys}
    assert len(set(placed.values())) == 6
    assert sum(len(v) for v in (await read_by_key(bootstrap, commands, 50)).values()) == 50


async def test_a_staged_token_and_the_command_sent_next_share_one_produce_round(
    bootstrap: str, admin: AIOKafkaAdminClient, unique: str
) -> None:
    # The pledge route stages the token, then sends the command: both leave in the same
    # hand-over, so the token is acknowledged by the time the command is (a hand-over of its
    # own would come a whole flush interval later).
    from services.pledge.adapters.payment_tokens import KafkaPaymentTokens

    commands, tokens = f"{unique}.commands", f"{unique}.tokens"
    await admin.create_topics([NewTopic(commands, 3, 1), NewTopic(tokens, 6, 1)])
    bus = CommandBus(bootstrap, commands, flush_interval_ms=1_000, record_topics=[tokens])
    store = KafkaPaymentTokens(bootstrap, tokens, bus=bus)
    await bus.start()
    try:
        await bus.send("c-0", b"warm-up")  # the next hand-over waits out the interval
        for i in range(3):
            staged = store.stage([(f"tenant-a/c-{i}/p-{i}", f"tok-{i}")])
            await bus.send(f"c-{i}", b"%d" % i)
            assert staged.done() and staged.exception() is None
        with pytest.raises(KeyError):  # not a topic of the bus: refused before anything is sent
            KafkaPaymentTokens(bootstrap, f"{unique}.other", bus=bus).stage([("k", "t")])
    finally:
        await bus.stop()
    assert len(await read_by_key(bootstrap, tokens, 3)) == 3
