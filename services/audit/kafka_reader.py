"""Committed record values straight from Kafka fetch responses, for the offline audit.

Why not ``AIOKafkaConsumer.getmany``: aiokafka 0.14 wraps every record in a ``ConsumerRecord``
(with a headers tuple) through one generator per partition, which is half of what consuming
costs the auditor, who needs only each value and its offset. So the auditor still uses the
consumer for what it does once (metadata, beginning and end offsets) but sends the fetch
requests itself over the consumer's client: one request in flight per broker, the next one
sent *before* the previous response is audited (the broker reads while we verify), and each
partition's values handed over as one list.

Only committed records are kept (``isolation_level=read_committed``, the same bookkeeping as
the Java consumer and aiokafka's own fetcher): the broker answers up to the last stable offset
and lists the aborted transactions of the range; a batch of an aborted producer is skipped
until that producer's abort marker, control batches are never data. Records at or past the
end offset taken at the start are not returned, so every partition is read up to the same
cut.
"""

from __future__ import annotations

import asyncio
import time
from array import array
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from aiokafka.errors import KafkaError

__all__ = ["Chunk", "CommittedReader", "KafkaReadError"]

#: ``FetchRequest`` isolation level: committed records only.
READ_COMMITTED = 1


class KafkaReadError(Exception):
    """Fetching stopped making progress or the broker refused a partition."""


@dataclass(slots=True)
class Chunk:
    """Consecutive committed records of one topic-partition: their values and offsets."""

    topic: str
    partition: int
    values: list[bytes]
    offsets: array[int] = field(default_factory=lambda: array("q"))


@dataclass(slots=True)
class _Position:
    """Where one topic-partition's reading stands."""

    topic: str
    partition: int
    offset: int
    end: int
    #: Least bytes asked for: doubled whenever an answer brought no whole batch.
    floor: int = 256 * 1024


class CommittedReader:
    """Reads ``[begin, end)`` of each topic-partition (committed records only) through
    ``client`` (an ``aiokafka`` client whose metadata already knows the topics)."""

    def __init__(
        self,
        client: Any,
        begin: dict[Any, int],
        end: dict[Any, int],
        *,
        max_bytes: int = 16 * 1024 * 1024,
        max_partition_bytes: int = 8 * 1024 * 1024,
        stall_seconds: float = 30.0,
        check_crcs: bool = True,
    ) -> None:
        self._client = client
        self._positions = {
            (tp.topic, tp.partition): _Position(tp.topic, tp.partition, begin[tp], end[tp])
            for tp in begin
            if end[tp] > begin[tp]
        }
        self._max_bytes = max_bytes
        self._max_partition_bytes = max_partition_bytes
        self._stall_seconds = stall_seconds
        self._check_crcs = check_crcs

    @property
    def remaining(self) -> list[str]:
        """The topic-partitions not yet read to their end offset (for error messages)."""
        return sorted(f"{p.topic}-{p.partition}" for p in self._positions.values())

    async def chunks(self) -> AsyncIterator[list[Chunk]]:
        """Yield the committed records of each fetch response, until every topic-partition
        has reached its end offset. While the caller works on one response, the next
        request to that broker is already on its way."""
        in_flight: dict[asyncio.Future[Any], tuple[int, dict[tuple[str, int], int]]] = {}
        last_progress = time.monotonic()
        try:
            while self._positions:
                if await self._send(in_flight):
                    await asyncio.sleep(0.1)  # a partition has no known leader yet
                if not in_flight:
                    self._check_stall(last_progress)
                    continue
                done, _ = await asyncio.wait(
                    in_flight, timeout=self._stall_seconds, return_when=asyncio.FIRST_COMPLETED
                )
                chunks: list[Chunk] = []
                advanced = False
                for task in done:
                    _, asked = in_flight.pop(task)
                    try:
                        response = task.result()
                    except KafkaError:  # the connection dropped: asked again below
                        continue
                    advanced |= self._parse(response, asked, chunks)
                if advanced:
                    last_progress = time.monotonic()
                else:
                    # An error answer or nothing new: ask again after a pause, not in a spin.
                    self._check_stall(last_progress)
                    await asyncio.sleep(0.05)
                if chunks:
                    # The next requests leave before these records are handed over.
                    await self._send(in_flight)
                    yield chunks
        finally:
            for task in in_flight:
                task.cancel()
            if in_flight:
                await asyncio.wait(in_flight)

    async def _send(
        self, in_flight: dict[asyncio.Future[Any], tuple[int, dict[tuple[str, int], int]]]
    ) -> bool:
        """Send a fetch to each leader that has none in flight; True if a leader is unknown
        (the metadata is then refreshed)."""
        from aiokafka import TopicPartition

        busy = {node for node, _ in in_flight.values()}
        by_node: dict[int, list[_Position]] = {}
        unknown = False
        leader_for = self._client.cluster.leader_for_partition
        for pos in self._positions.values():
            node = leader_for(TopicPartition(pos.topic, pos.partition))
            if node is None or node == -1:
                unknown = True
            elif node not in busy:
                by_node.setdefault(node, []).append(pos)
        for node, positions in by_node.items():
            asked = {(pos.topic, pos.partition): pos.offset for pos in positions}
            task = asyncio.ensure_future(self._client.send(node, self._request(positions)))
            in_flight[task] = (node, asked)
        if unknown:
            await self._client.force_metadata_update()
        return unknown

    def _check_stall(self, last_progress: float) -> None:
        if time.monotonic() - last_progress > self._stall_seconds:
            raise KafkaReadError(
                f"no records for {self._stall_seconds:.0f}s before the end offsets of "
                f"{self.remaining[:3]}"
            )

    def _request(self, positions: list[_Position]) -> Any:
        """A fetch of ``positions``, each asked for bytes in proportion to the records it
        has left (at least its floor, at most ``max_partition_bytes``). Asked alike, the
        broker would fill the response in request order, topic after topic; paced, every
        topic advances through the log at about the same rate, so an event that arrives
        before its predecessor on another topic is held back for one response, not until
        that whole topic has been read (which would hold most of a partition in memory)."""
        from aiokafka.protocol.fetch import FetchRequest

        left = sum(pos.end - pos.offset for pos in positions) or 1
        topics: dict[str, list[tuple[int, int, int]]] = {}
        total = 0
        for pos in positions:
            share = self._max_bytes * (pos.end - pos.offset) // left
            budget = min(max(share, pos.floor), self._max_partition_bytes)
            topics.setdefault(pos.topic, []).append((pos.partition, pos.offset, budget))
            total += budget
        # The response may hold every budget: a partition is then short only when its next
        # batch is larger than its budget (and its floor grows), never for lack of room.
        return FetchRequest(0, 1, total, READ_COMMITTED, list(topics.items()))

    def _parse(self, response: Any, asked: dict[tuple[str, int], int], chunks: list[Chunk]) -> bool:
        """Append the committed records of one fetch response to ``chunks`` and advance the
        positions (a partition's answer is dropped if it was not asked at its current
        position); True if a position moved."""
        from aiokafka import errors
        from aiokafka.record.memory_records import MemoryRecords

        version = response.API_VERSION
        if version < 4:
            raise KafkaReadError(f"the broker answered Fetch v{version} (no read_committed)")
        advanced = False
        for topic, partitions in response.topics:
            for partition, error_code, _highwater, *data in partitions:
                pos = self._positions.get((topic, partition))
                if pos is None or asked.get((topic, partition)) != pos.offset:
                    continue
                if error_code != 0:
                    error = errors.for_code(error_code)
                    if error in (
                        errors.NotLeaderForPartitionError,
                        errors.UnknownTopicOrPartitionError,
                    ):
                        self._client.force_metadata_update()
                        continue
                    raise KafkaReadError(f"{topic}-{partition}: {error.__name__}")
                aborted = data[2] if version >= 11 else data[-2]
                chunk = Chunk(topic, partition, [])
                before = pos.offset
                self._committed(pos, MemoryRecords(data[-1]), aborted, chunk)
                if pos.offset > before:
                    advanced = True
                elif pos.floor < self._max_partition_bytes:
                    pos.floor *= 2  # its next batch is larger than what was asked
                if pos.offset >= pos.end:
                    del self._positions[(topic, partition)]
                if chunk.values:
                    chunks.append(chunk)
        return advanced

    def _committed(
        self, pos: _Position, records: Any, aborted_transactions: Any, chunk: Chunk
    ) -> None:
        """Append the committed records of ``records`` below ``pos.end`` to ``chunk``."""
        from aiokafka.record.control_record import ABORT_MARKER, ControlRecord

        aborted = sorted(aborted_transactions or [], key=lambda t: t[1])
        aborted_producers: set[int] = set()
        values = chunk.values
        offsets = chunk.offsets
        while records.has_next() and pos.offset < pos.end:
            batch = records.next_batch()
            if self._check_crcs and not batch.validate_crc():
                raise KafkaReadError(
                    f"{pos.topic}-{pos.partition}: invalid CRC at offset {batch.base_offset}"
                )
            producer_id = batch.producer_id
            if producer_id is not None and producer_id >= 0:
                while aborted and aborted[0][1] <= batch.base_offset:
                    aborted_producers.add(aborted.pop(0)[0])
                if batch.is_control_batch:
                    marker = next(batch, None)
                    if marker is not None and ControlRecord.parse(marker.key) == ABORT_MARKER:
                        aborted_producers.discard(producer_id)
                    pos.offset = max(pos.offset, batch.next_offset)
                    continue
                if batch.is_transactional and producer_id in aborted_producers:
                    pos.offset = max(pos.offset, batch.next_offset)
                    continue
            elif batch.is_control_batch:
                pos.offset = max(pos.offset, batch.next_offset)
                continue
            found = list(batch)
            if found and (found[0].offset < pos.offset or found[-1].offset >= pos.end):
                found = [r for r in found if pos.offset <= r.offset < pos.end]
            if found:
                first, last = found[0].offset, found[-1].offset
                values.extend([r.value or b"" for r in found])
                if last - first == len(found) - 1:
                    offsets.extend(range(first, last + 1))
                else:
                    offsets.extend([r.offset for r in found])
            pos.offset = min(max(pos.offset, batch.next_offset), pos.end)
