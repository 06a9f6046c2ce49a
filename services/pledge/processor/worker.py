"""The campaign processor's worker: the single writer of campaign events.

Kept as one module: the loop, rebalancing and commit handling share the partition map
and its lock; their interleaving is the fencing argument.

One worker consumes ``pledge-commands`` in a consumer group (``read_committed``, no
auto-commit). For every partition *p* it owns it keeps:

* a transactional :class:`~services.streams.PartitionWriter` whose id is stable per partition
  (``<prefix><group>-<p>``), so whoever takes *p* over fences every older writer of *p* and
  aborts its pending transaction before it reads the log (the consumer group alone cannot
  fence: aiokafka's ``send_offsets_to_transaction`` carries no group generation);
* the **state** of *p*'s campaigns, rebuilt on assignment (:mod:`.recovery`) from the latest
  snapshot round of *p* plus partition *p* of the campaign-stream event topics.

Polled commands wait in their partition's backlog; each partition has at most one transaction
in flight, and when it commits, everything its backlog gathered meanwhile is decided
(:mod:`.decide`) and written in the next **one transaction**: every event to its topic, dead
letters, an optional snapshot round, and the consumed command offsets. Partitions do not wait
for each other, and under load transactions grow instead of queueing. Any failure aborts the
transaction, and the partition is rebuilt from the log and consumed again from its committed
offset (its backlog dropped), so a batch is written whole or not at all and a redelivered
command meets the exact state that already holds its events (the domain then yields nothing).
A timer closes campaigns whose deadline passed, inside the same
loop and transactions (closing is an event: replay never needs the clock).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import ProducerFenced

from schemas.topics import Topics
from services.pledge.adapters.snapshots import snapshot_limit
from services.pledge.domain import CampaignState, Policy
from services.pledge.processor.config import ProcessorSettings
from services.pledge.processor.decide import Decider
from services.pledge.processor.metrics import ProcessorMetrics, processor_metrics, record_commit
from services.pledge.processor.partition import Outbox, OwnedPartition, PoisonCommand
from services.pledge.processor.recovery import recover_partition
from services.streams import BeforeCommit, PartitionWriter
from services.streams.kafka_security import kafka_client_kwargs

__all__ = ["BeforeCommit", "Clock", "Processor", "utc_now"]

log = logging.getLogger("services.pledge.processor")

#: The processor's notion of now (tests pass a controllable one; replay never needs it).
Clock = Callable[[], datetime]


def utc_now() -> datetime:
    """The real clock."""
    return datetime.now(UTC)


class Processor:
    """A processor worker: join the group, own partitions, decide, write transactionally.

    ``start()`` returns once the consumer has started (partitions arrive asynchronously;
    :meth:`wait_assigned` waits for them); ``stop()`` finishes the in-flight batch and leaves.
    The consumer group is ``topic_prefix + processor_group``, transactional ids derive from it.
    """

    def __init__(
        self,
        settings: ProcessorSettings,
        *,
        clock: Clock = utc_now,
        metrics: ProcessorMetrics | None = None,
        before_commit: BeforeCommit | None = None,
    ) -> None:
        self.settings = settings
        self.topics = Topics(prefix=settings.topic_prefix, partitions=settings.partitions)
        self.group_id = settings.topic_prefix + settings.processor_group
        self._clock = clock
        self._policy = Policy(
            refuse_late_cancellation_below_goal=settings.refuse_late_cancellation_below_goal
        )
        self.metrics = metrics or processor_metrics()
        self._before_commit = before_commit
        self._commands_topic = self.topics.commands
        self._decider = Decider(
            self.topics,
            self._policy,
            snapshot_every=settings.snapshot_every_events,
            max_command_bytes=settings.processor_max_command_bytes,
        )
        self._parts: dict[int, OwnedPartition] = {}
        #: Partitions assigned to us whose recovery failed (retried by the loop).
        self._unrecovered: set[int] = set()
        self._lock = asyncio.Lock()
        self._stopping = asyncio.Event()
        self._assigned = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._next_sweep = 0.0
        #: Per partition: the task writing its transactions (one at a time, see _drain).
        self._drains: dict[int, asyncio.Task[None]] = {}
        #: Per partition: commands polled and not decided yet (its transaction in flight).
        self._backlog: dict[int, list[ConsumerRecord[bytes, bytes]]] = {}
        #: Partitions due for a deadline sweep at their next decision.
        self._sweep_due: set[int] = set()
        #: Topic-partitions paused because their backlog holds a full batch.
        self._paused: set[TopicPartition] = set()
        #: Bumped by every rebuild of a partition: records polled before it are stale.
        self._epochs: dict[int, int] = {}
        self._partition_count = settings.partitions
        self.metrics.track_open_campaigns(self._open_campaigns)

    # --- public surface ----------------------------------------------------------------------

    async def start(self) -> None:
        """Start the consumer (joining the group) and the processing loop."""
        s = self.settings
        if s.processor_gc_gen0_threshold:
            _, gen1, gen2 = gc.get_threshold()
            gc.set_threshold(s.processor_gc_gen0_threshold, gen1, gen2)
        consumer = AIOKafkaConsumer(
            bootstrap_servers=s.kafka_bootstrap,
            **kafka_client_kwargs(s.kafka_security),
            group_id=self.group_id,
            group_instance_id=s.processor_instance_id,
            enable_auto_commit=False,
            isolation_level="read_committed",
            auto_offset_reset="earliest",
            session_timeout_ms=s.processor_session_timeout_ms,
            heartbeat_interval_ms=max(1000, s.processor_session_timeout_ms // 5),
            max_partition_fetch_bytes=4 * 1024 * 1024,
            fetch_max_bytes=16 * 1024 * 1024,
        )
        self._decider.snapshot_max = await snapshot_limit(s.kafka_bootstrap, self.topics.snapshots)
        await consumer.start()
        self._consumer = consumer
        consumer.subscribe([self._commands_topic], listener=_Rebalance(self))
        self._task = asyncio.create_task(self._loop(), name="pledge-processor")

    async def stop(self) -> None:
        """Finish the in-flight batch, then close producers and leave the group."""
        self._stopping.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        async with self._lock:
            parts, self._parts = list(self._parts.values()), {}
            await asyncio.gather(*(p.writer.close() for p in parts))
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None

    async def run(self) -> None:
        """Start, and process until :meth:`stop` is called (or the loop dies)."""
        await self.start()
        assert self._task is not None
        await self._task

    async def wait(self) -> None:
        """Return when the processing loop ends (raising what ended it)."""
        if self._task is not None:
            await self._task

    async def wait_assigned(self, partitions: int | None = None, within: float = 60.0) -> None:
        """Wait until this worker owns (and has rebuilt) ``partitions`` partitions (all)."""
        wanted = self._partition_count if partitions is None else partitions
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while len(self._parts) < wanted:
            if self._task is not None and self._task.done():
                self._task.result()
            if loop.time() > deadline:
                raise TimeoutError(f"owns {sorted(self._parts)} after {within}s")
            await asyncio.sleep(0.05)

    @property
    def owned_partitions(self) -> list[int]:
        """Partitions this worker owns and has rebuilt."""
        return sorted(self._parts)

    def state(self, campaign_id: str) -> CampaignState | None:
        """The live state of a campaign this worker owns (for tests and diagnostics)."""
        for part in self._parts.values():
            found = part.states.get(campaign_id)
            if found is not None:
                return found
        return None

    def states(self) -> dict[str, CampaignState]:
        """Every campaign of every owned partition."""
        merged: dict[str, CampaignState] = {}
        for part in self._parts.values():
            merged.update(part.states)
        return merged

    # --- rebalancing -------------------------------------------------------------------------

    async def _on_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        async with self._lock:  # waits for the in-flight batch: it commits or aborts first
            for tp in revoked:
                if tp.topic == self._commands_topic:
                    self._forget_backlog(tp.partition)
            await self._settle()
            for tp in revoked:
                if tp.topic != self._commands_topic:
                    continue
                self._unrecovered.discard(tp.partition)
                part = self._parts.pop(tp.partition, None)
                if part is not None:
                    await part.writer.close()
            self._assigned.clear()

    async def _on_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        async with self._lock:
            await self._settle()
            numbers = sorted(tp.partition for tp in assigned if tp.topic == self._commands_topic)
            await self._recover_many(numbers)
            if self.settings.processor_gc_gen0_threshold:
                # The rebuilt states live long: keep full collections from rescanning them.
                gc.freeze()
            self._assigned.set()

    async def _recover_many(self, numbers: list[int]) -> None:
        results = await asyncio.gather(*(self._recover(n) for n in numbers), return_exceptions=True)
        for number, result in zip(numbers, results, strict=True):
            if isinstance(result, BaseException):
                log.error("recovering partition %s failed: %r", number, result)
                self._unrecovered.add(number)
            else:
                self._unrecovered.discard(number)

    async def _recover(self, number: int) -> None:
        """Fence older writers of ``number``, rebuild its campaigns, seek to its offset."""
        started = time.perf_counter()
        self._epochs[number] = self._epochs.get(number, 0) + 1
        self._forget_backlog(number)  # read again from the committed offset
        old = self._parts.pop(number, None)
        if old is not None:
            await old.writer.close()
        s = self.settings
        writer = PartitionWriter(
            s.kafka_bootstrap,
            self.group_id,
            number,
            transaction_timeout_ms=s.processor_transaction_timeout_ms,
            before_commit=self._before_commit,
        )
        try:
            # Fences older writers of the partition and aborts their open transaction, so
            # the log read below is final.
            await writer.start()
            recovered = await recover_partition(
                s.kafka_bootstrap, self.topics, number, use_snapshot=s.processor_use_snapshots
            )
            assert self._consumer is not None
            tp = TopicPartition(self._commands_topic, number)
            committed = await self._consumer.committed(tp)
            if committed is None:
                await self._consumer.seek_to_beginning(tp)
            else:
                self._consumer.seek(tp, committed)
        except BaseException:
            await writer.close()
            raise
        part = OwnedPartition(
            number=number,
            writer=writer,
            states=recovered.states,
            next_command=committed or 0,
            event_offsets=recovered.event_offsets,
            dirty=recovered.dirty,
            events_since_snapshot=recovered.replayed,
        )
        for state in part.states.values():
            part.track_deadline(state)
        self._parts[number] = part
        self.metrics.recovery.observe(time.perf_counter() - started)
        log.info(
            "partition %s rebuilt: %s campaigns, %s events replayed%s, resuming at offset %s",
            number,
            len(part.states),
            recovered.replayed,
            " after a snapshot" if recovered.from_snapshot else "",
            part.next_command,
        )

    # --- the loop ----------------------------------------------------------------------------

    async def _loop(self) -> None:
        """Poll and hand each partition's commands to its writer (:meth:`_drain`).

        A partition's commands wait in its backlog while its transaction is in flight and go
        into its next one together: one partition's slow transaction (a coordinator retry, a
        large batch) delays only that partition, and under load transactions grow instead
        of queueing. A partition whose backlog holds a full batch is paused until it drains.
        """
        assert self._consumer is not None
        consumer = self._consumer
        poll_ms = self.settings.processor_poll_ms
        batch_max = self.settings.processor_batch_max
        while not self._stopping.is_set():
            epochs = dict(self._epochs)
            try:
                batches = await consumer.getmany(timeout_ms=poll_ms, max_records=batch_max)
            except Exception:
                log.exception("polling pledge-commands failed; retrying")
                await asyncio.sleep(1.0)
                continue
            async with self._lock:
                if self._unrecovered:
                    await self._settle()
                    await self._recover_many(sorted(self._unrecovered))
                if time.monotonic() >= self._next_sweep:
                    self._next_sweep = time.monotonic() + self.settings.deadline_sweep_seconds
                    self._sweep_due.update(self._parts)
                for tp, records in batches.items():
                    number = tp.partition
                    if not records or number not in self._parts:
                        continue
                    if self._epochs.get(number) != epochs.get(number):
                        # A rebuild began while this poll was out: its records may come from
                        # before or after the rebuild's seek. Drop them and read again from
                        # the first offset the rebuilt partition has not taken yet.
                        self._read_again(tp)
                        continue
                    backlog = self._backlog.setdefault(number, [])
                    backlog.extend(records)
                    if len(backlog) >= batch_max and tp not in self._paused:
                        consumer.pause(tp)
                        self._paused.add(tp)
                for number, part in self._parts.items():
                    running = self._drains.get(number)
                    if running is not None and not running.done():
                        continue  # it takes the backlog when its transaction is done
                    if self._backlog.get(number) or (number in self._sweep_due and part.deadlines):
                        self._drains[number] = asyncio.create_task(
                            self._drain(part), name=f"pledge-processor-{number}"
                        )
        async with self._lock:
            await self._settle()

    async def _drain(self, part: OwnedPartition) -> None:
        """Decide and write ``part``'s backlog, one transaction at a time, until it is empty
        (the loop adds to it meanwhile). Deciding only while no transaction of the partition
        is in flight keeps a snapshot's offsets those of committed events, and a rebuild
        (after a failed transaction) never meets decisions made on a state it replaced."""
        number = part.number
        batch_max = self.settings.processor_batch_max
        gap = self.settings.processor_transaction_gap_ms / 1000
        while self._parts.get(number) is part:
            backlog = self._backlog.get(number)
            records = backlog[:batch_max] if backlog else []
            if backlog:
                del backlog[:batch_max]
            self._resume(number)
            sweep = number in self._sweep_due
            self._sweep_due.discard(number)
            if not records and not (sweep and part.deadlines):
                return
            try:
                out = self._decider.decide(part, records, self._clock(), sweep)
            except Exception as exc:
                await self._commit(part, None, exc)
                continue
            if out:
                await self._commit(part, out, None)
                if gap and self._backlog.get(number):
                    # Let the previous commit's markers be written before the next
                    # transaction's first coordinator request (it would be answered
                    # CONCURRENT_TRANSACTIONS and retried 20 ms later); what arrives
                    # meanwhile joins that transaction.
                    await asyncio.sleep(gap)

    def _read_again(self, tp: TopicPartition) -> None:
        """Seek ``tp`` to the first command its owned partition has neither decided nor
        holds in its backlog (nothing to do while it is being rebuilt: its seek comes)."""
        part = self._parts.get(tp.partition)
        if part is None or self._consumer is None:
            return
        backlog = self._backlog.get(tp.partition)
        self._consumer.seek(tp, backlog[-1].offset + 1 if backlog else part.next_command)

    def _resume(self, number: int) -> None:
        """Resume ``number``'s fetching once its backlog is below a batch again."""
        assert self._consumer is not None
        if len(self._backlog.get(number, ())) >= self.settings.processor_batch_max:
            return
        for tp in [tp for tp in self._paused if tp.partition == number]:
            self._paused.discard(tp)
            if tp in self._consumer.assignment():
                self._consumer.resume(tp)

    async def _settle(self) -> None:
        """Wait until no partition has a transaction in flight or commands waiting (and any
        rebuild they caused is done)."""
        while True:
            running = [task for task in self._drains.values() if not task.done()]
            if not running:
                break
            await asyncio.gather(*running, return_exceptions=True)
        drains, self._drains = self._drains, {}
        for task in drains.values():
            error = None if task.cancelled() else task.exception()
            if error is not None:
                raise error

    def _forget_backlog(self, number: int) -> None:
        """Drop what was polled for ``number`` and not decided (it is read again from the
        committed offset by whoever owns the partition next)."""
        self._backlog.pop(number, None)
        self._sweep_due.discard(number)
        self._resume(number)

    async def _commit(
        self, part: OwnedPartition, out: Outbox | None, error: Exception | None
    ) -> None:
        """Write one partition's decisions in one transaction; on any failure abort, rebuild
        the partition from the log and resume from its committed offset."""
        if self._parts.get(part.number) is not part:
            return  # decided on a state that a rebuild has since replaced
        try:
            if error is not None:
                raise error
            assert out is not None
            await self._write(part, out)
            record_commit(self.metrics, out)
        except ProducerFenced:
            # A newer owner of this partition exists: it rebuilt from the log, we stand down.
            log.warning("partition %s: fenced by a newer writer; dropping it", part.number)
            self.metrics.transactions.labels("aborted").inc()
            if self._parts.get(part.number) is part:
                del self._parts[part.number]
                self._forget_backlog(part.number)
            await part.writer.close()
        except Exception as exc:
            log.warning(
                "partition %s: batch failed (%r); rebuilding from the log", part.number, exc
            )
            self.metrics.transactions.labels("aborted").inc()  # the writer aborted it
            poison = set(part.poison)
            if isinstance(exc, PoisonCommand):
                poison.add(exc.offset)
            try:
                await self._recover(part.number)
                self._parts[part.number].poison = poison
            except Exception:
                log.exception("partition %s: rebuild failed; will retry", part.number)
                self._parts.pop(part.number, None)
                await part.writer.close()
                self._unrecovered.add(part.number)

    async def _write(self, part: OwnedPartition, out: Outbox) -> None:
        """One transaction: every record of ``out`` plus the consumed offset."""
        consumed = None
        if out.last_offset is not None:
            consumed = {TopicPartition(self._commands_topic, part.number): out.last_offset + 1}
        ends = await part.writer.write(out.records, consumed=consumed)
        for topic, end in ends.items():
            if end > part.event_offsets.get(topic, 0):
                part.event_offsets[topic] = end

    def _open_campaigns(self) -> int:
        return sum(
            1
            for part in list(self._parts.values())
            for s in part.states.values()
            if s.status == "open"
        )


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, processor: Processor) -> None:
        self._processor = processor

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self._processor._on_revoked(revoked)

    async def on_partitions_assigned(self, assigned: Any) -> None:
        await self._processor._on_assigned(assigned)
