"""The settlement read-model projector: the settlement stream -> summaries, payment records and
command decisions in Redis (``pledgeflow settlement readmodel run|rebuild``).

A stream-runtime reader (:class:`~services.streams.OrderedStreamReader`, its own group) of the
settlement topics hands each campaign's events in ``seq`` order; each run is applied in one
Lua script that checks the stored ``seq``, so a redelivery is a no-op and the read model is
rebuildable from the log at any time (``rebuild`` wipes it and replays). Redis out of reach
pauses the projector. Redis coming back empty is noticed by the epoch marker (checked every
``epoch_check_seconds``): gone, the projector re-reads the stream from the beginning.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson
import redis.asyncio as aioredis
from prometheus_client import REGISTRY, CollectorRegistry, Counter
from redis.asyncio.client import Pipeline

from schemas.events import EVENT_TYPES
from schemas.topics import ensure_topics
from services.pledge.projector.rebuilding import ProjectorWorker, RebuildingProjector, replay
from services.settlement.adapters.redis_readmodel import (
    APPLY_SETTLEMENT,
    RedisSettlementReads,
    SettlementKeys,
)
from services.settlement.config import SettlementSettings
from services.settlement.projection import initial_summary, project
from services.streams import (
    OrderedStreamReader,
    Run,
    StreamKey,
    check_redis,
    serve,
    stream_metrics,
    topic_partitions,
)
from services.streams.metrics import registered

__all__ = [
    "SettlementProjector",
    "SettlementProjectorProcess",
    "SettlementReadModelMetrics",
    "rebuild",
    "run_projector",
    "settlement_readmodel_metrics",
]

log = logging.getLogger("pledgeflow.settlement.readmodel")

#: The event types of the settlement stream (the applied counter's label values).
SETTLEMENT_EVENT_TYPES = tuple(t for t, m in EVENT_TYPES.items() if m.stream == "settlement")


@dataclass(frozen=True)
class SettlementReadModelMetrics:
    """What the settlement read model's projector reports (beside the stream runtime's reader
    metrics for its group)."""

    applied: Counter
    rebuilds: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry) -> SettlementReadModelMetrics:
        applied = Counter(
            "pledgeflow_settlement_readmodel_events_applied",
            "Settlement events applied to the settlement read model, by event type.",
            ["event_type"],
            registry=registry,
        )
        for event_type in SETTLEMENT_EVENT_TYPES:  # exported at 0 from the start
            applied.labels(event_type)
        rebuilds = Counter(
            "pledgeflow_settlement_readmodel_rebuilds",
            "Replays of the settlement stream by a running projector because Redis lost or "
            "replaced the settlement read model (its epoch marker gone or changed).",
            registry=registry,
        )
        return cls(applied=applied, rebuilds=rebuilds)


def settlement_readmodel_metrics(
    registry: CollectorRegistry | None = None,
) -> SettlementReadModelMetrics:
    """The projector's metrics in ``registry`` (default: the process-wide one, once)."""
    return registered(SettlementReadModelMetrics.create, registry)


def _values(change: dict[str, Any]) -> bytes:
    # Numbers and booleans travel as strings (Lua keeps them exact); None deletes the field.
    return orjson.dumps(
        {
            k: (None if v is None else ("true" if v is True else "false" if v is False else str(v)))
            for k, v in change.items()
        }
    )


class SettlementProjector(RebuildingProjector[dict[str, Any]]):
    """Keeps one topic prefix's settlement read model up to date."""

    log = log

    def __init__(
        self,
        settings: SettlementSettings,
        client: aioredis.Redis,
        *,
        from_beginning: bool = False,
        registry: CollectorRegistry = REGISTRY,
        epoch_check_seconds: float = 1.0,
    ) -> None:
        self.settings = settings
        self.topics = settings.topics()
        self.keys = SettlementKeys(settings.topic_prefix)
        super().__init__(
            client,
            f"{settings.topic_prefix}{settings.settlement_readmodel_group}",
            self.keys.epoch(),
            from_beginning=from_beginning,
            epoch_check_seconds=epoch_check_seconds,
        )
        self.decision_ttl = settings.settlement_decision_ttl_seconds
        metrics = settlement_readmodel_metrics(registry)
        self._applied = metrics.applied
        self._rebuilds = metrics.rebuilds
        self._stream_metrics = stream_metrics(registry)  # once: a rebuild starts a new reader

    async def start(self) -> None:
        await self._load_scripts()
        if await self._new_epoch() and not self.from_beginning:
            log.info("settlement read model empty for %s: replaying", self.keys.ns)
            self.from_beginning = True
        await self._start_reader()

    async def _start_reader(self) -> None:
        s = self.settings
        self._reader = OrderedStreamReader(
            bootstrap=s.kafka_bootstrap,
            group_id=self.group,
            topics=self.topics.for_stream("settlement"),
            topic_of=self.topics.event_topics(),
            dead_letter_topic=self.topics.dead_letter("readmodel"),
            handler=self._apply,
            seed=self._seed,
            on_revoked=self._revoked,
            streams=("settlement",),
            from_beginning=self.from_beginning,
            max_event_bytes=s.max_event_bytes,
            hold_limit=s.hold_limit,
            metrics=self._stream_metrics,
            group_instance_id=s.settlement_readmodel_instance_id,
            session_timeout_ms=s.settlement_readmodel_session_timeout_ms,
        )
        await self._reader.start()

    def _rebuild_noticed(self, lost: bool) -> None:
        log.warning("settlement read model of %s lost or replaced: replaying", self.keys.ns)
        self._rebuilds.inc()

    async def _seed(self, keys: list[StreamKey]) -> Mapping[StreamKey, int]:
        await self._load([campaign_id for campaign_id, _ in keys])
        return {key: int(self._cache[key[0]]["seq"]) for key in keys}

    async def _load(self, campaign_ids: list[str]) -> None:
        missing = [c for c in campaign_ids if c not in self._cache]
        if not missing:
            return
        pipe = self.client.pipeline(transaction=False)
        for campaign_id in missing:
            pipe.hmget(self.keys.campaign(campaign_id), ["seq", "doc"])
        rows = await pipe.execute()
        for campaign_id, (seq, doc) in zip(missing, rows, strict=True):
            summary = initial_summary(campaign_id) if doc is None else orjson.loads(doc)
            summary["seq"] = int(seq or 0)
            self._cache[campaign_id] = summary

    def _queue(self, pipe: Pipeline, campaign_id: str, run: Run) -> Run | None:
        summary = self._cache[campaign_id]
        base = int(summary["seq"])
        todo = [e for e in run if e.envelope.seq > base]
        if not todo or todo[0].envelope.seq != base + 1:
            return None
        keys = [self.keys.campaign(campaign_id)]
        args: list[Any] = []
        for event in todo:
            changes, decision = project(summary, event.envelope)
            for pledge_id, change in changes:
                keys.append(self.keys.pledge(campaign_id, pledge_id))
                args.extend(("pay", _values(change)))
            if decision is not None:
                keys.append(self.keys.decision(event.envelope.causation_id))
                args.extend(("decide", orjson.dumps(decision)))
        head: list[Any] = [
            base,
            todo[-1].envelope.seq,
            orjson.dumps(summary),
            self.decision_ttl,
        ]
        pipe.evalsha(APPLY_SETTLEMENT.sha, len(keys), *keys, *head, *args)
        return todo

    async def _load_scripts(self) -> None:
        await APPLY_SETTLEMENT.load(self.client)

    def _applied_counter(self) -> Counter:
        return self._applied


class SettlementProjectorProcess(ProjectorWorker[SettlementProjector]):
    """The projector as a stream-runtime worker (``serve`` runs it)."""

    def __init__(self, settings: SettlementSettings) -> None:
        client = aioredis.Redis.from_url(settings.redis_url)
        super().__init__(client, SettlementProjector(settings, client), "settlement-rm")


async def run_projector(settings: SettlementSettings) -> None:
    """Create missing topics, then project until SIGTERM/SIGINT."""
    await ensure_topics(settings.kafka_bootstrap, settings.topics())
    await serve(
        SettlementProjectorProcess(settings),
        metrics_host=settings.metrics_host,
        metrics_port=settings.metrics_port,
    )


async def rebuild(settings: SettlementSettings) -> int:
    """Wipe this prefix's settlement read model and replay the settlement stream (stop the
    running projector first). Returns the number of events applied; raises
    :class:`~services.streams.SourceError`, wiping nothing, when it could not replay."""
    client = aioredis.Redis.from_url(settings.redis_url)
    try:
        # Wipe only once the replay can run: Redis answers, Kafka is in reach, the topics exist.
        await check_redis(client, settings.redis_url)
        await topic_partitions(
            settings.kafka_bootstrap,
            settings.topics().for_stream("settlement"),
            settings.topic_prefix,
        )
        await RedisSettlementReads(client, SettlementKeys(settings.topic_prefix)).wipe()
        # A one-off member: never under the running projector's static id.
        one_off = settings.model_copy(update={"settlement_readmodel_instance_id": None})
        return await replay(
            SettlementProjector(one_off, client, from_beginning=True, registry=CollectorRegistry())
        )
    finally:
        await client.aclose()
