"""Appends commands to ``pledge-commands`` (key = campaign id), durably: ``acks=all``, idempotent.

Single sends are not awaited one by one on the wire: the commands of all requests in flight
share record batches, and each request awaits only the acknowledgement of the batch holding its
command. The bus fills one open record batch per partition itself (what aiokafka's ``send``
does too, minus its per-record future, metadata object and coroutine) and one flusher hands the
open batches of *every* partition to the producer at once, so they leave in one produce request:

* once the previous hand-over is acknowledged (aiokafka has one request in flight per broker:
  a batch handed over earlier would only wait in its queue, closed to new records), and
* at least ``flush_interval_ms`` after the previous hand-over.

On a small box a produce request costs the broker and this process about as much CPU whether it
carries one record or fifty, so the interval caps the request rate (``1000 / interval`` per
second) and with it the CPU the API's Kafka traffic takes under load; a command that arrives
after a quiet period is sent at once. A batch request appends its records to the same batches,
and so do records of the other topics the bus is opened for (:meth:`CommandBus.send_records`:
the API's payment tokens): one producer, one flusher, one produce request per hand-over.

Every append is answered within ``send_timeout_s``: a record batch not acknowledged by then
fails its waiters with :class:`CommandLogTimeout` (one timer per batch, not per request), so a
write never hangs while the broker is down. The record may still reach the log later; a retry
of the same command is then a duplicate the processor ignores (same command id).
"""

from __future__ import annotations

import asyncio
import collections
import struct
import time
from collections.abc import Callable, Sequence
from typing import Any

from aiokafka import AIOKafkaProducer

from schemas.codec import message_key
from services.streams.kafka_security import kafka_client_kwargs

__all__ = ["CommandBus", "CommandLogTimeout", "murmur2"]

_M = 0x5BD1E995
_U32 = 0xFFFFFFFF


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 of a record key (``Utils.murmur2``), as aiokafka's default partitioner
    computes it (same value), about three times faster: the key's words are unpacked at once
    instead of byte by byte. Token keys are new on every pledge, so nothing can be cached."""
    length = len(data)
    h = (0x9747B28C ^ length) & _U32
    words = length >> 2
    for k in struct.unpack_from(f"<{words}I", data):
        k = (k * _M) & _U32
        k = ((k ^ (k >> 24)) * _M) & _U32
        h = ((h * _M) & _U32) ^ k
    extra = length & 3
    if extra:
        tail = words << 2
        if extra == 3:
            h ^= data[tail + 2] << 16
        if extra >= 2:
            h ^= data[tail + 1] << 8
        h = ((h ^ data[tail]) * _M) & _U32
    h = ((h ^ (h >> 13)) * _M) & _U32
    return h ^ (h >> 15)


class CommandLogTimeout(TimeoutError):
    """The broker did not acknowledge a command in time (it may still be appended later)."""


class CommandBus:
    """The API's only Kafka producer."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        *,
        flush_interval_ms: float = 0.0,
        on_produce: Callable[[float], None] | None = None,
        send_timeout_s: float = 5.0,
        record_topics: Sequence[str] = (),
    ) -> None:
        self.topic = topic
        #: other topics :meth:`send_records` writes to (their partitions are read at start)
        self.record_topics = tuple(record_topics)
        self._producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap,
            **kafka_client_kwargs(),
            acks="all",
            enable_idempotence=True,
            linger_ms=0,  # the flusher decides when batches leave
            max_batch_size=512 * 1024,
            max_request_size=4 * 1024 * 1024,
            request_timeout_ms=15_000,
        )
        self._on_produce = on_produce
        self._send_timeout = send_timeout_s
        self._partitions: list[int] = []
        #: per record topic: its partitions, sorted
        self._record_partitions: dict[str, list[int]] = {}
        #: campaign id -> ((topic, partition), message key), cached (murmur2 and encoding once)
        self._route: dict[str, tuple[tuple[str, int], bytes]] = {}
        #: per (topic, partition): record batches not yet handed to the producer, with the
        #: futures their senders await (the last one is still open for appends).
        self._open: dict[tuple[str, int], collections.deque[_Batch]] = {}
        self._interval = flush_interval_ms / 1000
        self._last_flush = -1e9
        self._flusher: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._producer.start()
        self._partitions = sorted(await self._producer.partitions_for(self.topic))
        for topic in self.record_topics:
            self._record_partitions[topic] = sorted(await self._producer.partitions_for(topic))

    async def stop(self) -> None:
        if self._flusher is not None:
            await asyncio.gather(self._flusher, return_exceptions=True)
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
        await self.append(campaign_id, value)
        if self._on_produce is not None:
            self._on_produce(time.perf_counter() - started)

    def append(self, campaign_id: str, value: bytes) -> asyncio.Future[None]:
        """Append one command to its partition's open batch now, and return the future of its
        acknowledgement (:meth:`send` without the wait: records appended before the caller
        next yields leave in the same hand-over, so in the same produce request).

        Each caller awaits a future of its own: a cancelled request cancels only that one,
        never the batch other requests wait on (cheaper than asyncio.shield)."""
        where, key = self._route.get(campaign_id) or self._route_of(campaign_id)
        queue = self._open.get(where)
        if queue and queue[-1].builder.append(key=key, value=value, timestamp=None) is not None:
            batch = queue[-1]
        else:
            batch = self._new_batch(where, key, value)
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        batch.waiters.append(waiter)
        return waiter

    async def send_records(self, topic: str, records: Sequence[tuple[bytes, bytes]]) -> None:
        """:meth:`append_records` and wait until every record is acknowledged (the first
        error, or :class:`CommandLogTimeout` after the send timeout)."""
        await self.append_records(topic, records)

    def append_records(
        self, topic: str, records: Sequence[tuple[bytes, bytes]]
    ) -> asyncio.Future[Any]:
        """Append ``(key, value)`` records to ``topic`` (one of ``record_topics``) now, and
        return the future of their acknowledgement (the first error). A record goes where
        Kafka's default partitioner puts its key (murmur2), as a plain producer would send it:
        a compacted topic keeps one partition per key. The records share the open batches and
        the flusher with the commands: appended before the caller next yields, they leave in
        the same produce request as the commands appended meanwhile. Raises :class:`KeyError`
        at once (nothing appended) for a topic the bus was not opened for or before
        :meth:`start`."""
        partitions = self._record_partitions[topic]
        count = len(partitions)
        open_batches = self._open
        touched: dict[_Batch, None] = {}
        for key, value in records:
            where = (topic, partitions[(murmur2(key) & 0x7FFFFFFF) % count])
            queue = open_batches.get(where)
            last = queue[-1] if queue else None
            if last is not None and last.builder.append(key=key, value=value, timestamp=None):
                touched[last] = None
            else:
                touched[self._new_batch(where, key, value)] = None
        return self._acknowledged(touched)

    def _new_batch(self, where: tuple[str, int], key: bytes, value: bytes) -> _Batch:
        """Open a new record batch for ``where`` (topic, partition) holding this record (the
        last one is full), and make sure the flusher runs."""
        queue = self._open.get(where)
        if queue is None:
            queue = self._open[where] = collections.deque()
        if queue:
            queue[-1].builder.close()
        builder = self._producer.create_batch()
        if builder.append(key=key, value=value, timestamp=None) is None:
            raise ValueError("command larger than the producer's batch size")
        batch = _Batch(builder)
        batch.timer = asyncio.get_running_loop().call_later(
            self._send_timeout, self._expire, where, batch
        )
        queue.append(batch)
        if self._flusher is None:
            self._flusher = asyncio.get_running_loop().create_task(self._flush())
        return batch

    async def _flush(self) -> None:
        """Hand every partition's batches to the producer together, each time once the
        previous hand-over is acknowledged and the interval has passed, until none is left."""
        loop = asyncio.get_running_loop()
        try:
            while any(self._open.values()):
                delay = self._last_flush + self._interval - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                self._last_flush = loop.time()
                deliveries = []
                # A copy: handing over a partition's second batch waits until the producer
                # drained its first, and meanwhile a new partition may get its queue.
                for (topic, partition), queue in list(self._open.items()):
                    while queue:
                        batch = queue.popleft()
                        try:
                            delivery = await self._send_batch(batch.builder, topic, partition)
                        except Exception as exc:
                            batch.fail(exc)
                            continue
                        except BaseException:
                            batch.fail(RuntimeError("command bus stopped"))
                            raise
                        delivery.add_done_callback(batch.settle)
                        deliveries.append(delivery)
                if deliveries:
                    await asyncio.wait(deliveries)
        finally:
            self._flusher = None
            for queue in self._open.values():  # left only when cancelled: nobody waits forever
                while queue:
                    queue.popleft().fail(RuntimeError("command bus stopped"))

    def _expire(self, where: tuple[str, int], batch: _Batch) -> None:
        """The send bound of ``batch`` passed: answer its waiters. A batch not yet handed to
        the producer is dropped (no later request may join a batch nobody waits on); one
        handed over may still be appended - a retry's copy is then a duplicate the processor
        ignores."""
        batch.timer = None
        queue = self._open.get(where)
        if queue is not None and batch in queue:
            queue.remove(batch)
        batch.fail(CommandLogTimeout("the broker did not acknowledge the command in time"))

    def partition(self, campaign_id: str) -> int:
        """Kafka's default partitioner (murmur2 of the key), cached per campaign."""
        return (self._route.get(campaign_id) or self._route_of(campaign_id))[0][1]

    def _route_of(self, campaign_id: str) -> tuple[tuple[str, int], bytes]:
        key = message_key(campaign_id)
        idx = (murmur2(key) & 0x7FFFFFFF) % len(self._partitions)
        if len(self._route) > 100_000:
            self._route.clear()
        route = self._route[campaign_id] = ((self.topic, self._partitions[idx]), key)
        return route

    async def send_all(self, commands: Sequence[tuple[str, bytes]]) -> None:
        """Append many commands and wait until every one is acknowledged; the first error.

        Each command is one record, so it is appended whole or not at all; records of one
        campaign keep their order (one partition, one batch sequence). The records share the
        open batches with every other request in flight, so concurrent batch requests do not
        queue one record batch per partition each behind one another. The loop appends to
        the partition's open batch directly (the path of most records) and falls back to
        :meth:`_new_batch` for a new one.
        """
        started = time.perf_counter()
        route, route_of, open_batches = self._route, self._route_of, self._open
        touched: dict[_Batch, None] = {}
        for campaign_id, value in commands:
            where, key = route.get(campaign_id) or route_of(campaign_id)
            queue = open_batches.get(where)
            last = queue[-1] if queue else None
            if last is not None and last.builder.append(key=key, value=value, timestamp=None):
                touched[last] = None
            else:
                touched[self._new_batch(where, key, value)] = None
        try:
            await self._settled(touched)
        finally:
            if self._on_produce is not None:
                self._on_produce(time.perf_counter() - started)

    async def _settled(self, touched: dict[_Batch, None]) -> None:
        """Wait for every batch in ``touched`` to be acknowledged; raise the first error."""
        loop = asyncio.get_running_loop()
        if len(touched) == 1:  # one record's usual case: no gather
            (only,) = touched
            acked: asyncio.Future[None] = loop.create_future()
            only.waiters.append(acked)
            await acked
            return
        waiters: list[asyncio.Future[None]] = []
        for batch in touched:
            waiter: asyncio.Future[None] = loop.create_future()
            batch.waiters.append(waiter)
            waiters.append(waiter)
        outcomes = await asyncio.gather(*waiters, return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome

    @staticmethod
    def _acknowledged(touched: dict[_Batch, None]) -> asyncio.Future[Any]:
        """One future for the acknowledgement of every batch in ``touched`` (the first
        error); one record's usual case is the batch's own waiter, no gather."""
        loop = asyncio.get_running_loop()
        waiters: list[asyncio.Future[None]] = []
        for batch in touched:
            waiter: asyncio.Future[None] = loop.create_future()
            batch.waiters.append(waiter)
            waiters.append(waiter)
        if len(waiters) == 1:
            return waiters[0]
        return asyncio.gather(*waiters)

    async def _send_batch(
        self, batch: object, topic: str, partition: int
    ) -> asyncio.Future[object]:
        batch.close()  # type: ignore[attr-defined]
        future: asyncio.Future[object] = await self._producer.send_batch(
            batch, topic, partition=partition
        )
        return future


class _Batch:
    """A record batch and the futures of the requests waiting for its acknowledgement."""

    __slots__ = ("builder", "timer", "waiters")

    def __init__(self, builder: Any) -> None:
        self.builder = builder
        self.waiters: list[asyncio.Future[None]] = []
        self.timer: asyncio.TimerHandle | None = None

    def settle(self, delivery: asyncio.Future[Any]) -> None:
        """Pass the batch's acknowledgement (or error) on to the requests waiting for it."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if delivery.cancelled():
            self.fail(RuntimeError("batch delivery cancelled"))
        elif (exc := delivery.exception()) is not None:
            self.fail(exc)
        else:
            for waiter in self.waiters:
                if not waiter.done():
                    waiter.set_result(None)

    def fail(self, exc: BaseException) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        for waiter in self.waiters:
            if not waiter.done():
                waiter.set_exception(exc)
