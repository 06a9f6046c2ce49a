"""Appends commands to ``pledge-commands`` (key = campaign id), durably: ``acks=all``, idempotent.

Single sends are not awaited one by one on the wire: aiokafka's accumulator puts the commands
of all requests in flight into shared batches (``linger_ms``), and each request awaits only the
acknowledgement of the batch holding its command. A batch request builds one record batch per
partition itself, which skips the per-record overhead of ``send``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import murmur2

from schemas.codec import message_key

__all__ = ["CommandBus"]


class CommandBus:
    """The API's only Kafka producer."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        *,
        linger_ms: int = 1,
        on_produce: Callable[[float], None] | None = None,
    ) -> None:
        self.topic = topic
        self._producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap,
            acks="all",
            enable_idempotence=True,
            linger_ms=linger_ms,
            max_batch_size=512 * 1024,
            max_request_size=4 * 1024 * 1024,
            request_timeout_ms=15_000,
        )
        self._on_produce = on_produce
        self._partitions: list[int] = []
        self._partition_of: dict[str, int] = {}

    async def start(self) -> None:
        await self._producer.start()
        self._partitions = sorted(await self._producer.partitions_for(self.topic))

    async def stop(self) -> None:
        await self._producer.stop()

    async def ready(self) -> bool:
        """True when the broker answers a metadata request for the command topic."""
        try:
            metadata = await asyncio.wait_for(self._producer.client.fetch_all_metadata(), 3.0)
        except Exception:
            return False
        return self.topic in metadata.topics()

    async def send(self, campaign_id: str, value: bytes) -> None:
        """Append one command and wait until every in-sync replica has it."""
        started = time.perf_counter()
        delivery = await self._producer.send(self.topic, value, key=message_key(campaign_id))
        await delivery
        if self._on_produce is not None:
            self._on_produce(time.perf_counter() - started)

    def partition(self, campaign_id: str) -> int:
        """Kafka's default partitioner (murmur2 of the key), cached per campaign."""
        partition = self._partition_of.get(campaign_id)
        if partition is None:
            idx = (murmur2(message_key(campaign_id)) & 0x7FFFFFFF) % len(self._partitions)
            partition = self._partitions[idx]
            if len(self._partition_of) > 100_000:
                self._partition_of.clear()
            self._partition_of[campaign_id] = partition
        return partition

    async def send_many(self, commands: Sequence[tuple[str, bytes]]) -> list[BaseException | None]:
        """Append many commands; per command, None once acknowledged or the error.

        Each command is one record, so it is appended whole or not at all; records of one
        campaign keep their order (one partition, one batch sequence).
        """
        started = time.perf_counter()
        by_partition: dict[int, list[int]] = {}
        for index, (campaign_id, _) in enumerate(commands):
            by_partition.setdefault(self.partition(campaign_id), []).append(index)
        waits: list[tuple[list[int], asyncio.Future[object]]] = []
        for partition, indexes in by_partition.items():
            batch = self._producer.create_batch()
            members: list[int] = []
            for index in indexes:
                campaign_id, value = commands[index]
                key = message_key(campaign_id)
                if batch.append(key=key, value=value, timestamp=None) is None:
                    waits.append((members, await self._send_batch(batch, partition)))
                    batch, members = self._producer.create_batch(), []
                    if batch.append(key=key, value=value, timestamp=None) is None:
                        raise ValueError("command larger than the producer's batch size")
                members.append(index)
            if members:
                waits.append((members, await self._send_batch(batch, partition)))
        results: list[BaseException | None] = [None] * len(commands)
        outcomes = await asyncio.gather(*(future for _, future in waits), return_exceptions=True)
        for (members, _), outcome in zip(waits, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                for index in members:
                    results[index] = outcome
        if self._on_produce is not None:
            self._on_produce(time.perf_counter() - started)
        return results

    async def _send_batch(self, batch: object, partition: int) -> asyncio.Future[object]:
        batch.close()  # type: ignore[attr-defined]
        future: asyncio.Future[object] = await self._producer.send_batch(
            batch, self.topic, partition=partition
        )
        return future
