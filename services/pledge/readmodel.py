"""The read model: campaign summaries, pledge statuses and command decisions, in Redis.

A consumer (``isolation_level="read_committed"``, its own group) of every campaign-stream
topic. Kafka orders messages only inside one partition of one topic, so a campaign's events
arrive interleaved across topics: each is held back until its predecessor (``seq - 1``) has
been applied, then the campaign's run of consecutive events is applied in one Lua script that
checks the stored ``seq`` (a redelivery is a no-op). Offsets are committed only below the
first held-back event of each partition, so a restart never skips one.

The projection (:func:`project`) is pure; the campaign summary it maintains is exactly the
``GET /v1/campaigns/{id}`` body. ``pledgeflow readmodel rebuild`` wipes the namespace and
replays the topics from the beginning.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from redis.exceptions import NoScriptError

from schemas.canonical import format_timestamp
from schemas.codec import decode
from schemas.envelope import Envelope
from schemas.errors import DecodeError
from schemas.events import (
    CampaignClosed,
    CampaignLaunched,
    GoalReached,
    PledgeCancelled,
    PledgeMade,
    PledgeRejected,
    RejectionReason,
)
from schemas.topics import Topics
from services.pledge.adapters.redis_pipeline import REDIS_UNAVAILABLE
from services.pledge.adapters.redis_readmodel import (
    APPLY_SCRIPT,
    CampaignRow,
    Keys,
    ReadModelStore,
    with_listing_ops,
)
from services.pledge.config import PledgeSettings
from services.pledge.metrics_readmodel import ReadModelMetrics, readmodel_metrics

__all__ = ["Projector", "initial_summary", "project", "readmodel_cli", "rebuild"]

log = logging.getLogger("pledgeflow.readmodel")

#: Refusals of a *cancellation*: the pledge keeps its status, the refusal is noted beside it.
_CANCEL_REFUSALS = frozenset(
    {
        RejectionReason.PLEDGE_NOT_FOUND,
        RejectionReason.PLEDGE_NOT_ACTIVE,
        RejectionReason.CANCELLATION_WINDOW_CLOSED,
    }
)


def initial_summary(campaign_id: str) -> dict[str, Any]:
    """The summary of a campaign no event of which was applied yet."""
    return {"campaign_id": campaign_id, "status": "absent", "seq": 0}


def project(
    summary: dict[str, Any], tenant: str | None, envelope: Envelope, keys: Keys
) -> tuple[str | None, list[tuple[str, str, bytes]]]:
    """Apply one event (the next seq) to ``summary`` in place.

    Returns the campaign's tenant (known from its launch) and the pledge/decision changes as
    ``(key, op, value)`` for :data:`APPLY_SCRIPT`.
    """
    payload = envelope.payload
    campaign_id = envelope.campaign_id
    seq = envelope.seq
    ops: list[tuple[str, str, bytes]] = []
    decision: dict[str, Any] = {
        "outcome": "accepted",
        "seq": seq,
        "event_type": envelope.event_type,
    }
    match payload:
        case CampaignLaunched():
            tenant = payload.tenant_id
            summary.clear()
            summary.update(
                {
                    "campaign_id": campaign_id,
                    "title": payload.title,
                    "creator_id": payload.creator_id,
                    "status": "open",
                    "outcome": None,
                    "funding_model": payload.funding_model,
                    "kind": payload.kind,
                    "goal": payload.goal.model_dump(),
                    "total": {"amount_minor": 0, "currency": payload.goal.currency},
                    "pledge_count": 0,
                    "goal_reached_at": None,
                    "deadline": format_timestamp(payload.deadline),
                    "tiers": [
                        {
                            "tier_id": tier.tier_id,
                            "title": tier.title,
                            "min_amount_minor": tier.min_amount_minor,
                            "quantity_limit": tier.quantity_limit,
                            "remaining": tier.quantity_limit,
                        }
                        for tier in payload.tiers
                    ],
                    "seq": seq,
                }
            )
        case PledgeMade():
            if "total" in summary:
                summary["total"]["amount_minor"] += payload.amount.amount_minor
                summary["pledge_count"] += 1
                _tier_taken(summary, payload.tier_id, 1)
            doc = {
                "pledge_id": payload.pledge_id,
                "campaign_id": campaign_id,
                "status": "accepted",
                "backer_id": payload.backer_id,
                "amount": payload.amount.model_dump(),
                "tier_id": payload.tier_id,
                "seq": seq,
                "reason": None,
                "detail": None,
                "tenant_id": tenant,
            }
            ops.append((keys.pledge(campaign_id, payload.pledge_id), "set:accepted", _dump(doc)))
        case PledgeRejected():
            decision.update(outcome="refused", reason=str(payload.reason), detail=payload.detail)
            # A refused launch or close carries the command id as its pledge id: no pledge.
            if payload.pledge_id != envelope.causation_id:
                key = keys.pledge(campaign_id, payload.pledge_id)
                if payload.reason in _CANCEL_REFUSALS:
                    note = {"reason": str(payload.reason), "detail": payload.detail, "seq": seq}
                    ops.append((key, "note", _dump(note)))
                else:
                    doc = {
                        "pledge_id": payload.pledge_id,
                        "campaign_id": campaign_id,
                        "status": "rejected",
                        "backer_id": payload.backer_id,
                        "amount": payload.amount.model_dump(),
                        "tier_id": None,
                        "seq": seq,
                        "reason": str(payload.reason),
                        "detail": payload.detail,
                        "tenant_id": tenant,
                    }
                    ops.append((key, "refuse", _dump(doc)))
        case PledgeCancelled():
            if "total" in summary:
                summary["total"]["amount_minor"] -= payload.amount.amount_minor
                summary["pledge_count"] -= 1
                _tier_taken(summary, payload.tier_id, -1)
            cancel = {"seq": seq, "reason": payload.reason}
            ops.append((keys.pledge(campaign_id, payload.pledge_id), "cancel", _dump(cancel)))
        case GoalReached():
            if summary.get("goal_reached_at") is None and "total" in summary:
                summary["goal_reached_at"] = format_timestamp(envelope.occurred_at)
        case CampaignClosed():
            summary["status"] = "closed"
            summary["outcome"] = payload.outcome
            decision["close_outcome"] = payload.outcome
        case _:
            pass  # another stream's event on a campaign topic: nothing to show
    summary["seq"] = seq
    ops.append((keys.decision(envelope.causation_id), "decide", _dump(decision)))
    return tenant, with_listing_ops(ops, envelope, tenant, keys)


def _tier_taken(summary: dict[str, Any], tier_id: str | None, count: int) -> None:
    if tier_id is None:
        return
    for tier in summary["tiers"]:
        if tier["tier_id"] == tier_id and tier["remaining"] is not None:
            tier["remaining"] -= count


def _dump(value: dict[str, Any]) -> bytes:
    return orjson.dumps(value)


@dataclass
class _Held:
    """A campaign's events received but not applied yet, by seq."""

    events: dict[int, tuple[Envelope, TopicPartition, int]] = field(default_factory=dict)


@dataclass
class _Cached:
    summary: dict[str, Any]
    tenant: str | None


class _SeekToBeginning(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, consumer: AIOKafkaConsumer) -> None:
        self.consumer = consumer

    async def on_partitions_revoked(self, revoked: Any) -> None:
        return None

    async def on_partitions_assigned(self, assigned: Any) -> None:
        if assigned:
            await self.consumer.seek_to_beginning(*assigned)


class Projector:
    """Keeps the read model of one topic prefix up to date."""

    def __init__(
        self,
        settings: PledgeSettings,
        client: aioredis.Redis,
        *,
        group: str | None = None,
        from_beginning: bool = False,
        metrics: ReadModelMetrics | None = None,
        lag_every_seconds: float = 1.0,
    ) -> None:
        self.settings = settings
        self.topics = Topics(prefix=settings.topic_prefix, partitions=settings.partitions)
        self.keys = Keys(settings.topic_prefix)
        self.store = ReadModelStore(client, self.keys)
        self.client = client
        self.group = group or f"{settings.topic_prefix}{settings.readmodel_group}"
        self.from_beginning = from_beginning
        self.decision_ttl = settings.readmodel_decision_ttl_seconds
        self._held: dict[str, _Held] = {}
        self._cache: dict[str, _Cached] = {}
        self._consumer: AIOKafkaConsumer | None = None
        self._dlq: AIOKafkaProducer | None = None
        self.applied = 0
        self.ready = asyncio.Event()
        self._beat = -1e9
        self.metrics = metrics or readmodel_metrics()
        self._applied_by_type: dict[str, Any] = {}
        self._lag_at = -1e9
        self.lag_every = lag_every_seconds
        #: an apply failed (Redis unreachable): the next step retries every held campaign
        self._stalled = False

    async def start(self) -> None:
        await self.store.load_scripts()
        # Redis may have restarted empty (it runs without persistence locally) while the
        # group's offsets survive in Kafka: without the marker, replay from the beginning.
        marker = f"{self.keys.ns}rm:projector"
        if await self.client.set(marker, self.group, nx=True) and not self.from_beginning:
            log.info("read model empty for %s: replaying from the beginning", self.keys.ns)
            self.from_beginning = True
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self.settings.kafka_bootstrap,
            group_id=self.group,
            isolation_level="read_committed",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=4 * 1024 * 1024,
        )
        listener = _SeekToBeginning(self._consumer) if self.from_beginning else None
        self._consumer.subscribe(self.topics.for_stream("campaign"), listener=listener)
        await self._consumer.start()
        self._dlq = AIOKafkaProducer(
            bootstrap_servers=self.settings.kafka_bootstrap, acks="all", enable_idempotence=True
        )
        await self._dlq.start()

    async def stop(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
        if self._dlq is not None:
            await self._dlq.stop()

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Project until ``stop`` is set (or forever).

        Redis out of reach (restarting, failing over) pauses the projector instead of ending
        it: offsets are committed only below what was applied, and the campaigns whose events
        wait in memory are applied again once Redis answers.
        """
        stop = stop or asyncio.Event()
        backoff = 0.1
        while not stop.is_set():
            try:
                await self.step(timeout_ms=200)
                backoff = 0.1
            except REDIS_UNAVAILABLE as exc:
                log.warning("Redis unavailable (%r); retrying in %.1f s", exc, backoff)
                self._stalled = True
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    async def run_until_caught_up(self, idle_ms: int = 1000) -> None:
        """Project until every partition is read up to where it ended when this started."""
        consumer = self._require()
        while not consumer.assignment():
            await self.step(timeout_ms=200)
        ends = await consumer.end_offsets(list(consumer.assignment()))
        while True:
            got = await self.step(timeout_ms=idle_ms)
            if got:
                continue
            positions = {tp: await consumer.position(tp) for tp in consumer.assignment()}
            if all(positions[tp] >= end for tp, end in ends.items() if tp in positions):
                if not self._held:
                    return
                log.warning("caught up with %d campaigns still held back", len(self._held))
                return

    def _require(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            raise RuntimeError("Projector.start() first")
        return self._consumer

    async def step(self, timeout_ms: int = 200) -> int:
        """One poll: hold, apply what became consecutive, commit; returns records read."""
        consumer = self._require()
        batches = await consumer.getmany(timeout_ms=timeout_ms, max_records=5000)
        last: dict[TopicPartition, int] = {}
        touched: set[str] = set()
        count = 0
        for tp, records in batches.items():
            for record in records:
                count += 1
                last[tp] = record.offset
                try:
                    envelope = decode(record.value)
                except DecodeError as exc:
                    await self._dead_letter(record.value, record.key, str(exc), tp, record.offset)
                    continue
                if envelope.stream != "campaign":
                    continue
                held = self._held.setdefault(envelope.campaign_id, _Held())
                held.events[envelope.seq] = (envelope, tp, record.offset)
                touched.add(envelope.campaign_id)
        if self._stalled:  # an earlier apply failed: retry every campaign still held
            touched.update(self._held)
        if touched:
            await self._apply(touched)
        self._stalled = False
        if last:
            await self._commit(last)
        self.metrics.held_campaigns.set(len(self._held))
        if consumer.assignment():
            self.ready.set()
            now = time.monotonic()
            if now - self._beat > 10:
                # Liveness for `make run` and probes: this projector owns partitions. Written
                # after the records are held, so that a Redis error here loses none of them.
                self._beat = now
                await self.client.set(f"{self.keys.ns}projector:alive", self.group, ex=30)
        if time.monotonic() - self._lag_at >= self.lag_every:
            await self._observe_lag(consumer)
        return count

    async def _observe_lag(self, consumer: AIOKafkaConsumer) -> None:
        """Per-topic lag: last stable offset minus position (every ``lag_every`` seconds)."""
        self._lag_at = time.monotonic()
        by_topic: dict[str, int] = {}
        for tp in consumer.assignment():
            stable = consumer.last_stable_offset(tp)
            if stable is None:  # nothing fetched from it yet
                continue
            position = await consumer.position(tp)
            by_topic[tp.topic] = by_topic.get(tp.topic, 0) + max(0, stable - position)
        for topic, lag in by_topic.items():
            self.metrics.lag.labels(topic).set(lag)

    async def _apply(self, campaign_ids: Iterable[str]) -> None:
        pending = list(campaign_ids)
        for _attempt in range(5):
            if not pending:
                return
            missing = [c for c in pending if c not in self._cache]
            if missing:
                rows = await self.store.campaigns(missing)
                for campaign_id in missing:
                    row: CampaignRow | None = rows.get(campaign_id)
                    if row is None:
                        self._cache[campaign_id] = _Cached(initial_summary(campaign_id), None)
                    else:
                        summary = row.doc or initial_summary(campaign_id)
                        summary["seq"] = row.seq
                        self._cache[campaign_id] = _Cached(summary, row.tenant_id)
            pipe = self.client.pipeline(transaction=False)
            calls: list[tuple[str, list[int]]] = []
            for campaign_id in pending:
                cached = self._cache[campaign_id]
                held = self._held[campaign_id]
                base = int(cached.summary["seq"])
                for seq in [s for s in held.events if s <= base]:
                    del held.events[seq]  # applied before (redelivery)
                seq = base + 1
                applied: list[int] = []
                ops: list[tuple[str, str, bytes]] = []
                while seq in held.events:
                    envelope = held.events[seq][0]
                    cached.tenant, new_ops = project(
                        cached.summary, cached.tenant, envelope, self.keys
                    )
                    ops.extend(new_ops)
                    applied.append(seq)
                    seq += 1
                if not applied:
                    if not held.events:
                        del self._held[campaign_id]
                    continue
                args: list[Any] = [
                    base,
                    applied[-1],
                    cached.tenant or "",
                    _dump(cached.summary),
                    self.decision_ttl,
                ]
                keys = [self.keys.campaign(campaign_id)]
                for key, op, value in ops:
                    keys.append(key)
                    args.extend((op, value))
                pipe.evalsha(APPLY_SCRIPT.sha, len(keys), *keys, *args)
                calls.append((campaign_id, applied))
            if not calls:
                return
            try:
                results = await pipe.execute(raise_on_error=True)
            except REDIS_UNAVAILABLE:
                # The summaries were advanced in memory for events Redis may not have: forget
                # them, so that the retry reloads what Redis really holds.
                for campaign_id, _ in calls:
                    self._cache.pop(campaign_id, None)
                raise
            except NoScriptError:  # Redis lost its scripts (restart, failover): load, retry
                await self.store.load_scripts()
                for campaign_id, _ in calls:
                    self._cache.pop(campaign_id, None)
                continue
            retry: list[str] = []
            for (campaign_id, applied), result in zip(calls, results, strict=True):
                held = self._held[campaign_id]
                if int(result) == -1:
                    # Another writer moved this campaign: reload it and try again.
                    self._cache.pop(campaign_id, None)
                    retry.append(campaign_id)
                    continue
                if int(result) == 0:
                    self._cache.pop(campaign_id, None)
                for seq in applied:
                    self._count_applied(held.events.pop(seq)[0].event_type)
                self.applied += len(applied)
                if not held.events:
                    del self._held[campaign_id]
                else:
                    retry.append(campaign_id)  # later seqs may now be consecutive
            pending = [c for c in retry if c in self._held]
            if len(self._cache) > 200_000:
                self._cache.clear()

    def _count_applied(self, event_type: str) -> None:
        child = self._applied_by_type.get(event_type)
        if child is None:
            child = self._applied_by_type[event_type] = self.metrics.applied.labels(event_type)
        child.inc()

    async def _commit(self, last: dict[TopicPartition, int]) -> None:
        offsets = {tp: offset + 1 for tp, offset in last.items()}
        for held in self._held.values():
            for _envelope, tp, offset in held.events.values():
                if tp in offsets and offset < offsets[tp]:
                    offsets[tp] = offset
        await self._require().commit(offsets)

    async def _dead_letter(
        self, value: bytes | None, key: bytes | None, error: str, tp: TopicPartition, offset: int
    ) -> None:
        log.error("undecodable event at %s:%d: %s", tp.topic, tp.partition, error)
        self.metrics.dead_letters.inc()
        assert self._dlq is not None
        await self._dlq.send_and_wait(
            self.topics.dead_letter("readmodel"),
            value,
            key=key,
            headers=[
                ("error", error.encode()),
                ("source", f"{tp.topic}:{tp.partition}:{offset}".encode()),
            ],
        )


async def rebuild(settings: PledgeSettings) -> int:
    """Wipe this prefix's read model and replay every campaign topic from the beginning.

    Stop the running projector first. Returns the number of events applied.
    """
    client = aioredis.Redis.from_url(settings.redis_url)
    try:
        store = ReadModelStore(client, Keys(settings.topic_prefix))
        await store.wipe()
        projector = Projector(settings, client, from_beginning=True)
        await projector.start()
        try:
            await projector.run_until_caught_up()
        finally:
            await projector.stop()
        return projector.applied
    finally:
        await client.aclose()


def readmodel_cli() -> Any:
    """``pledgeflow readmodel run|rebuild``."""
    import typer

    cli = typer.Typer(name="readmodel", no_args_is_help=True, help="Read-model projector.")

    @cli.command("run")
    def run_command() -> None:
        """Project the campaign topics into Redis until interrupted."""
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
        logging.getLogger("aiokafka").setLevel(logging.WARNING)
        asyncio.run(_run(PledgeSettings()))

    @cli.command("rebuild")
    def rebuild_command() -> None:
        """Wipe the read model (this topic prefix) and replay the topics from the beginning."""
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
        applied = asyncio.run(rebuild(PledgeSettings()))
        typer.echo(f"read model rebuilt: {applied} events applied")

    return cli


async def _run(settings: PledgeSettings) -> None:
    from schemas.topics import ensure_topics

    await ensure_topics(
        settings.kafka_bootstrap,
        Topics(prefix=settings.topic_prefix, partitions=settings.partitions),
    )
    from services.pledge.metrics import serve_metrics

    serve_metrics(settings.metrics_port)
    client = aioredis.Redis.from_url(settings.redis_url)
    projector = Projector(settings, client)
    await projector.start()
    log.info("projecting %s* into Redis (group %s)", settings.topic_prefix, projector.group)
    try:
        await projector.run()
    finally:
        await projector.stop()
        await client.aclose()
