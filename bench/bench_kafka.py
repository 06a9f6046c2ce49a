"""Raw ceilings of this broker from Python: aiokafka producer and consumer msgs/s.

Later benchmarks (processor, API, audit from Kafka) compare themselves with these figures.
The producer batches (`send` without awaiting each delivery, `acks=all`, idempotent); its
baseline is the same producer awaiting every record. The consumer reads the produced topic
from the start with `getmany`; its baseline is the one-record-at-a-time `async for` loop.
"""

from __future__ import annotations

import asyncio
import uuid

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from bench.harness import Stopwatch, Target, delete_topics, kafka_bootstrap, write_result

N = 200_000
N_AWAITED = 5_000
PAYLOAD = b'{"event_type":"PledgeMade","payload":{"amount_minor":2500,"currency":"EUR"}}' * 3


async def produce(bootstrap: str, topic: str, n: int, awaited: bool) -> float:
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=True,
        linger_ms=0 if awaited else 5,
        max_batch_size=256 * 1024,
    )
    await producer.start()
    try:
        with Stopwatch() as sw:
            if awaited:
                for i in range(n):
                    await producer.send_and_wait(topic, PAYLOAD, key=str(i % 50).encode())
            else:
                for i in range(n):
                    await producer.send(topic, PAYLOAD, key=str(i % 50).encode())
                await producer.flush()
    finally:
        await producer.stop()
    return n / sw.seconds


async def consume(bootstrap: str, topic: str, n: int, batched: bool) -> float:
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        max_partition_fetch_bytes=4 * 1024 * 1024,
        fetch_max_bytes=16 * 1024 * 1024,
    )
    await consumer.start()
    seen = 0
    try:
        with Stopwatch() as sw:
            if batched:
                while seen < n:
                    for records in (
                        await consumer.getmany(timeout_ms=1000, max_records=10_000)
                    ).values():
                        seen += len(records)
            else:
                async for _ in consumer:
                    seen += 1
                    if seen >= n:
                        break
    finally:
        await consumer.stop()
    return n / sw.seconds


async def main() -> None:
    bootstrap = kafka_bootstrap()
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    await admin.create_topics(
        [NewTopic(f"{prefix}.raw", 6, 1), NewTopic(f"{prefix}.awaited", 6, 1)]
    )
    await admin.close()

    try:
        awaited = await produce(bootstrap, f"{prefix}.awaited", N_AWAITED, awaited=True)
        batched = await produce(bootstrap, f"{prefix}.raw", N, awaited=False)
        print(f"producer: batched {batched:,.0f} msgs/s, awaited {awaited:,.0f} msgs/s")
        write_result(
            "kafka_producer",
            "aiokafka producer throughput (acks=all, idempotent, batched)",
            "msgs/s",
            batched,
            baseline=("send_and_wait per record", awaited),
            target=Target(ratio=5.0),
            extra={"records": N, "payload_bytes": len(PAYLOAD)},
        )
        one_by_one = await consume(bootstrap, f"{prefix}.raw", N, batched=False)
        many = await consume(bootstrap, f"{prefix}.raw", N, batched=True)
        print(f"consumer: getmany {many:,.0f} msgs/s, async-for {one_by_one:,.0f} msgs/s")
        write_result(
            "kafka_consumer",
            "aiokafka consumer throughput (getmany, from earliest)",
            "msgs/s",
            many,
            baseline=("async for, one record at a time", one_by_one),
            target=Target(ratio=1.0),
            extra={"records": N},
        )

    finally:
        await delete_topics(bootstrap, prefix)


if __name__ == "__main__":
    asyncio.run(main())
