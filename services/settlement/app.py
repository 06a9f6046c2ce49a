"""The settlement worker's composition root: the single writer of the ``settlement`` stream.

Kept as one module: assignment, replay, the loop and the transactional writes share one
per-partition bookkeeping, and the order of their steps is the worker's correctness.

Wiring only (the rules are in ``domain.py``, the call bookkeeping in ``engine.py``):

* **Assignment of partition p** (the shared runtime's co-partitioned reader): start p's
  transactional writer (fencing any older owner of p), replay p of the campaign stream and
  then p of the settlement stream into the engine (and the chain heads), then read
  ``settlement-commands`` p. The reader resumes the campaign stream from its committed offsets,
  seeded with the seq each campaign was replayed to, so nothing is applied twice.
* **Each turn**: one reader step (campaign events in seq order), the commands that arrived,
  the gateway calls the domain plans for what changed, the answers that came back, settled
  campaigns; the events of the turn are stamped on their chains and written, per partition,
  in one Kafka transaction.
* **Fenced** (``ProducerFenced``: the group gave partition p away while this worker was frozen
  or cut off, and p's new owner started its writer): the turn's events for p are dropped
  unwritten, and so are p's writer and in-memory state; events the reader still hands for p
  are ignored. The consumer rejoins at its next heartbeat and whatever it is given is rebuilt
  from the log like any assignment, so the worker goes on without a restart. Its gateway calls
  carry idempotency keys derived from the events, so a call it still makes for p is answered
  from the gateway's record, not made twice.
* **Any other failure to write** ends the worker (its supervisor restarts it): everything it
  knew is in the two logs, and the gateway calls it had made are derived again with the same
  idempotency keys, so the gateway answers them from its record instead of moving money.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import ProducerFenced
from prometheus_client import REGISTRY, CollectorRegistry

from schemas.codec import message_key
from schemas.envelope import Envelope
from schemas.events import CampaignClosed, CampaignSettled
from schemas.settlement_commands import UpdatePaymentMethod
from schemas.tenancy import pledge_key
from schemas.topics import Topics, ensure_topics
from services.pledge.adapters.payment_tokens import load_payment_tokens_to_end
from services.settlement.adapters.sandbox_gateway import SandboxGateway
from services.settlement.adapters.stripe_gateway import StripeGateway
from services.settlement.command_letters import CommandLetters
from services.settlement.config import SettlementSettings
from services.settlement.domain import GatewayCall, GatewayResult
from services.settlement.engine import Decision, EngineHooks, SettlementEngine
from services.settlement.gateway import PaymentGateway
from services.settlement.metrics import SettlementMetrics, settlement_metrics
from services.settlement.token_eraser import RESOLVED, TokenEraser
from services.streams import (
    ChainHeads,
    OrderedStreamReader,
    OutRecord,
    PartitionWriter,
    Rejected,
    Run,
    StreamKey,
    key_partition,
    replay_partition,
    stream_metrics,
)
from services.streams.kafka_security import kafka_client_kwargs

__all__ = ["SettlementWorker", "build_gateway"]

log = logging.getLogger("pledgeflow.settlement")

Clock = Callable[[], datetime]
_NO_HEADERS: list[tuple[str, bytes]] = []


def build_gateway(settings: SettlementSettings) -> PaymentGateway:
    """The gateway ``settings.gateway`` names (the sandbox on Redis by default)."""
    if settings.gateway == "stripe":
        if not settings.stripe_api_key:
            raise ValueError("stripe_api_key: required when gateway is 'stripe'")
        return StripeGateway(settings.stripe_api_key, api_base=settings.stripe_api_base or None)
    return SandboxGateway.from_url(
        settings.redis_url,
        prefix=settings.sandbox_prefix,
        latency_seconds=settings.sandbox_latency_ms / 1000,
        slow_seconds=settings.sandbox_slow_ms / 1000,
        max_connections=min(settings.settlement_max_in_flight, 256),
    )


class SettlementWorker:
    """Reads the campaign stream and ``settlement-commands``, calls the gateway, writes the
    ``settlement`` stream. A :class:`services.streams.Worker` (``serve`` runs it)."""

    def __init__(
        self,
        settings: SettlementSettings,
        gateway: PaymentGateway,
        *,
        clock: Clock | None = None,
        registry: CollectorRegistry = REGISTRY,
    ) -> None:
        self.settings = settings
        self.topics: Topics = settings.topics()
        self.group = settings.topic_prefix + settings.settlement_group
        self.gateway = gateway
        self.clock: Clock = clock or (lambda: datetime.now(UTC))
        self.metrics: SettlementMetrics = settlement_metrics(registry)
        self.engine = SettlementEngine(
            gateway,
            settings.policy(),
            max_in_flight=settings.settlement_max_in_flight,
            max_in_flight_per_campaign=settings.settlement_max_in_flight_per_campaign,
            hooks=EngineHooks(on_result=self._observe, on_unavailable=self._unavailable),
            token_of=self._token_of,
        )
        #: ``pledge key -> token`` from the payment-tokens topic (loaded, then tailed).
        self.tokens: dict[str, str] = {}
        self._token_reader: AIOKafkaConsumer | None = None
        #: Tombstones for the tokens of resolved pledges (written after each transaction).
        self.eraser = TokenEraser(
            settings.kafka_bootstrap, self.topics.payment_tokens, settings.kafka_security
        )
        self.heads = ChainHeads()
        self.writers: dict[int, PartitionWriter] = {}
        self._pending: dict[int, dict[str, list[OutRecord]]] = defaultdict(
            lambda: defaultdict(list)
        )
        self._closed_at: dict[str, datetime] = {}
        self._commands: AIOKafkaConsumer | None = None
        #: Where dead-lettered commands are marked (see :mod:`.command_letters`).
        self.commands_group = self.group + "-commands"
        self.letters = CommandLetters(
            self.topics.settlement_commands, settings.partitions, self.metrics.dead_letters
        )
        self._reader: OrderedStreamReader | None = None
        self._stop = asyncio.Event()
        #: Partition changes noted by the rebalance hooks, applied between turns (see _loop).
        self._changes: list[tuple[str, list[int]]] = []
        self._task: asyncio.Task[None] | None = None
        self._registry = registry
        #: Set once partitions are owned and a first turn has run (tests wait on it).
        self.ready = asyncio.Event()

    # --- life cycle ----------------------------------------------------------------------

    async def start(self) -> None:
        """Create missing topics, join the group, start the loop."""
        await ensure_topics(self.settings.kafka_bootstrap, self.topics)
        self._commands = AIOKafkaConsumer(
            bootstrap_servers=self.settings.kafka_bootstrap,
            **kafka_client_kwargs(self.settings.kafka_security),
            isolation_level="read_committed",
            enable_auto_commit=False,
            group_id=self.commands_group,  # never joins (assigned partitions): reads marks
        )
        await self._commands.start()
        self.tokens, loaded_to = await load_payment_tokens_to_end(
            self.settings.kafka_bootstrap, self.topics.payment_tokens, self.settings.partitions
        )
        self._token_reader = AIOKafkaConsumer(
            bootstrap_servers=self.settings.kafka_bootstrap,
            **kafka_client_kwargs(self.settings.kafka_security),
            isolation_level="read_committed",
            enable_auto_commit=False,
            group_id=None,
        )
        await self._token_reader.start()
        await self.eraser.start()
        token_tps = [
            TopicPartition(self.topics.payment_tokens, p) for p in range(self.settings.partitions)
        ]
        self._token_reader.assign(token_tps)
        for tp in token_tps:
            # From where the load stopped (not from the end now: a token appended meanwhile
            # would be skipped for good).
            self._token_reader.seek(tp, loaded_to.get(tp, 0))
        self._reader = OrderedStreamReader(
            bootstrap=self.settings.kafka_bootstrap,
            group_id=self.group,
            topics=self.topics.for_stream("campaign"),
            topic_of=self.topics.event_topics(),
            dead_letter_topic=self.topics.dead_letter("settlement"),
            handler=self._on_runs,
            seed=self._seed,
            on_assigned=self._assigned,
            on_revoked=self._revoked,
            streams=("campaign",),
            max_event_bytes=self.settings.max_event_bytes,
            hold_limit=self.settings.hold_limit,
            metrics=stream_metrics(self._registry),
            group_instance_id=self.settings.settlement_instance_id,
            session_timeout_ms=self.settings.settlement_session_timeout_ms,
        )
        await self._reader.start()
        self._task = asyncio.ensure_future(self._loop())

    async def wait(self) -> None:
        """Return (or raise) when the loop ends."""
        assert self._task is not None
        await self._task

    async def stop(self) -> None:
        """Finish the turn in flight, write what it decided, leave the group."""
        self._stop.set()
        if self._task is not None:
            with contextlib.suppress(Exception):
                await self._task
        await self.engine.aclose()
        if self._reader is not None:
            await self._reader.stop()
        if self._commands is not None:
            await self._commands.stop()
        if self._token_reader is not None:
            await self._token_reader.stop()
        await self.eraser.stop()
        for writer in self.writers.values():
            await writer.close()
        await self.gateway.aclose()

    # --- the loop ------------------------------------------------------------------------

    async def _loop(self) -> None:
        reader = self._reader
        assert reader is not None
        tick = self.settings.settlement_tick_seconds
        while not self._stop.is_set():
            await reader.step(timeout_ms=0 if self.engine.in_flight else int(tick * 500))
            # aiokafka runs the rebalance hooks from its coordinator task, at any await: they
            # only note the change, applied here between turns (never between a stamp on the
            # chain heads and its write).
            await self._apply_partition_changes()
            await self._read_tokens()
            await self._read_commands()
            now = self.clock()
            self.engine.launch(now)
            if self.engine.awaiting_tokens:
                # A pledge's token is not in self.tokens yet (the API appends it in the same
                # Kafka round as its command, and appends it again if that round lost it):
                # read the token topic to its end, then make the calls with what is there.
                await self._catch_up_tokens()
                self.engine.launch(now)
            self.metrics.in_flight.set(self.engine.in_flight)
            if self.engine.in_flight:
                await self.engine.wait(tick)
            now = self.clock()
            self.engine.drain(now, self._emit)
            self.engine.settle_ready(now, self._emit)
            await self._flush()
            await self.eraser.flush()
            self._observe_waiting(now)
            if reader.assigned_partitions:
                self.ready.set()

    async def _on_runs(self, runs: list[Run]) -> None:
        writers = self.writers
        for run in runs:
            if run[0].partition not in writers:
                # Not rebuilt yet (its rebuild replays these) or fenced (awaiting the rejoin).
                continue
            for event in run:
                self._apply(event.envelope)

    def _apply(self, envelope: Envelope) -> None:
        self.engine.apply(envelope)
        if isinstance(envelope.payload, CampaignClosed):
            self._closed_at[envelope.campaign_id] = envelope.occurred_at

    async def _seed(self, keys: list[StreamKey]) -> dict[StreamKey, int]:
        # What the assignment replay already applied: the reader drops redeliveries below it.
        # A poll can bring a partition's first records with its assignment, before the loop
        # rebuilt it: rebuild now (the reader's step runs before this turn stamps anything),
        # or the answer would be 0 and the reader would wait for seq 1 forever.
        await self._apply_partition_changes()
        out: dict[StreamKey, int] = {}
        for campaign_id, stream in keys:
            state = self.engine.states.get(campaign_id)
            if state is not None and stream == "campaign":
                out[(campaign_id, stream)] = state.campaign_seq
        return out

    async def _read_tokens(self, timeout_ms: int = 0) -> None:
        reader = self._token_reader
        if reader is None:
            return
        batches = await reader.getmany(timeout_ms=timeout_ms, max_records=10_000)
        for records in batches.values():
            for record in records:
                if record.key is None:
                    continue
                if record.value is None:
                    self.tokens.pop(record.key.decode(), None)
                else:
                    self.tokens[record.key.decode()] = record.value.decode()

    def _token_of(self, campaign_id: str, pledge_id: str) -> str | None:
        return self.tokens.get(pledge_key(campaign_id, pledge_id))

    async def _read_commands(self) -> None:
        consumer = self._commands
        if consumer is None or not consumer.assignment():
            return
        batches = await consumer.getmany(timeout_ms=0, max_records=1000)
        commands = []
        letters = self.letters
        dlq = self.topics.dead_letter("settlement")
        for tp, records in batches.items():
            for record in records:
                judged = letters.judge(record, tp.partition)
                if not isinstance(judged, Rejected):
                    commands.append(judged)
                    continue
                letter = letters.reject(record, tp.partition, judged)
                if letter is not None:  # written in this turn's transaction of the partition
                    self._pending[tp.partition][dlq].append(letter)
        if any(isinstance(c, UpdatePaymentMethod) for c in commands):
            # The API stored the new token before appending the command: read the token
            # topic up to its end now, so the retry the fix makes due uses the new token.
            await self._catch_up_tokens()
        now = self.clock()
        for command in commands:
            self.engine.command(command, now, self._emit)

    async def _catch_up_tokens(self) -> None:
        reader = self._token_reader
        if reader is None:
            return
        partitions = list(reader.assignment())
        ends = await reader.end_offsets(partitions)
        for _ in range(50):
            positions = [await reader.position(tp) for tp in partitions]
            if all(at >= ends[tp] for at, tp in zip(positions, partitions, strict=True)):
                return
            await self._read_tokens(timeout_ms=100)
        log.warning("payment tokens not read to their end; a call may use an old or no token")

    def _emit(self, decision: Decision) -> None:
        """Stamp a decision's events on the campaign's settlement chain, fold them, and queue
        them for this turn's transaction of the campaign's partition."""
        now = self.clock()
        stamped = self.heads.stamp(
            decision.events,
            campaign_id=decision.campaign_id,
            stream="settlement",
            occurred_at=now,
            causation_id=decision.causation_id,
            correlation_id=decision.correlation_id,
        )
        key = message_key(decision.campaign_id)
        partition = key_partition(key, self.settings.partitions)
        pending = self._pending[partition]
        for envelope, _body, data in stamped:
            self.engine.apply(envelope)
            pending[self.topics.for_event(envelope.event_type)].append((key, data, _NO_HEADERS))
            self.metrics.events.labels(envelope.event_type).inc()
            payload = envelope.payload
            if envelope.event_type in RESOLVED:
                self.eraser.note(decision.campaign_id, getattr(payload, "pledge_id", ""))
            if isinstance(payload, CampaignSettled):
                self._observe_settled(decision.campaign_id, payload, now)

    async def _flush(self) -> None:
        pending, self._pending = self._pending, defaultdict(lambda: defaultdict(list))
        for partition, records in pending.items():
            writer = self.writers.get(partition)
            if writer is None:
                raise RuntimeError(f"decided events for partition {partition} it does not own")
            try:
                await writer.write(
                    records,
                    consumed=self.letters.consumed(partition),
                    consumed_group=self.commands_group,
                )
            except ProducerFenced:
                await self._fenced(partition)
                continue
            self.letters.written(partition)

    async def _fenced(self, partition: int) -> None:
        """A newer owner of ``partition`` fenced its writer: stand down on it until the group
        says otherwise (the rejoin revokes and reassigns, which rebuilds from the log)."""
        log.warning(
            "partition %d: fenced by a newer writer; dropping its state until the group rejoins",
            partition,
        )
        await self._release([partition])

    # --- partitions ----------------------------------------------------------------------

    async def _assigned(self, partitions: list[int]) -> None:
        self._changes.append(("assigned", partitions))

    async def _revoked(self, partitions: list[int]) -> None:
        self._changes.append(("revoked", partitions))

    async def _apply_partition_changes(self) -> None:
        changes, self._changes = self._changes, []
        for change, partitions in changes:
            if change == "revoked":
                await self._release(partitions)
            else:
                await self._rebuild(partitions)

    async def _rebuild(self, partitions: list[int]) -> None:
        bootstrap = self.settings.kafka_bootstrap
        # Start from nothing: what the reader handed over before this rebuild is in the log
        # the replay reads (the reader then skips what the replay applied).
        await self._release(partitions)
        for partition in partitions:
            writer = PartitionWriter(bootstrap, self.group, partition)
            await writer.start()
            self.writers[partition] = writer
            campaign = await replay_partition(
                bootstrap, self.topics.for_stream("campaign"), partition, self._apply
            )
            settlement = await replay_partition(
                bootstrap, self.topics.for_stream("settlement"), partition, self._replayed
            )
            self._erase_resolved(partition)
            for gap in campaign.gaps + settlement.gaps:
                log.error("partition %d replay left a gap: %s", partition, gap)
            log.info(
                "partition %d rebuilt: %d campaign and %d settlement events",
                partition,
                campaign.applied,
                settlement.applied,
            )
        await self._assign_commands()

    def _erase_resolved(self, partition: int) -> None:
        """Note the tokens still stored of the partition's resolved pledges (a tombstone a
        crash kept from being written is written now)."""
        for campaign_id, state in self.engine.states.items():
            if key_partition(message_key(campaign_id), self.settings.partitions) != partition:
                continue
            for pledge in state.pledges.values():
                if pledge.status in ("captured", "released", "refunded") and (
                    pledge_key(campaign_id, pledge.pledge_id) in self.tokens
                ):
                    self.eraser.note(campaign_id, pledge.pledge_id)

    def _replayed(self, envelope: Envelope) -> None:
        self.heads.apply(envelope)
        self.engine.apply(envelope)
        if isinstance(envelope.payload, CampaignSettled):
            self._closed_at.pop(envelope.campaign_id, None)

    async def _release(self, partitions: list[int]) -> None:
        gone = set(partitions)
        for partition in partitions:
            writer = self.writers.pop(partition, None)
            if writer is not None:
                await writer.close()
            self._pending.pop(partition, None)
        self.letters.forget(partitions)

        def keep(campaign_id: str) -> bool:
            return key_partition(message_key(campaign_id), self.settings.partitions) not in gone

        self.engine.forget(keep)
        self.eraser.forget(keep)
        self.heads.forget(lambda key: keep(key[0]))
        self._closed_at = {c: at for c, at in self._closed_at.items() if keep(c)}
        await self._assign_commands()

    async def _assign_commands(self) -> None:
        consumer = self._commands
        if consumer is None:
            return
        wanted = [TopicPartition(self.topics.settlement_commands, p) for p in sorted(self.writers)]
        consumer.assign(wanted)
        if wanted:
            # Commands are idempotent (their ids are the causation ids on the settlement
            # stream): each owner reads them all, after the replay made the state complete.
            await consumer.seek_to_beginning(*wanted)
            await self.letters.load(consumer, sorted(self.writers))

    # --- metrics -------------------------------------------------------------------------

    def _observe(self, result: GatewayResult, seconds: float) -> None:
        kind = result.call.kind
        self.metrics.gateway_calls.labels(kind, "ok" if result.ok else "declined").inc()
        self.metrics.gateway_latency.labels(kind).observe(seconds)

    def _observe_waiting(self, now: datetime) -> None:
        oldest = min(self._closed_at.values(), default=None)
        age = 0.0 if oldest is None else max(0.0, (now - oldest).total_seconds())
        self.metrics.oldest_unsettled.set(age)

    def _unavailable(self, call: GatewayCall) -> None:
        self.metrics.gateway_unavailable.inc()

    def _observe_settled(self, campaign_id: str, settled: CampaignSettled, now: datetime) -> None:
        currency = settled.gross.currency
        for kind, money in (
            ("gross", settled.gross),
            ("commission", settled.commission),
            ("fees", settled.fees),
            ("payout", settled.payout),
        ):
            if money.amount_minor > 0:
                self.metrics.settled_minor.labels(currency, kind).inc(money.amount_minor)
        self.metrics.campaigns_settled.labels(settled.outcome).inc()
        closed_at = self._closed_at.pop(campaign_id, None)
        if closed_at is not None:
            self.metrics.close_to_settled.observe(max(0.0, (now - closed_at).total_seconds()))
        self.metrics.retries_pending.set(self.engine.retries_pending)
