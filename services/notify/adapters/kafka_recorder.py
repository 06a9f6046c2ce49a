"""The Kafka adapter of the recorder port: ``NotificationSent``/``NotificationFailed`` on the
notify stream, through the stream runtime's writer.

Per campaign partition *p* one :class:`~services.streams.PartitionWriter` (transactional id
``<group>-<p>``: starting it fences an older owner of *p*) and the chain heads of *p*'s
campaigns, rebuilt from the notify stream's own log (``replay_partition``). Records that arrive
while a transaction is in flight, or within ``linger`` (2 ms) of the first, are written
together (group commit), so concurrent deliveries cost one transaction, not one each.

Ownership follows the consumer group. :meth:`acquire` (partitions assigned) starts the
writers at once, which fences a zombie before this worker delivers anything on them;
:meth:`release` (revoked) waits for the transaction in flight, then stops them. A partition
not acquired, or whose writer was fenced, refuses records (:class:`NotOwner`) and never gets a
new writer behind the group's back (that would fence the real owner in turn); a writer lost
to any other error is started again only while ``owns(p)`` (the delivery queue's owner token)
says this worker still owns *p*. A write is bounded in time: aiokafka's transaction calls on a
producer stopped or broken underneath never return, and a stuck flush would hold its
deliveries' lane slots for good.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from aiokafka.errors import ProducerFenced

from schemas.events import NotificationFailed, NotificationSent
from schemas.topics import Topics
from services.notify.ports import NotOwner
from services.streams import ChainHeads, OutRecord, PartitionWriter, replay_partition

__all__ = ["NotOwner", "NotifyStreamRecorder"]  # NotOwner re-exported from the port

log = logging.getLogger("pledgeflow.notify.recorder")


async def _always(_partition: int) -> bool:
    return True


_Item = tuple[str, list[NotificationSent | NotificationFailed], str, "asyncio.Future[None]"]


class NotifyStreamRecorder:
    """See the module docstring. ``close()`` stops every writer."""

    def __init__(
        self,
        bootstrap: str,
        group_id: str,
        topics: Topics,
        partition_of: Callable[[str], int],
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        owns: Callable[[int], Awaitable[bool]] = _always,
        write_timeout: float = 30.0,
        on_fenced: Callable[[int], None] = lambda _partition: None,
        linger: float = 0.002,
    ) -> None:
        self.bootstrap = bootstrap
        self.group_id = group_id
        self.topics = topics
        self.partition_of = partition_of
        self.clock = clock
        self.owns = owns
        self.write_timeout = write_timeout
        self.on_fenced = on_fenced
        #: how long a partition's first record waits for others before its transaction
        self.linger = linger
        self._owned: set[int] = set()
        self._writers: dict[int, tuple[PartitionWriter, ChainHeads]] = {}
        self._pending: dict[int, list[_Item]] = {}
        self._flushers: dict[int, asyncio.Task[None]] = {}
        #: one writer start at a time per partition (two would fence each other)
        self._starting: dict[int, asyncio.Lock] = {}

    async def acquire(self, partitions: set[int]) -> None:
        """Own ``partitions`` from now on: start their writers (fencing older owners)."""
        self._owned |= partitions

        async def start(partition: int) -> None:
            try:
                await self._writer(partition)
            except Exception as exc:  # retried by the first record on the partition
                log.warning("notify stream writer %d did not start: %r", partition, exc)

        await asyncio.gather(*(start(p) for p in sorted(partitions)))

    async def record(
        self, campaign_id: str, events: list[NotificationSent | NotificationFailed], cause: str
    ) -> None:
        """Append ``events`` to the campaign's notify chain; returns once committed. Raises
        :class:`NotOwner` if the campaign's partition is not this worker's."""
        partition = self.partition_of(campaign_id)
        if partition not in self._owned:
            raise NotOwner(partition)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.setdefault(partition, []).append((campaign_id, events, cause, done))
        if partition not in self._flushers:
            self._flushers[partition] = asyncio.create_task(self._flush(partition))
        await done

    async def release(self, partitions: set[int]) -> None:
        """Stop the writers of partitions this worker no longer owns (after the transaction in
        flight, bounded by the write timeout)."""
        self._owned -= partitions
        for partition in partitions:
            flusher = self._flushers.get(partition)
            if flusher is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(asyncio.shield(flusher), self.write_timeout)
                if not flusher.done():
                    flusher.cancel()
                    with contextlib.suppress(BaseException):
                        await flusher
            await self._drop(partition)

    async def close(self) -> None:
        await self.release(self._owned | set(self._writers) | set(self._flushers))

    async def _drop(self, partition: int) -> None:
        entry = self._writers.pop(partition, None)
        if entry is not None:
            await entry[0].close()

    async def _writer(self, partition: int) -> tuple[PartitionWriter, ChainHeads]:
        async with self._starting.setdefault(partition, asyncio.Lock()):
            return await self._start_writer(partition)

    async def _start_writer(self, partition: int) -> tuple[PartitionWriter, ChainHeads]:
        entry = self._writers.get(partition)
        if entry is None:
            if partition not in self._owned or not await self.owns(partition):
                self._owned.discard(partition)
                raise NotOwner(partition)
            writer = PartitionWriter(self.bootstrap, self.group_id, partition)
            try:
                await writer.start()  # fences an older owner before the log is read back
                heads = ChainHeads()
                await replay_partition(
                    self.bootstrap, self.topics.for_stream("notify"), partition, heads.apply
                )
            except BaseException:
                await writer.close()
                raise
            if partition not in self._owned:  # released meanwhile
                await writer.close()
                raise NotOwner(partition)
            entry = self._writers[partition] = (writer, heads)
        return entry

    async def _write(self, partition: int, batch: list[_Item]) -> None:
        writer, heads = await self._writer(partition)
        records: dict[str, list[OutRecord]] = {}
        now = self.clock()
        for campaign_id, events, cause, _ in batch:
            stamped = heads.stamp(
                events,
                campaign_id=campaign_id,
                stream="notify",
                occurred_at=now,
                causation_id=cause,
                correlation_id=cause,
            )
            for envelope, _body, value in stamped:
                topic = self.topics.for_event(envelope.event_type)
                records.setdefault(topic, []).append((campaign_id.encode(), value, []))
        await asyncio.wait_for(writer.write(records), self.write_timeout)

    async def _flush(self, partition: int) -> None:
        batch: list[_Item] = []
        try:
            # the sends a pump started together answer within a few ms of each other: let them
            # share one transaction (three Kafka round trips) rather than start one each
            await asyncio.sleep(self.linger)
            while batch := self._pending.pop(partition, []):
                try:
                    await self._write(partition, batch)
                except Exception as exc:
                    error: Exception = exc
                    if isinstance(exc, ProducerFenced):
                        # a newer owner took the partition: stand down until the group says
                        # otherwise (never start a writer that would fence it in turn)
                        log.warning("notify stream partition %d fenced: standing down", partition)
                        self._owned.discard(partition)
                        self.on_fenced(partition)
                        error = NotOwner(partition)
                    elif not isinstance(exc, NotOwner):
                        log.warning("notify stream write %d failed: %r", partition, exc)
                    # the heads may hold an aborted tail: rebuild them with a new writer
                    await self._drop(partition)
                    _fail(batch, error)
                    continue
                for *_, done in batch:
                    if not done.done():
                        done.set_result(None)
        finally:
            # cancelled (release gave up waiting): no caller may wait for good
            _fail(batch + self._pending.pop(partition, []), NotOwner(partition))
            self._flushers.pop(partition, None)


def _fail(batch: list[_Item], error: Exception) -> None:
    for *_, done in batch:
        if not done.done():
            done.set_exception(error)
