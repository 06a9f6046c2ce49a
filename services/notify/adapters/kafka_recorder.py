"""The Kafka adapter of the recorder port: ``NotificationSent``/``NotificationFailed`` on the
notify stream, through the stream runtime's writer.

Per campaign partition *p* one :class:`~services.streams.PartitionWriter` (transactional id
``<group>-<p>``: starting it fences an older owner of *p*) and the chain heads of *p*'s
campaigns, rebuilt from the notify stream's own log (``replay_partition``) when *p* is first
written, and again after a failed transaction. Records that arrive while a transaction is in
flight are written together in the next one (group commit), so concurrent deliveries cost one
transaction, not one each.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import UTC, datetime

from schemas.events import NotificationFailed, NotificationSent
from schemas.topics import Topics
from services.streams import ChainHeads, OutRecord, PartitionWriter, replay_partition

__all__ = ["NotifyStreamRecorder"]

log = logging.getLogger("pledgeflow.notify.recorder")

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
    ) -> None:
        self.bootstrap = bootstrap
        self.group_id = group_id
        self.topics = topics
        self.partition_of = partition_of
        self.clock = clock
        self._writers: dict[int, tuple[PartitionWriter, ChainHeads]] = {}
        self._pending: dict[int, list[_Item]] = {}
        self._flushers: dict[int, asyncio.Task[None]] = {}

    async def record(
        self, campaign_id: str, events: list[NotificationSent | NotificationFailed], cause: str
    ) -> None:
        """Append ``events`` to the campaign's notify chain; returns once committed."""
        partition = self.partition_of(campaign_id)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.setdefault(partition, []).append((campaign_id, events, cause, done))
        if partition not in self._flushers:
            self._flushers[partition] = asyncio.create_task(self._flush(partition))
        await done

    async def release(self, partitions: set[int]) -> None:
        """Stop the writers of partitions this worker no longer owns."""
        for partition in partitions:
            entry = self._writers.pop(partition, None)
            if entry is not None:
                await entry[0].close()

    async def close(self) -> None:
        for task in list(self._flushers.values()):
            with contextlib.suppress(Exception):
                await task
        await self.release(set(self._writers))

    async def _writer(self, partition: int) -> tuple[PartitionWriter, ChainHeads]:
        entry = self._writers.get(partition)
        if entry is None:
            writer = PartitionWriter(self.bootstrap, self.group_id, partition)
            await writer.start()  # fences an older owner before the log is read back
            heads = ChainHeads()
            await replay_partition(
                self.bootstrap, self.topics.for_stream("notify"), partition, heads.apply
            )
            entry = self._writers[partition] = (writer, heads)
        return entry

    async def _flush(self, partition: int) -> None:
        try:
            while batch := self._pending.pop(partition, []):
                try:
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
                    await writer.write(records)
                except Exception as exc:
                    log.warning("notify stream write on partition %d failed: %r", partition, exc)
                    entry = self._writers.pop(partition, None)
                    if entry is not None:
                        await entry[0].close()  # the heads may hold an aborted tail: rebuild
                    for *_, done in batch:
                        if not done.done():
                            done.set_exception(exc)
                    continue
                for *_, done in batch:
                    if not done.done():
                        done.set_result(None)
        finally:
            self._flushers.pop(partition, None)
