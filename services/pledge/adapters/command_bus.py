"""Appends commands to ``pledge-commands`` (key = campaign id), durably: ``acks=all``, idempotent.

Single sends are not awaited one by one on the wire: the commands of all requests in flight
share record batches, and each request awaits only the acknowledgement of the batch holding its
command. The bus fills one open record batch per partition itself and hands it to the producer
as soon as the producer has sent the previous one (aiokafka queues one batch per partition), so
a batch collects what arrives during a round trip - what aiokafka's ``send`` does too, minus
its per-record future, metadata object and coroutine (most of a request's Kafka CPU). A batch
request likewise builds one record batch per partition.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import time
from collections.abc import Callable, Sequence
from typing import Any

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
        #: campaign id -> (partition, message key), cached (murmur2 and encoding once each)
        self._route: dict[str, tuple[int, bytes]] = {}
        #: per partition: record batches not yet handed to the producer, with the future
        #: their senders await (the last one is still open for appends).
        self._open: dict[int, collections.deque[tuple[Any, asyncio.Future[None]]]] = {}
        self._pumps: dict[int, asyncio.Task[None]] = {}

    async def start(self) -> None:
        await self._producer.start()
        self._partitions = sorted(await self._producer.partitions_for(self.topic))

    async def stop(self) -> None:
        if self._pumps:
            await asyncio.gather(*self._pumps.values(), return_exceptions=True)
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
        partition, key = self._route.get(campaign_id) or self._route_of(campaign_id)
        done = self._append(partition, key, value)
        # Shielded: a cancelled request must not cancel the batch other requests wait on.
        await asyncio.shield(done)
        if self._on_produce is not None:
            self._on_produce(time.perf_counter() - started)

    def _append(self, partition: int, key: bytes, value: bytes) -> asyncio.Future[None]:
        """Put one record into the partition's open batch; the future of that batch."""
        queue = self._open.get(partition)
        if queue is None:
            queue = self._open[partition] = collections.deque()
        if not queue or queue[-1][0].append(key=key, value=value, timestamp=None) is None:
            batch = self._producer.create_batch()
            if batch.append(key=key, value=value, timestamp=None) is None:
                raise ValueError("command larger than the producer's batch size")
            queue.append((batch, asyncio.get_running_loop().create_future()))
        if partition not in self._pumps:
            self._pumps[partition] = asyncio.get_running_loop().create_task(self._pump(partition))
        return queue[-1][1]

    async def _pump(self, partition: int) -> None:
        """Hand the partition's batches to the producer in order, each once the previous one
        has been sent (``send_batch`` waits for that), until none is left."""
        queue = self._open[partition]
        try:
            while queue:
                batch, done = queue.popleft()
                try:
                    delivery = await self._send_batch(batch, partition)
                except Exception as exc:
                    if not done.done():
                        done.set_exception(exc)
                    continue
                except BaseException:
                    if not done.done():
                        done.set_exception(RuntimeError("command bus stopped"))
                    raise
                delivery.add_done_callback(functools.partial(_settle, done))
                # The next batch keeps collecting until this one is acknowledged: the
                # producer has one request in flight per broker, so a batch handed over
                # earlier would only wait in the producer's queue, closed to new records.
                await asyncio.wait((delivery,))
        finally:
            del self._pumps[partition]
            while queue:  # left only when cancelled: nobody may wait forever
                _, done = queue.popleft()
                if not done.done():
                    done.set_exception(RuntimeError("command bus stopped"))

    def partition(self, campaign_id: str) -> int:
        """Kafka's default partitioner (murmur2 of the key), cached per campaign."""
        return (self._route.get(campaign_id) or self._route_of(campaign_id))[0]

    def _route_of(self, campaign_id: str) -> tuple[int, bytes]:
        key = message_key(campaign_id)
        idx = (murmur2(key) & 0x7FFFFFFF) % len(self._partitions)
        if len(self._route) > 100_000:
            self._route.clear()
        route = self._route[campaign_id] = (self._partitions[idx], key)
        return route

    async def send_all(self, commands: Sequence[tuple[str, bytes]]) -> None:
        """Append many commands and wait until every one is acknowledged; the first error.

        Each command is one record, so it is appended whole or not at all; records of one
        campaign keep their order (one partition, one batch sequence). The records share the
        open batches with every other request in flight, so concurrent batch requests do not
        queue one record batch per partition each behind one another. The loop appends to
        the partition's open batch directly (the path of most records) and falls back to
        :meth:`_append` for a new batch.
        """
        started = time.perf_counter()
        route, route_of, open_batches = self._route, self._route_of, self._open
        waits: set[asyncio.Future[None]] = set()
        for campaign_id, value in commands:
            partition, key = route.get(campaign_id) or route_of(campaign_id)
            queue = open_batches.get(partition)
            if queue and queue[-1][0].append(key=key, value=value, timestamp=None) is not None:
                waits.add(queue[-1][1])
            else:
                waits.add(self._append(partition, key, value))
        try:
            # Every wait is awaited (shielded: a cancelled request must not cancel the batch
            # other requests wait on) before the first error is raised.
            outcomes = await asyncio.gather(
                *(asyncio.shield(f) for f in waits), return_exceptions=True
            )
        finally:
            if self._on_produce is not None:
                self._on_produce(time.perf_counter() - started)
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome

    async def _send_batch(self, batch: object, partition: int) -> asyncio.Future[object]:
        batch.close()  # type: ignore[attr-defined]
        future: asyncio.Future[object] = await self._producer.send_batch(
            batch, self.topic, partition=partition
        )
        return future


def _settle(done: asyncio.Future[None], delivery: asyncio.Future[object]) -> None:
    """Pass a batch's acknowledgement (or error) on to the requests waiting for it."""
    if done.done():
        return
    if delivery.cancelled():
        done.set_exception(RuntimeError("batch delivery cancelled"))
    elif (exc := delivery.exception()) is not None:
        done.set_exception(exc)
    else:
        done.set_result(None)
