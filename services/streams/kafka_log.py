"""Kafka plumbing shared by every stream service: transactional producers, reading partitions
of the log to their last stable offset, and key -> partition (Kafka's default partitioner).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from functools import lru_cache

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.partitioner import murmur2

from schemas.topics import SNAPSHOT_MAX_MESSAGE_BYTES
from services.streams.kafka_security import kafka_client_kwargs

__all__ = ["key_partition", "read_to_end", "transactional_producer"]

log = logging.getLogger(__name__)

# Batches big enough that one transaction of a few thousand events is a handful of requests.
_MAX_BATCH_BYTES = 512 * 1024


def transactional_producer(
    bootstrap: str, transactional_id: str, *, transaction_timeout_ms: int = 60_000
) -> AIOKafkaProducer:
    """A producer for one transactional id; ``start()`` fences every older producer with the
    same id and aborts its pending transaction (Kafka's zombie fencing)."""
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        **kafka_client_kwargs(),
        transactional_id=transactional_id,
        enable_idempotence=True,
        acks="all",
        linger_ms=0,
        max_batch_size=_MAX_BATCH_BYTES,
        # A snapshot record may be as big as the snapshot topic allows.
        max_request_size=SNAPSHOT_MAX_MESSAGE_BYTES + 1024 * 1024,
        transaction_timeout_ms=transaction_timeout_ms,
    )


@lru_cache(maxsize=1 << 16)
def key_partition(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner (murmur2) gives ``key`` among ``partitions``."""
    return int(murmur2(key) & 0x7FFFFFFF) % partitions


async def read_to_end(
    bootstrap: str,
    partitions: Iterable[TopicPartition],
    handle: Callable[[ConsumerRecord[bytes, bytes]], None],
    *,
    start: Mapping[TopicPartition, int] | None = None,
    max_records: int = 10_000,
) -> dict[TopicPartition, int]:
    """Feed ``handle`` every committed record of ``partitions`` from ``start`` (default: the
    beginning) up to the last stable offset as of the call; return where each partition ends.

    Reads ``read_committed`` with no consumer group: aborted transactions are skipped and
    nothing is committed anywhere.
    """
    tps = list(partitions)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        **kafka_client_kwargs(),
        group_id=None,
        enable_auto_commit=False,
        isolation_level="read_committed",
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=8 * 1024 * 1024,
        fetch_max_bytes=32 * 1024 * 1024,
    )
    await consumer.start()
    try:
        consumer.assign(tps)
        ends: dict[TopicPartition, int] = await consumer.end_offsets(tps)
        remaining = set()
        for tp in tps:
            offset = (start or {}).get(tp)
            if ends[tp] == 0 or (offset is not None and offset >= ends[tp]):
                # Nothing to read: no seek and no position (aiokafka's offset reset of a
                # partition empty in every topic took 2.5 s, delaying a restarted processor).
                consumer.pause(tp)
                continue
            if offset is None:
                await consumer.seek_to_beginning(tp)
            else:
                consumer.seek(tp, offset)
            if await consumer.position(tp) < ends[tp]:
                remaining.add(tp)
            else:
                consumer.pause(tp)
        while remaining:
            batches = await consumer.getmany(*remaining, timeout_ms=500, max_records=max_records)
            for tp, records in batches.items():
                end = ends[tp]
                for record in records:
                    if record.offset < end:
                        handle(record)
            for tp in list(remaining):
                if await consumer.position(tp) >= ends[tp]:
                    remaining.discard(tp)
                    consumer.pause(tp)
        return ends
    finally:
        await consumer.stop()
