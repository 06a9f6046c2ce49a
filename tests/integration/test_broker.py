"""Proves the broker under test is a real Kafka: idempotence, transactions, groups, durability."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from tests.support.infra import LocalBroker

pytestmark = pytest.mark.integration


async def create_topic(admin: AIOKafkaAdminClient, name: str, partitions: int = 1) -> None:
    await admin.create_topics([NewTopic(name, partitions, 1, topic_configs={"retention.ms": "-1"})])


async def read_all(
    bootstrap: str,
    topic: str,
    expected: int,
    isolation: str = "read_committed",
    wait_seconds: float = 20,
) -> list[bytes]:
    """Read a topic from the beginning without a group until `expected` records or a quiet poll."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        isolation_level=isolation,
    )
    await consumer.start()
    values: list[bytes] = []
    try:
        deadline = asyncio.get_running_loop().time() + wait_seconds
        while len(values) < expected and asyncio.get_running_loop().time() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                values.extend(r.value for r in records if r.value is not None)
        # One more quiet poll: nothing beyond what we expect may show up.
        for records in (await consumer.getmany(timeout_ms=500)).values():
            values.extend(r.value for r in records if r.value is not None)
    finally:
        await consumer.stop()
    return values


async def test_idempotent_producer_with_acks_all_delivers_each_record_once_in_order(
    bootstrap: str, admin: AIOKafkaAdminClient, unique: str
) -> None:
    topic = f"{unique}.idem"
    await create_topic(admin, topic)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        futures = [await producer.send(topic, f"m{i}".encode(), key=b"k") for i in range(500)]
        metas = await asyncio.gather(*futures)
    finally:
        await producer.stop()
    assert [m.offset for m in metas] == list(range(500))
    assert await read_all(bootstrap, topic, 500) == [f"m{i}".encode() for i in range(500)]


async def test_aborted_transaction_is_invisible_to_read_committed_consumers(
    bootstrap: str, admin: AIOKafkaAdminClient, unique: str
) -> None:
    topic = f"{unique}.txn"
    await create_topic(admin, topic)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, transactional_id=f"{unique}-txn")
    await producer.start()
    try:
        async with producer.transaction():
            await producer.send_and_wait(topic, b"committed-1")
        await producer.begin_transaction()
        await producer.send_and_wait(topic, b"aborted")
        await producer.abort_transaction()
        async with producer.transaction():
            await producer.send_and_wait(topic, b"committed-2")
    finally:
        await producer.stop()

    assert await read_all(bootstrap, topic, 2) == [b"committed-1", b"committed-2"]
    # The aborted record did reach the log: a read_uncommitted reader sees it.
    uncommitted = await read_all(bootstrap, topic, 3, isolation="read_uncommitted")
    assert b"aborted" in uncommitted


async def test_two_group_members_split_the_partitions(
    bootstrap: str, admin: AIOKafkaAdminClient, unique: str
) -> None:
    topic = f"{unique}.group"
    await create_topic(admin, topic, partitions=4)
    members = [
        AIOKafkaConsumer(
            topic, bootstrap_servers=bootstrap, group_id=f"{unique}-g", auto_offset_reset="earliest"
        )
        for _ in range(2)
    ]
    for m in members:
        await m.start()
    try:
        deadline = asyncio.get_running_loop().time() + 30
        while True:
            await asyncio.gather(*(m.getmany(timeout_ms=200) for m in members))
            assigned = [m.assignment() for m in members]
            if all(assigned) and sum(len(a) for a in assigned) == 4:
                break
            assert asyncio.get_running_loop().time() < deadline, f"no split: {assigned}"
    finally:
        for m in members:
            await m.stop()
    first, second = assigned
    assert not first & second
    assert first | second == {TopicPartition(topic, p) for p in range(4)}


async def test_created_topic_keeps_records_forever(admin: AIOKafkaAdminClient, unique: str) -> None:
    topic = f"{unique}.forever"
    await create_topic(admin, topic, partitions=3)
    # Creation is acknowledged before every broker component knows the topic: under load a
    # describe right after it answers "unknown topic" with no configs, so ask until it knows.
    deadline = asyncio.get_running_loop().time() + 30
    while True:
        described = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
        resources = [resource for response in described for resource in response.resources]
        if resources and all(resource[0] == 0 for resource in resources):
            break
        assert asyncio.get_running_loop().time() < deadline, f"no configs: {resources}"
        await asyncio.sleep(0.1)
    configs = {entry[0]: entry[1] for resource in resources for entry in resource[4]}
    assert configs["retention.ms"] == "-1"
    meta = await admin.describe_topics([topic])
    assert len(meta[0]["partitions"]) == 3


async def test_records_survive_a_broker_restart(
    broker: LocalBroker, bootstrap: str, admin: AIOKafkaAdminClient, unique: str
) -> None:
    if not broker.is_local:
        pytest.fail("restart test needs the local broker; unset PLEDGEFLOW_KAFKA_BOOTSTRAP")
    topic = f"{unique}.durable"
    await create_topic(admin, topic)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for i in range(100):
            await producer.send(topic, f"d{i}".encode())
        await producer.flush()
    finally:
        await producer.stop()

    await asyncio.to_thread(broker.stop)
    await asyncio.to_thread(broker.start)

    assert await read_all(bootstrap, topic, 100) == [f"d{i}".encode() for i in range(100)]
