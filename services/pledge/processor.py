"""The campaign processor: the single writer of campaign events, driving aiokafka directly.

One worker consumes ``pledge-commands`` in a consumer group (``read_committed``, no
auto-commit). For every partition *p* it owns it keeps:

* a **transactional producer** whose id is stable per partition (``<prefix><group>-<p>``), so
  whoever takes *p* over fences every older writer of *p* and aborts its pending transaction
  before it reads the log (the consumer group alone cannot fence: aiokafka's
  ``send_offsets_to_transaction`` carries no group generation);
* the **state** of *p*'s campaigns, rebuilt on assignment from the latest snapshot round of
  *p* plus partition *p* of the campaign-stream event topics (``read_committed``), folded with
  the domain's ``evolve`` in ``seq`` order per campaign: nothing but the log is trusted.

Each poll (``getmany``) is decided per partition and written in **one transaction per
partition**: every event to its topic, dead letters, an optional snapshot round, and the
consumed command offsets (``send_offsets_to_transaction``); sends are fired without awaiting,
then the transaction commits. Any failure aborts it, and the partition is rebuilt from the log
and consumed again from its committed offset, so a batch is written whole or not at all and a
redelivered command meets the exact state that already holds its events (the domain then
yields nothing). A timer closes campaigns whose deadline passed, inside the same loop and
transactions (closing is an event: replay never needs the clock).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import heapq
import logging
import math
import time
from bisect import bisect_left, bisect_right
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import ProducerFenced
from prometheus_client import Histogram

from schemas import DecodeError, Envelope, decode, decode_command, encode, message_key
from schemas.topics import COMMANDS_TOPIC, Topics
from services.pledge.adapters.snapshots import (
    MAX_SNAPSHOT_BYTES,
    load_snapshot,
    snapshot_limit,
    snapshot_records,
)
from services.pledge.config import PledgeSettings
from services.pledge.domain import (
    CampaignState,
    Policy,
    deadline_close,
    decide_encoded,
    evolve,
)
from services.pledge.metrics import ProcessorMetrics, processor_metrics
from services.streams import dead_letter, key_partition, read_to_end, transactional_producer

__all__ = [
    "Clock",
    "Processor",
    "RecoveredPartition",
    "RecoveryError",
    "recover_partition",
    "utc_now",
]

log = logging.getLogger(__name__)

#: The processor's notion of now (tests pass a controllable one; replay never needs it).
Clock = Callable[[], datetime]
#: Test hook awaited just before a partition's transaction commits (raise to force an abort).
BeforeCommit = Callable[[int], Awaitable[None]]


def utc_now() -> datetime:
    """The real clock."""
    return datetime.now(UTC)


class RecoveryError(RuntimeError):
    """The log of a partition cannot be folded (a gap in a campaign's seq): never guessed."""


@dataclass
class RecoveredPartition:
    """What recovery rebuilt for one partition: the states and where the log ends."""

    partition: int
    states: dict[str, CampaignState]
    #: ``event topic -> offset after the last committed record`` (where new events go).
    event_offsets: dict[str, int]
    #: Campaigns changed after the snapshot used (all of them without one).
    dirty: set[str]
    #: Events folded on top of the snapshot.
    replayed: int
    from_snapshot: bool


async def recover_partition(
    bootstrap: str, topics: Topics, partition: int, *, use_snapshot: bool = True
) -> RecoveredPartition:
    """Rebuild partition ``partition``'s campaigns from the log (``read_committed``).

    Starts from the latest snapshot round (unless ``use_snapshot`` is false) and folds the
    campaign-stream events after it with ``evolve`` in ``seq`` order per campaign, holding back
    an event until its predecessor (read from another topic) has been applied.
    """
    snapshot = await load_snapshot(bootstrap, topics.snapshots, partition) if use_snapshot else None
    states: dict[str, CampaignState] = dict(snapshot.states) if snapshot else {}
    event_topics = topics.for_stream("campaign")
    tps = [TopicPartition(topic, partition) for topic in event_topics]
    start = (
        {TopicPartition(t, partition): o for t, o in snapshot.offsets.items()} if snapshot else None
    )
    held: dict[str, dict[int, Envelope]] = {}
    dirty: set[str] = set()
    replayed = 0

    def fold(record: ConsumerRecord[bytes, bytes]) -> None:
        nonlocal replayed
        envelope = decode(record.value)
        campaign_id = envelope.campaign_id
        state = states.get(campaign_id)
        if state is None:
            state = states[campaign_id] = CampaignState.empty(campaign_id)
        if envelope.seq <= state.seq:
            return  # covered by the snapshot
        if envelope.seq > state.seq + 1:
            held.setdefault(campaign_id, {})[envelope.seq] = envelope
            return
        evolve(state, envelope)
        replayed += 1
        waiting = held.get(campaign_id)
        while waiting and (state.seq + 1) in waiting:
            evolve(state, waiting.pop(state.seq + 1))
            replayed += 1
        dirty.add(campaign_id)

    ends = await read_to_end(bootstrap, tps, fold, start=start)
    gaps = {cid: min(w) for cid, w in held.items() if w}
    if gaps:
        cid, seq = next(iter(gaps.items()))
        raise RecoveryError(
            f"partition {partition}: campaign {cid} has seq {seq} but not "
            f"seq {states[cid].seq + 1} ({len(gaps)} campaign(s) with gaps)"
        )
    # Campaigns that only ever had a snapshot and no state change keep it; empty states from
    # an all-covered overlap are dropped.
    states = {cid: s for cid, s in states.items() if s.seq > 0}
    return RecoveredPartition(
        partition=partition,
        states=states,
        event_offsets={tp.topic: offset for tp, offset in ends.items()},
        dirty=dirty if snapshot else set(states),
        replayed=replayed,
        from_snapshot=snapshot is not None,
    )


@dataclass
class _Partition:
    """One owned partition of ``pledge-commands``: its writer, its campaigns, its place."""

    number: int
    producer: AIOKafkaProducer
    states: dict[str, CampaignState]
    #: Next command offset to decide (anything below was decided in a committed transaction).
    next_command: int
    event_offsets: dict[str, int]
    dirty: set[str]
    events_since_snapshot: int
    #: ``(deadline, campaign_id)`` of campaigns that were open when pushed.
    deadlines: list[tuple[datetime, str]] = field(default_factory=list)
    #: Command offsets whose decision broke ``evolve``: dead-lettered on the next attempt.
    poison: set[int] = field(default_factory=set)
    #: ``campaign_id -> message key`` of campaigns whose key was checked to map to this
    #: partition (the check is then one comparison per command).
    keys: dict[str, bytes] = field(default_factory=dict)

    def track_deadline(self, state: CampaignState) -> None:
        if state.status == "open" and state.terms is not None:
            heapq.heappush(self.deadlines, (state.terms.deadline, state.campaign_id))


#: Headers of every record but dead letters (shared: never mutated). A list, not a tuple:
#: aiokafka's C record builder accepts nothing else.
_NO_HEADERS: list[tuple[str, bytes]] = []


class _PoisonCommand(Exception):
    def __init__(self, offset: int) -> None:
        super().__init__(f"command at offset {offset} broke evolve")
        self.offset = offset


@dataclass
class _Outbox:
    """Everything one partition's transaction will write, and what to count once committed."""

    records: dict[str, list[tuple[bytes | None, bytes, Sequence[tuple[str, bytes]]]]] = field(
        default_factory=dict
    )
    last_offset: int | None = None
    commands: Counter[tuple[str, str]] = field(default_factory=Counter)
    rejections: Counter[str] = field(default_factory=Counter)
    dead_letters: Counter[str] = field(default_factory=Counter)
    events: Counter[str] = field(default_factory=Counter)
    #: ``now - issued_at`` of every decided command (a timedelta costs less than a timestamp).
    issued: list[timedelta] = field(default_factory=list)
    #: The clock reading the batch was decided with.
    now: datetime | None = None
    snapshot: bool = False

    def add(
        self, topic: str, key: bytes | None, value: bytes, headers: Sequence[tuple[str, bytes]]
    ) -> None:
        bucket = self.records.get(topic)
        if bucket is None:
            bucket = self.records[topic] = []
        bucket.append((key, value, headers))

    def __bool__(self) -> bool:
        return bool(self.records) or self.last_offset is not None


class Processor:
    """A processor worker: join the group, own partitions, decide, write transactionally.

    ``start()`` returns once the consumer has started (partitions arrive asynchronously;
    :meth:`wait_assigned` waits for them); ``stop()`` finishes the in-flight batch and leaves.
    The consumer group is ``topic_prefix + processor_group``, transactional ids derive from it.
    """

    def __init__(
        self,
        settings: PledgeSettings,
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
        self._event_topics = self.topics.event_topics()
        self._commands_topic = self.topics.commands
        self._dlq = self.topics.dead_letter(COMMANDS_TOPIC)
        self._parts: dict[int, _Partition] = {}
        #: Partitions assigned to us whose recovery failed (retried by the loop).
        self._unrecovered: set[int] = set()
        self._lock = asyncio.Lock()
        self._stopping = asyncio.Event()
        self._assigned = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._next_sweep = 0.0
        #: Transactions of the previous poll, committing while the next poll is decided.
        self._pending: asyncio.Task[None] | None = None
        #: Bumped by every rebuild of a partition: records polled before it are stale.
        self._epochs: dict[int, int] = {}
        self._partition_count = settings.partitions
        #: Biggest campaign snapshot the snapshot topic takes (read from it at start).
        self._snapshot_max = MAX_SNAPSHOT_BYTES
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
        self._snapshot_max = await snapshot_limit(s.kafka_bootstrap, self.topics.snapshots)
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
            await asyncio.gather(*(_close(p.producer) for p in parts))
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None

    async def run(self) -> None:
        """Start, and process until :meth:`stop` is called (or the loop dies)."""
        await self.start()
        assert self._task is not None
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
            await self._settle()
            for tp in revoked:
                if tp.topic != self._commands_topic:
                    continue
                self._unrecovered.discard(tp.partition)
                part = self._parts.pop(tp.partition, None)
                if part is not None:
                    await _close(part.producer)
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
        old = self._parts.pop(number, None)
        if old is not None:
            await _close(old.producer)
        s = self.settings
        producer = transactional_producer(
            s.kafka_bootstrap,
            f"{self.group_id}-{number}",
            transaction_timeout_ms=s.processor_transaction_timeout_ms,
        )
        try:
            # InitProducerId: bumps the epoch (fencing zombies) and aborts their open transaction,
            # so the log read below is final.
            await producer.start()
            recovered = await recover_partition(s.kafka_bootstrap, self.topics, number)
            assert self._consumer is not None
            tp = TopicPartition(self._commands_topic, number)
            committed = await self._consumer.committed(tp)
            if committed is None:
                await self._consumer.seek_to_beginning(tp)
            else:
                self._consumer.seek(tp, committed)
        except BaseException:
            await _close(producer)
            raise
        part = _Partition(
            number=number,
            producer=producer,
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
        assert self._consumer is not None
        consumer = self._consumer
        poll_ms = self.settings.processor_poll_ms
        batch_max = self.settings.processor_batch_max
        every = self.settings.snapshot_every_events
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
                now = self._clock()
                sweep = time.monotonic() >= self._next_sweep
                if sweep:
                    self._next_sweep = time.monotonic() + self.settings.deadline_sweep_seconds
                if any(p.events_since_snapshot >= every and p.dirty for p in self._parts.values()):
                    # A snapshot records the offsets of committed events: let them commit.
                    await self._settle()
                decided: list[tuple[_Partition, _Outbox | None, Exception | None]] = []
                for number, part in list(self._parts.items()):
                    records = batches.get(TopicPartition(self._commands_topic, number), [])
                    if records and self._epochs.get(number) != epochs.get(number):
                        records = []  # fetched before a rebuild moved the partition back
                    if not records and not (sweep and part.deadlines):
                        continue
                    try:
                        out = self._decide(part, records, now, sweep)
                    except Exception as exc:
                        decided.append((part, None, exc))
                    else:
                        if out:
                            decided.append((part, out, None))
                # Batch k+1 was decided while batch k committed; now k must be done (a
                # partition rebuilt meanwhile drops its k+1 decisions as stale).
                await self._settle()
                if decided:
                    self._pending = asyncio.create_task(self._write_all(decided))
        async with self._lock:
            await self._settle()

    async def _settle(self) -> None:
        """Wait for the in-flight transactions (and any rebuild they caused)."""
        pending, self._pending = self._pending, None
        if pending is not None:
            await pending

    async def _write_all(
        self, decided: list[tuple[_Partition, _Outbox | None, Exception | None]]
    ) -> None:
        await asyncio.gather(*(self._commit(part, out, error) for part, out, error in decided))

    async def _commit(self, part: _Partition, out: _Outbox | None, error: Exception | None) -> None:
        """Write one partition's decisions in one transaction; on any failure abort, rebuild
        the partition from the log and resume from its committed offset."""
        if self._parts.get(part.number) is not part:
            return  # decided on a state that a rebuild has since replaced
        try:
            if error is not None:
                raise error
            assert out is not None
            await self._write(part, out)
            self._committed(out)
        except ProducerFenced:
            # A newer owner of this partition exists: it rebuilt from the log, we stand down.
            log.warning("partition %s: fenced by a newer writer; dropping it", part.number)
            self.metrics.transactions.labels("aborted").inc()
            if self._parts.get(part.number) is part:
                del self._parts[part.number]
            await _close(part.producer)
        except Exception as exc:
            log.warning(
                "partition %s: batch failed (%r); rebuilding from the log", part.number, exc
            )
            self.metrics.transactions.labels("aborted").inc()
            with contextlib.suppress(Exception):
                await part.producer.abort_transaction()
            poison = set(part.poison)
            if isinstance(exc, _PoisonCommand):
                poison.add(exc.offset)
            try:
                await self._recover(part.number)
                self._parts[part.number].poison = poison
            except Exception:
                log.exception("partition %s: rebuild failed; will retry", part.number)
                self._parts.pop(part.number, None)
                await _close(part.producer)
                self._unrecovered.add(part.number)

    def _decide(
        self,
        part: _Partition,
        records: list[ConsumerRecord[bytes, bytes]],
        now: datetime,
        sweep: bool,
    ) -> _Outbox:
        out = _Outbox()
        if part.events_since_snapshot >= self.settings.snapshot_every_events and part.dirty:
            self._snapshot(part, out)
        # The hot loop (once per command): decode, decide, fold the events into the state,
        # queue their bytes. What it touches is bound to locals; rare cases call out.
        first = part.next_command
        poison = part.poison
        keys = part.keys
        states = part.states
        dirty = part.dirty
        policy = self._policy
        event_topics = self._event_topics
        outbox = out.records
        # Plain dicts, added to the outbox's Counters at the end (a Counter's += is slower).
        outcomes: dict[tuple[str, str], int] = {}
        event_counts: dict[str, int] = {}
        issued = out.issued
        written = 0
        for record in records:
            offset = record.offset
            if offset < first:
                continue  # fetched before a rebuild moved us back: already decided
            out.last_offset = offset
            if offset in poison:
                self._dead_letter(out, record, "evolve_failed", "a previous decision broke evolve")
                continue
            value = record.value
            try:
                command = decode_command(value if value is not None else b"")
            except DecodeError as exc:
                self._dead_letter(out, record, "undecodable", str(exc))
                continue
            # Fields from __dict__: a pydantic model's attribute reads are slow.
            fields = command.__dict__
            campaign_id: str = fields["campaign_id"]
            key = keys.get(campaign_id)
            if key is None or record.key != key:
                key = self._owned_key(part, record, campaign_id, out)
                if key is None:
                    continue  # dead-lettered
            state = states.get(campaign_id)
            new = state is None
            if state is None:
                state = CampaignState.empty(campaign_id)
            try:
                decided = decide_encoded(state, command, now, policy)
            except Exception as exc:  # a domain bug must not stop the partition
                log.exception("decide failed on %s offset %s", record.topic, offset)
                self._dead_letter(out, record, "decide_failed", repr(exc))
                continue
            command_type: str = fields["command_type"]
            if not decided:
                outcome_key = (command_type, "ignored")
                outcomes[outcome_key] = outcomes.get(outcome_key, 0) + 1
                continue
            outcome = "accepted"
            try:
                for envelope, body, data in decided:
                    evolve(state, envelope)
                    event_type: str = body["event_type"]
                    topic = event_topics[event_type]
                    bucket = outbox.get(topic)
                    if bucket is None:
                        bucket = outbox[topic] = []
                    bucket.append((key, data, _NO_HEADERS))
                    event_counts[event_type] = event_counts.get(event_type, 0) + 1
                    if event_type == "PledgeRejected":
                        outcome = "rejected"
                        out.rejections[body["payload"]["reason"]] += 1
                    elif event_type == "CampaignLaunched":
                        part.track_deadline(state)
            except Exception as exc:
                raise _PoisonCommand(offset) from exc
            if new:
                states[campaign_id] = state
            dirty.add(campaign_id)
            written += len(decided)
            outcome_key = (command_type, outcome)
            outcomes[outcome_key] = outcomes.get(outcome_key, 0) + 1
            issued.append(now - fields["issued_at"])
        part.events_since_snapshot += written
        out.now = now
        out.commands.update(outcomes)
        out.events.update(event_counts)
        if sweep:
            self._sweep(part, now, out)
        if out.last_offset is not None:
            part.next_command = out.last_offset + 1
        return out

    def _owned_key(
        self,
        part: _Partition,
        record: ConsumerRecord[bytes, bytes],
        campaign_id: str,
        out: _Outbox,
    ) -> bytes | None:
        """The message key of ``campaign_id`` if ``record`` carries it and the campaign belongs
        to ``part`` (remembered for the next command); otherwise dead-letter ``record``."""
        key = message_key(campaign_id)
        if record.key != key:
            self._dead_letter(out, record, "wrong_key", f"key is not campaign id {campaign_id!r}")
            return None
        if key_partition(key, self._partition_count) != part.number:
            # Co-partitioning broken (another partitioner, or a repartitioned topic):
            # deciding here would split the campaign's stream between two writers.
            self._dead_letter(
                out, record, "wrong_partition", f"{campaign_id!r} is not in {part.number}"
            )
            return None
        part.keys[campaign_id] = key
        return key

    def _sweep(self, part: _Partition, now: datetime, out: _Outbox) -> None:
        heap = part.deadlines
        while heap and heap[0][0] <= now:
            _, campaign_id = heapq.heappop(heap)
            state = part.states.get(campaign_id)
            if state is None:
                continue
            closed = deadline_close(state, now)
            for envelope in closed:
                evolve(state, envelope)
                out.add(
                    self._event_topics[envelope.event_type],
                    message_key(campaign_id),
                    encode(envelope),
                    _NO_HEADERS,
                )
                out.events[envelope.event_type] += 1
            if closed:
                part.dirty.add(campaign_id)
                part.events_since_snapshot += len(closed)

    def _snapshot(self, part: _Partition, out: _Outbox) -> None:
        """Queue a snapshot round of the campaigns changed so far (state before this batch,
        i.e. exactly the committed log up to ``event_offsets``)."""
        states = [part.states[cid] for cid in sorted(part.dirty) if cid in part.states]
        records = snapshot_records(states, part.event_offsets, part.number, self._snapshot_max)
        if records is None:
            log.warning("partition %s: a campaign snapshot is too big; round skipped", part.number)
            return
        for key, value in records:
            out.add(self.topics.snapshots, key, value, _NO_HEADERS)
        part.dirty = set()
        part.events_since_snapshot = 0
        out.snapshot = True

    def _dead_letter(
        self, out: _Outbox, record: ConsumerRecord[bytes, bytes], cause: str, detail: str
    ) -> None:
        key, value, headers = dead_letter(record, cause, detail)
        out.add(self._dlq, key, value, headers)
        out.dead_letters[cause] += 1
        out.commands[("unknown", "dead_lettered")] += 1

    async def _write(self, part: _Partition, out: _Outbox) -> None:
        """One transaction: every record of ``out`` plus the consumed offset, sends fired
        without awaiting each, then commit."""
        producer = part.producer
        number = part.number
        await producer.begin_transaction()
        pending: list[tuple[str, int, asyncio.Future[Any]]] = []
        for topic, records in out.records.items():
            batch = producer.create_batch()
            count = 0
            for key, value, headers in records:
                if batch.append(key=key, value=value, timestamp=None, headers=headers) is None:
                    pending.append(
                        (topic, count, await producer.send_batch(batch, topic, partition=number))
                    )
                    batch = producer.create_batch()
                    count = 0
                    if batch.append(key=key, value=value, timestamp=None, headers=headers) is None:
                        raise ValueError(f"a record of {len(value)} bytes does not fit a batch")
                count += 1
            pending.append(
                (topic, count, await producer.send_batch(batch, topic, partition=number))
            )
        if out.last_offset is not None:
            await producer.send_offsets_to_transaction(
                {TopicPartition(self._commands_topic, number): out.last_offset + 1}, self.group_id
            )
        delivered = await asyncio.gather(*(future for _, _, future in pending))
        if self._before_commit is not None:
            await self._before_commit(number)
        await producer.commit_transaction()
        for (topic, count, _), meta in zip(pending, delivered, strict=True):
            end = meta.offset + count
            if end > part.event_offsets.get(topic, 0):
                part.event_offsets[topic] = end

    def _committed(self, out: _Outbox) -> None:
        m = self.metrics
        m.transactions.labels("committed").inc()
        decided = sum(out.commands.values())
        if decided:
            m.batch_size.observe(decided)
        for (command_type, outcome), n in out.commands.items():
            m.commands.labels(command_type, outcome).inc(n)
        for reason, n in out.rejections.items():
            m.rejections.labels(reason).inc(n)
        for cause, n in out.dead_letters.items():
            m.dead_letters.labels(cause).inc(n)
        for event_type, n in out.events.items():
            m.events.labels(event_type).inc(n)
        if out.snapshot:
            m.snapshots.inc()
        if out.issued and out.now is not None:
            # latency = wall - issued_at = (wall - now) + (now - issued_at)
            offset = timedelta(seconds=time.time() - out.now.timestamp())
            _observe_latencies(m.decision_latency, out.issued, offset)

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


def _observe_latencies(histogram: Histogram, deltas: list[timedelta], offset: timedelta) -> None:
    """``histogram.observe(max(0.0, (offset + d).total_seconds()))`` for every ``d`` (sorts
    ``deltas``), in one pass: counts per bucket by bisection instead of a Python-level observe
    per command."""
    buckets = getattr(histogram, "_buckets", None)
    bounds = getattr(histogram, "_upper_bounds", None)
    total = getattr(histogram, "_sum", None)
    if buckets is None or bounds is None or total is None or len(buckets) != len(bounds):
        for delta in deltas:  # another prometheus_client layout: the public way
            histogram.observe(max(0.0, (offset + delta).total_seconds()))
        return
    deltas.sort()
    # Negative latencies (clock skew) count as 0.0, as the per-value observe did.
    positive = deltas[bisect_left(deltas, -offset) :]
    if positive:
        total.inc((sum(positive, timedelta()) + offset * len(positive)).total_seconds())
    done = 0
    count = len(deltas)
    for bucket, bound in zip(buckets, bounds, strict=True):
        if bound == math.inf:
            end = count
        else:
            end = bisect_right(deltas, timedelta(seconds=bound) - offset)
        if end > done:
            bucket.inc(end - done)
            done = end


async def _close(producer: AIOKafkaProducer) -> None:
    with contextlib.suppress(Exception):
        await producer.stop()
