"""The ordered stream reader: a consumer group over one or more streams' event topics that
hands a service each campaign's events in ``seq`` order.

* ``read_committed``, no auto-commit, and the :class:`~services.streams.assignor.
  CoPartitionedAssignor`: partition *p* of every subscribed topic goes to one member, so a
  campaign's interleaved events all reach the same reader.
* Each record is judged (:func:`~services.streams.dead_letters.judge_event`); a bad one
  (malformed, oversized, unknown type, future version, wrong key or topic, written outside a
  transaction) goes to ``<consumer>.dlq`` with its cause in headers, is counted, and the
  reader goes on. A bad record never stops it.
* Good events go through one :class:`~services.streams.orderer.SeqOrderer` per partition; the
  runs that became consecutive in a poll are handed to the async ``handler`` together (one
  list of runs, each run one (campaign, stream), in seq order). Keys the orderer does not
  know yet are first seeded through ``seed`` (e.g. from the read model's stored seq), so a
  redelivery below what was applied is dropped rather than waited on.
* Offsets are committed after the handler returned (while stepping, at most every
  ``commit_interval_ms``; always when leaving or losing partitions), and only below the
  first event still held in each partition: a restart re-reads what was held, never skips
  it. A handler that raises keeps its runs: the next :meth:`step` hands them again before
  reading more.
* Lag (last stable offset minus committed offset) per group/topic/partition, held events and
  dead letters are metrics; ``on_assigned``/``on_revoked`` let a service rebuild or drop
  per-partition state.

One module (over 400 lines) because one invariant spans all of it: an offset is committed
only when every record below it was dead-lettered or handed over successfully, which ties
reading, judging, ordering, handing, committing and rebalancing to the same few fields.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import CommitFailedError, KafkaError

from schemas.envelope import Envelope
from services.streams import transactional_marks
from services.streams.assignor import CoPartitionedAssignor
from services.streams.dead_letters import DeadLetterSender, Rejected, judge_event
from services.streams.kafka_security import kafka_client_kwargs
from services.streams.metrics import StreamMetrics, stream_metrics
from services.streams.orderer import SeqOrderer, StreamKey

__all__ = ["OrderedStreamReader", "Run", "RunHandler", "Seeder", "StreamEvent"]

log = logging.getLogger("pledgeflow.streams")


@dataclass(frozen=True, slots=True)
class StreamEvent:
    """One event read from a stream topic, and where it was read."""

    envelope: Envelope
    topic: str
    partition: int
    offset: int


#: Consecutive events of one (campaign, stream), in seq order.
Run = list[StreamEvent]
#: Applies the runs of one poll; raising keeps them for the next step (nothing committed).
RunHandler = Callable[[list[Run]], Awaitable[None]]
#: The last applied seq of keys the reader meets for the first time (missing = 0).
Seeder = Callable[[list[StreamKey]], Awaitable[Mapping[StreamKey, int]]]
#: Called with the partition numbers gained or lost.
PartitionHook = Callable[[list[int]], Awaitable[None]]


class OrderedStreamReader:
    """Reads ``topics`` (event topics, e.g. ``Topics.for_stream("campaign")``) as consumer
    group ``group_id`` and hands ``handler`` the runs that became consecutive.

    ``topic_of`` is ``event_type -> topic`` (``Topics.event_topics()``), for the wrong-topic
    check. ``streams`` limits the streams handed over (others are read and skipped).
    ``from_beginning`` re-reads every assigned partition from its start (rebuilds), once per
    reader: the rewind is committed at once, so a partition assigned again (a rebalance, here
    or at another member) resumes the replay where it got to instead of starting it over.
    ``hold_limit`` bounds the events held per partition: past it, the topic-partitions whose
    events wait are paused (their predecessors, on other topics, keep coming) until half of
    them are released. ``group_instance_id`` makes the member static (a restart within
    ``session_timeout_ms`` gets its partitions back without a rebalance).
    """

    def __init__(
        self,
        *,
        bootstrap: str,
        group_id: str,
        topics: Sequence[str],
        topic_of: Mapping[str, str],
        dead_letter_topic: str,
        handler: RunHandler,
        seed: Seeder | None = None,
        on_assigned: PartitionHook | None = None,
        on_revoked: PartitionHook | None = None,
        on_dead_letter: Callable[[str], None] | None = None,
        streams: Iterable[str] | None = None,
        from_beginning: bool = False,
        max_event_bytes: int = 1024 * 1024,
        hold_limit: int = 100_000,
        max_records: int = 5000,
        max_known_keys: int = 200_000,
        commit: bool = True,
        lag_every_seconds: float = 1.0,
        metrics: StreamMetrics | None = None,
        group_instance_id: str | None = None,
        session_timeout_ms: int = 10_000,
        commit_interval_ms: int = 0,
    ) -> None:
        transactional_marks.install()
        self.bootstrap = bootstrap
        self.group_id = group_id
        self.topics = list(topics)
        self._topic_of = dict(topic_of)
        self.dead_letter_topic = dead_letter_topic
        self._handler = handler
        self._seed = seed
        self._on_assigned = on_assigned
        self._on_revoked = on_revoked
        self._on_dead_letter = on_dead_letter
        self._streams = None if streams is None else frozenset(streams)
        self.from_beginning = from_beginning
        self.max_event_bytes = max_event_bytes
        self.hold_limit = hold_limit
        self.max_records = max_records
        #: With a seeder, a partition's orderer forgets idle keys past this many (a forgotten
        #: key is seeded again when it comes back); without one it remembers every key.
        self.max_known_keys = max_known_keys
        #: False when the handler commits offsets inside its own transaction
        #: (``PartitionWriter.write(..., consumed=reader.consumed_offsets(p))``).
        self.commit = commit
        #: Least time between two offset commits of :meth:`step` (0: after every step). A
        #: handler whose redeliveries are dropped by seq (the seeder) loses nothing by a later
        #: commit, and each step it saves is one round trip to the group coordinator less
        #: before the next poll is handled. Leaving (``stop``) and revocations commit at once.
        self.commit_interval = commit_interval_ms / 1000
        self._commit_at = -1e9
        self.lag_every = lag_every_seconds
        self.group_instance_id = group_instance_id
        self.session_timeout_ms = session_timeout_ms
        self.metrics = metrics or stream_metrics()
        self.metrics.track_group(group_id)
        self._held_gauge = self.metrics.held.labels(group_id)
        self._records_counter = self.metrics.records.labels(group_id)
        self._orderers: dict[int, SeqOrderer[StreamKey, StreamEvent]] = {}
        #: Runs released but not yet handled successfully (handed again first).
        self._unhandled: list[Run] = []
        #: ``tp -> position`` (after the last record read and any transaction marker after
        #: it) of the partitions read since assignment.
        self._read: dict[TopicPartition, int] = {}
        self._committed: dict[TopicPartition, int] = {}
        self._paused: set[TopicPartition] = set()
        #: Partitions ``from_beginning`` rewound (and committed at their start) already.
        self._rewound: set[TopicPartition] = set()
        self._consumer: AIOKafkaConsumer | None = None
        self._dlq: DeadLetterSender | None = None
        self._lag_at = -1e9
        self._lag: dict[TopicPartition, int] = {}
        self._lock = asyncio.Lock()
        #: Set once the reader owns partitions and has finished a step.
        self.ready = asyncio.Event()
        #: Events handed to the handler successfully since start.
        self.handled = 0
        self.dead_lettered = 0

    # --- life cycle ----------------------------------------------------------------------

    async def start(self) -> None:
        """Create the dead-letter producer and join the group (partitions come with polls)."""
        self._dlq = DeadLetterSender(self.bootstrap, self.dead_letter_topic)
        await self._dlq.start()
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            **kafka_client_kwargs(),
            group_id=self.group_id,
            group_instance_id=self.group_instance_id,
            session_timeout_ms=self.session_timeout_ms,
            # aiokafka's default ratio (3 s of 10 s), for shorter timeouts too.
            heartbeat_interval_ms=max(1000, self.session_timeout_ms * 3 // 10),
            isolation_level="read_committed",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=4 * 1024 * 1024,
            partition_assignment_strategy=(CoPartitionedAssignor,),
        )
        self._consumer.subscribe(self.topics, listener=_Listener(self))
        await self._consumer.start()

    async def stop(self) -> None:
        """Finish the in-flight step, commit what was handled, leave the group."""
        async with self._lock:
            consumer, self._consumer = self._consumer, None
            if consumer is not None:
                with contextlib.suppress(Exception):
                    if not self._unhandled:
                        await self._commit(consumer)
                await consumer.stop()
            if self._dlq is not None:
                await self._dlq.stop()
                self._dlq = None

    def _require(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            raise RuntimeError("OrderedStreamReader.start() first")
        return self._consumer

    # --- reading -------------------------------------------------------------------------

    async def step(self, timeout_ms: int = 200) -> int:
        """One poll: judge, dead-letter, order, hand the released runs, commit.

        Returns the records read. If the handler raises, its runs are kept and handed again
        by the next step (which reads nothing new until they are handled)."""
        async with self._lock:
            consumer = self._require()
            if self._unhandled:
                await self._hand(self._unhandled)
                await self._commit_due(consumer)
                return 0
            self._throttle(consumer)
            batches = await consumer.getmany(timeout_ms=timeout_ms, max_records=self.max_records)
            count = sum(len(records) for records in batches.values())
            if count:
                self._records_counter.inc(count)
                try:
                    await self._order(batches)
                except BaseException:
                    # Nothing of this poll was ordered (dead letters and seeding come before
                    # any push): read it again next time rather than lose it.
                    for tp, records in batches.items():
                        if records and tp in consumer.assignment():
                            consumer.seek(tp, records[0].offset)
                    raise
            for tp in consumer.assignment():
                # The position passes transaction markers too: committing it leaves no lag.
                if tp in batches or tp in self._read:
                    self._read[tp] = await consumer.position(tp)
            if self._unhandled:
                await self._hand(self._unhandled)
            await self._commit_due(consumer)
            if consumer.assignment():
                self.ready.set()
            if time.monotonic() - self._lag_at >= self.lag_every:
                await self._observe_lag(consumer)
            return count

    async def run(self, stop: asyncio.Event | None = None, *, poll_ms: int = 200) -> None:
        """Step until ``stop`` is set. A failing handler (its store out of reach) pauses the
        reader with backoff instead of ending it; nothing it did not apply is committed."""
        stop = stop or asyncio.Event()
        backoff = 0.1
        while not stop.is_set():
            try:
                await self.step(timeout_ms=poll_ms)
                backoff = 0.1
            except Exception as exc:
                if self._consumer is None:
                    return  # stopped meanwhile
                log.warning("stream step failed (%r); retrying in %.1f s", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    async def run_until_caught_up(self, idle_ms: int = 1000) -> None:
        """Step until every assigned partition is read up to where it ended when this
        started (one member groups: rebuilds and tests)."""
        consumer = self._require()
        while not consumer.assignment():
            await self.step(timeout_ms=200)
        ends = await consumer.end_offsets(list(consumer.assignment()))
        while True:
            if await self.step(timeout_ms=idle_ms):
                continue
            positions = {tp: await consumer.position(tp) for tp in consumer.assignment()}
            if all(positions[tp] >= end for tp, end in ends.items() if tp in positions):
                if self.held:
                    log.warning("caught up with %d events still held back", self.held)
                # Caught up means committed: what the commit interval deferred is not left to
                # a next step that may never come (a rebuild ends here), and the lag reads 0.
                async with self._lock:
                    self._commit_at = time.monotonic()
                    await self._commit(consumer)
                    await self._observe_lag(consumer)
                return

    async def _order(
        self, batches: Mapping[TopicPartition, list[ConsumerRecord[bytes, bytes]]]
    ) -> None:
        judged: list[StreamEvent] = []
        rejects: list[tuple[ConsumerRecord[bytes, bytes], Rejected]] = []
        topic_of = self._topic_of
        max_bytes = self.max_event_bytes
        streams = self._streams
        for tp, records in batches.items():
            for record in records:
                verdict = judge_event(record, topic_of=topic_of, max_bytes=max_bytes)
                if isinstance(verdict, Rejected):
                    rejects.append((record, verdict))
                elif streams is None or verdict.stream in streams:
                    judged.append(StreamEvent(verdict, tp.topic, tp.partition, record.offset))
        if rejects:
            await self._dead_letter(rejects)
        if not judged:
            return
        if self._seed is not None:
            unknown: dict[StreamKey, None] = {}
            for event in judged:
                key = (event.envelope.campaign_id, event.envelope.stream)
                orderer = self._orderer(event.partition)
                if not orderer.knows(key):
                    unknown[key] = None
            if unknown:
                seqs = await self._seed(list(unknown))
                for event in judged:
                    key = (event.envelope.campaign_id, event.envelope.stream)
                    if key in unknown:
                        self._orderer(event.partition).seed(key, seqs.get(key, 0))
        runs: dict[StreamKey, Run] = {}
        for event in judged:
            key = (event.envelope.campaign_id, event.envelope.stream)
            _, run = self._orderer(event.partition).push(key, event.envelope.seq, event)
            if run:
                known = runs.get(key)
                if known is None:
                    runs[key] = run
                else:
                    known.extend(run)
        self._unhandled = list(runs.values())
        if self._seed is not None:
            for orderer in self._orderers.values():
                if orderer.known > self.max_known_keys:
                    orderer.forget_idle()

    async def _hand(self, runs: list[Run]) -> None:
        await self._handler(runs)
        self._unhandled = []
        self.handled += sum(len(run) for run in runs)

    def _orderer(self, partition: int) -> SeqOrderer[StreamKey, StreamEvent]:
        orderer = self._orderers.get(partition)
        if orderer is None:
            orderer = self._orderers[partition] = SeqOrderer(
                limit=self.hold_limit, on_held=lambda _n: self._held_gauge.set(self.held)
            )
        return orderer

    @property
    def held(self) -> int:
        """Events waiting for their predecessor (all owned partitions)."""
        return sum(o.held for o in self._orderers.values())

    def held_keys(self) -> list[StreamKey]:
        """(campaign, stream) keys with events waiting."""
        return [key for o in self._orderers.values() for key in o.held_keys()]

    @property
    def assigned_partitions(self) -> list[int]:
        """Partition numbers this member owns."""
        consumer = self._consumer
        return sorted({tp.partition for tp in consumer.assignment()}) if consumer else []

    def _throttle(self, consumer: AIOKafkaConsumer) -> None:
        """Pause the topic-partitions whose events wait in a full orderer (their
        predecessors, on other topics, keep flowing); resume once it drained to half."""
        wanted: set[TopicPartition] = set()
        for number, orderer in self._orderers.items():
            if orderer.held >= orderer.limit or (
                orderer.held > orderer.limit // 2
                and any(tp.partition == number for tp in self._paused)
            ):
                for _key, _seq, event in orderer.held_items():
                    wanted.add(TopicPartition(event.topic, number))
        assigned = consumer.assignment()
        wanted &= assigned
        if wanted != self._paused:
            resume = self._paused - wanted
            if resume:
                consumer.resume(*(resume & assigned))
            if wanted - self._paused:
                log.warning("%d events held back: pausing %s", self.held, sorted(wanted))
                consumer.pause(*(wanted - self._paused))
            self._paused = wanted

    # --- dead letters, commits, lag ------------------------------------------------------

    async def _dead_letter(
        self, rejects: list[tuple[ConsumerRecord[bytes, bytes], Rejected]]
    ) -> None:
        assert self._dlq is not None
        # Awaited before any commit: a committed offset never skips an undelivered letter.
        await self._dlq.send(rejects)
        for _record, rejected in rejects:
            self.metrics.dead_letters.labels(self.group_id, rejected.cause).inc()
            self.dead_lettered += 1
            if self._on_dead_letter is not None:
                self._on_dead_letter(rejected.cause)

    def consumed_offsets(self, partition: int) -> dict[TopicPartition, int]:
        """For a handler that writes transactionally (``commit=False``): the offsets of
        ``partition`` to commit inside its transaction, assuming the runs it is handling now
        commit with it (what was read, lowered to the first event still held)."""
        offsets = {tp: o for tp, o in self._read.items() if tp.partition == partition}
        orderer = self._orderers.get(partition)
        if orderer is not None:
            for _key, _seq, event in orderer.held_items():
                tp = TopicPartition(event.topic, partition)
                if event.offset < offsets.get(tp, event.offset + 1):
                    offsets[tp] = event.offset
        return offsets

    def committable(self) -> dict[TopicPartition, int]:
        """Offsets safe to commit: what was read, lowered to the first event still held (or
        not handled yet) of each partition."""
        offsets = dict(self._read)
        for number, orderer in self._orderers.items():
            for _key, _seq, event in orderer.held_items():
                tp = TopicPartition(event.topic, number)
                if event.offset < offsets.get(tp, event.offset + 1):
                    offsets[tp] = event.offset
        for run in self._unhandled:
            for event in run:
                tp = TopicPartition(event.topic, event.partition)
                if event.offset < offsets.get(tp, event.offset + 1):
                    offsets[tp] = event.offset
        return offsets

    async def _commit_due(self, consumer: AIOKafkaConsumer) -> None:
        """Commit unless the last commit was less than ``commit_interval_ms`` ago."""
        now = time.monotonic()
        if now - self._commit_at >= self.commit_interval:
            self._commit_at = now
            await self._commit(consumer)

    async def _commit(self, consumer: AIOKafkaConsumer) -> None:
        if not self.commit:
            return  # the handler commits in its transactions
        assigned = consumer.assignment()
        changed = {
            tp: offset
            for tp, offset in self.committable().items()
            if tp in assigned and self._committed.get(tp) != offset
        }
        if changed:
            try:
                await consumer.commit(changed)
            except CommitFailedError:
                # The group gave these partitions away while this member was away (a pause
                # longer than the session timeout): their new owner reads again from the last
                # commit, and the next poll rejoins, revoking (and forgetting) them here.
                log.warning("offset commit refused after a rebalance; rejoining")
                return
            self._committed.update(changed)

    async def _observe_lag(self, consumer: AIOKafkaConsumer) -> None:
        """Last stable offset minus committed offset (the position before a first commit)
        of every assigned partition fetched from, into the lag gauge and :meth:`lag`."""
        self._lag_at = time.monotonic()
        lag: dict[TopicPartition, int] = {}
        for tp in consumer.assignment():
            stable = consumer.last_stable_offset(tp)
            if stable is None:  # nothing fetched from it yet
                continue
            committed = self._committed.get(tp)
            if committed is None:
                committed = await consumer.position(tp)
            lag[tp] = max(0, stable - committed)
            self.metrics.lag.labels(self.group_id, tp.topic, str(tp.partition)).set(lag[tp])
        self._lag = lag

    def lag(self) -> dict[TopicPartition, int]:
        """The lag per partition as last observed (every ``lag_every_seconds``)."""
        return dict(self._lag)

    # --- rebalancing ---------------------------------------------------------------------

    async def _assigned(self, assigned: list[TopicPartition]) -> None:
        consumer = self._require()
        # One line per rebalance this member took part in (operators and the fault tests
        # tell a rebalance from a static member's quiet restart by it).
        log.info(
            "group %s: assigned partitions %s",
            self.group_id,
            sorted({tp.partition for tp in assigned}),
        )
        if self.from_beginning:
            await self._rewind(consumer, [tp for tp in assigned if tp not in self._rewound])
        numbers = sorted({tp.partition for tp in assigned} - set(self._orderers))
        for number in numbers:
            self._orderer(number)
        if self._on_assigned is not None and numbers:
            await self._on_assigned(numbers)

    async def _rewind(self, consumer: AIOKafkaConsumer, partitions: list[TopicPartition]) -> None:
        """Seek ``partitions`` to their start and commit that start, so the group's offset
        tells any later owner how far the replay got (an uncommitted rewind would send it
        back to the offset from before the replay). Without commits of its own (``commit``
        False) the reader rewinds at every assignment."""
        if not partitions:
            return
        await consumer.seek_to_beginning(*partitions)
        if not self.commit:
            return
        try:  # a failure here must not escape the rebalance listener (its orderers follow)
            starts = await consumer.beginning_offsets(partitions)
            await consumer.commit(starts)
        except KafkaError:
            log.warning("group %s: rewind not committed; rewinding again next time", self.group_id)
            return
        self._committed.update(starts)
        self._rewound.update(partitions)

    async def _revoked(self, revoked: list[TopicPartition]) -> None:
        consumer = self._consumer
        if consumer is not None and not self._unhandled:
            with contextlib.suppress(Exception):
                await self._commit(consumer)
        numbers = sorted({tp.partition for tp in revoked})
        for tp in revoked:
            self._read.pop(tp, None)
            self._committed.pop(tp, None)
            self._paused.discard(tp)
            self._lag.pop(tp, None)
            with contextlib.suppress(KeyError):
                self.metrics.lag.remove(self.group_id, tp.topic, str(tp.partition))
        for number in numbers:
            self._orderers.pop(number, None)
        self._unhandled = [run for run in self._unhandled if run[0].partition not in numbers]
        self._held_gauge.set(self.held)
        if self._on_revoked is not None and numbers:
            await self._on_revoked(numbers)


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, reader: OrderedStreamReader) -> None:
        self._reader = reader

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self._reader._revoked(list(revoked))

    async def on_partitions_assigned(self, assigned: Any) -> None:
        await self._reader._assigned(list(assigned))
