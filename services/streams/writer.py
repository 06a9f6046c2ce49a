"""The transactional side of a stream: one writer per owned partition, and chain stamping.

:class:`PartitionWriter` is the only writer of partition *p* of a service's stream topics.
Its transactional id is stable (``<group>-<p>``), so starting it fences every older writer of
*p* and aborts that writer's open transaction before the new owner reads the log back.
:meth:`PartitionWriter.write` puts a batch of records, and optionally the consumed input
offsets, in one transaction: written whole or not at all; on any failure it aborts and
raises, and the caller rebuilds *p* from the log (its state may hold decisions that never
committed).

Stamping ``seq`` and the hash chain is :func:`schemas.envelope.stamp_chain` (the processor's
optimised path, re-exported here); :class:`ChainHeads` keeps the heads per (campaign, stream)
for services whose own state does not carry them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.errors import IllegalOperation, ProducerFenced

from schemas.canonical import GENESIS_HASH
from schemas.envelope import Envelope, Stamped, stamp_chain
from schemas.events import Event, Stream
from services.streams.kafka_log import transactional_producer
from services.streams.orderer import StreamKey

__all__ = ["BeforeCommit", "ChainHeads", "OutRecord", "PartitionWriter", "stamp_chain"]

#: ``(key, value, headers)`` of one record to write. Headers must be a list (aiokafka's C
#: record builder takes nothing else); share one empty list for records without any.
OutRecord = tuple[bytes | None, bytes, Sequence[tuple[str, bytes]]]
#: Awaited just before a transaction commits, with the partition (tests raise to abort).
BeforeCommit = Callable[[int], Awaitable[None]]


class PartitionWriter:
    """The transactional writer of partition ``partition`` for consumer group ``group_id``."""

    def __init__(
        self,
        bootstrap: str,
        group_id: str,
        partition: int,
        *,
        transaction_timeout_ms: int = 60_000,
        before_commit: BeforeCommit | None = None,
    ) -> None:
        self.partition = partition
        self.group_id = group_id
        self.transactional_id = f"{group_id}-{partition}"
        self.producer: AIOKafkaProducer = transactional_producer(
            bootstrap, self.transactional_id, transaction_timeout_ms=transaction_timeout_ms
        )
        self._before_commit = before_commit

    async def start(self) -> None:
        """InitProducerId: bumps the epoch (fencing older writers of this partition) and
        aborts their open transaction, so a log read after this is final."""
        await self.producer.start()

    async def close(self) -> None:
        """Stop the producer (errors ignored: it may already be fenced or broken)."""
        with contextlib.suppress(Exception):
            await self.producer.stop()

    async def write(
        self,
        records: Mapping[str, Sequence[OutRecord]],
        *,
        consumed: Mapping[TopicPartition, int] | None = None,
        consumed_group: str | None = None,
    ) -> dict[str, int]:
        """One transaction: every record of ``records`` (``topic -> records``) to this
        partition, plus ``consumed`` (next offsets to read) committed for ``consumed_group``
        (default: the writer's ``group_id``).

        Sends are fired without awaiting each; returns ``topic -> offset after its last
        record``. On any failure the transaction is aborted and the error raised
        (:class:`aiokafka.errors.ProducerFenced` means a newer owner exists: stand down).
        """
        producer = self.producer
        number = self.partition
        pending: list[tuple[str, int, asyncio.Future[Any]]] = []
        try:
            await producer.begin_transaction()
            for topic, batch_records in records.items():
                batch = producer.create_batch()
                count = 0
                for key, value, headers in batch_records:
                    if batch.append(key=key, value=value, timestamp=None, headers=headers) is None:
                        future = await producer.send_batch(batch, topic, partition=number)
                        pending.append((topic, count, future))
                        batch = producer.create_batch()
                        count = 0
                        appended = batch.append(
                            key=key, value=value, timestamp=None, headers=headers
                        )
                        if appended is None:
                            raise ValueError(f"a record of {len(value)} bytes does not fit a batch")
                    count += 1
                future = await producer.send_batch(batch, topic, partition=number)
                pending.append((topic, count, future))
            delivered = await asyncio.gather(*(future for _, _, future in pending))
            if consumed:
                # Offsets after the records are delivered. Not before: the first coordinator
                # request of a transaction begun right after the previous one committed meets
                # that one's markers still being written (CONCURRENT_TRANSACTIONS), and aiokafka
                # retries AddOffsetsToTxn after its full retry backoff (100 ms) but the first
                # AddPartitionsToTxn after 20 ms. Not while produce requests are in flight
                # either: Kafka >= 3.6 (KIP-890 verification) answers them
                # CONCURRENT_TRANSACTIONS, which aiokafka's older produce version retries as
                # NOT_ENOUGH_REPLICAS (dozens of retries and warnings a minute).
                await producer.send_offsets_to_transaction(
                    dict(consumed), consumed_group or self.group_id
                )
            if self._before_commit is not None:
                await self._before_commit(number)
            await producer.commit_transaction()
        except BaseException as error:
            with contextlib.suppress(Exception):
                await producer.abort_transaction()
            if isinstance(error, IllegalOperation) and _fenced(pending):
                # Fenced while this transaction was open: aiokafka's sender fails the batches
                # already sent with ProducerFenced and leaves the transaction in a fatal state,
                # so the next send says only "not in transaction". Name the cause: the caller
                # stands down on a fenced partition, but ends on an unknown failure.
                raise ProducerFenced() from error
            raise
        ends: dict[str, int] = {}
        for (topic, count, _), meta in zip(pending, delivered, strict=True):
            end = meta.offset + count
            if end > ends.get(topic, 0):
                ends[topic] = end
        return ends


def _fenced(pending: Sequence[tuple[str, int, asyncio.Future[Any]]]) -> bool:
    """Whether a record batch already sent in this transaction failed as fenced."""
    return any(
        future.done() and not future.cancelled() and isinstance(future.exception(), ProducerFenced)
        for _, _, future in pending
    )


class ChainHeads:
    """``(campaign, stream) -> (last seq, last hash)``; :meth:`stamp` stamps events after the
    head and moves it. Rebuild it on assignment from the stream's own log (:meth:`apply`)."""

    __slots__ = ("_heads",)

    def __init__(self) -> None:
        self._heads: dict[StreamKey, tuple[int, str]] = {}

    def head(self, campaign_id: str, stream: str) -> tuple[int, str]:
        """The last seq and hash of the chain (``(0, GENESIS_HASH)`` when empty)."""
        return self._heads.get((campaign_id, stream), (0, GENESIS_HASH))

    def apply(self, envelope: Envelope) -> None:
        """Move the head to ``envelope`` (read back from the log, in seq order)."""
        self._heads[(envelope.campaign_id, envelope.stream)] = (envelope.seq, envelope.hash)

    def stamp(
        self,
        events: Sequence[Event],
        *,
        campaign_id: str,
        stream: Stream,
        occurred_at: datetime,
        causation_id: str,
        correlation_id: str,
        index: int = 0,
    ) -> list[Stamped]:
        """Stamp ``events`` (all of ``stream``) after the chain's head; the head moves to the
        last one. Write them in one transaction; if it aborts, rebuild the heads.

        Event ids are ``uuid5(stream:causation_id:index + i)``: when one cause is stamped in
        several calls, continue ``index`` where the previous call stopped."""
        if not events:
            return []
        seq, prev_hash = self.head(campaign_id, stream)
        stamped = stamp_chain(
            events,
            campaign_id=campaign_id,
            seq=seq + 1,
            prev_hash=prev_hash,
            occurred_at=occurred_at,
            causation_id=causation_id,
            correlation_id=correlation_id,
            index=index,
            stream=stream,
        )
        last = stamped[-1][0]
        self._heads[(campaign_id, stream)] = (last.seq, last.hash)
        return stamped

    def forget(self, keep: Callable[[StreamKey], bool]) -> None:
        """Drop the heads for which ``keep`` is false (e.g. of a revoked partition)."""
        for key in [k for k in self._heads if not keep(k)]:
            del self._heads[key]
