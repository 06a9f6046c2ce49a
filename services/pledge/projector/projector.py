"""The read-model projector: campaign summaries, pledge statuses and command decisions, in Redis.

A stream-runtime reader (:class:`~services.streams.OrderedStreamReader`, its own group) of
every campaign-stream topic hands each campaign's events in ``seq`` order; each run is applied
in one Lua script that checks the stored ``seq`` (a redelivery is a no-op). The reader seeds a
campaign it meets first with the seq Redis holds, and commits offsets only below the first
held-back event of each partition, so a restart never skips one. Redis out of reach pauses
the projector (the runs are handed again) instead of ending it.

Redis coming back *empty* (restarted without its data, flushed, failed over to an empty
replica) or replaced is noticed while running, not only at start: the read model carries an
epoch marker the projector wrote, checked every ``epoch_check_seconds``. Gone or changed, the
projector drops what it held, counts the rebuild by cause, and re-reads its partitions from
the beginning, once per loss (the rewind is committed, so a later rebalance resumes the
replay; applying is idempotent by ``seq``, so rows that survived are kept). Without
this, a missing row would be reloaded as seq 0 and every later event held back forever.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from prometheus_client import Counter
from redis.asyncio.client import Pipeline

from services.pledge.adapters.redis_readmodel import (
    APPLY_SCRIPT,
    CampaignRow,
    Keys,
    ReadModelStore,
)
from services.pledge.projection import dump, initial_summary, project
from services.pledge.projector.config import ProjectorSettings
from services.pledge.projector.metrics import ReadModelMetrics, readmodel_metrics
from services.pledge.projector.rebuilding import RebuildingProjector
from services.streams import OrderedStreamReader, Run, StreamKey, StreamMetrics

__all__ = ["Projector"]

log = logging.getLogger("pledgeflow.readmodel")

#: The stream the read model shows.
_STREAM = "campaign"


@dataclass
class _Cached:
    summary: dict[str, Any]
    tenant: str | None


class Projector(RebuildingProjector[_Cached]):
    """Keeps the read model of one topic prefix up to date."""

    log = log

    def __init__(
        self,
        settings: ProjectorSettings,
        client: aioredis.Redis,
        *,
        group: str | None = None,
        from_beginning: bool = False,
        metrics: ReadModelMetrics | None = None,
        stream_metrics: StreamMetrics | None = None,
        lag_every_seconds: float = 1.0,
        epoch_check_seconds: float = 1.0,
    ) -> None:
        self.settings = settings
        self.topics = settings.topics()
        self.keys = Keys(settings.topic_prefix)
        self.store = ReadModelStore(client, self.keys)
        super().__init__(
            client,
            group or f"{settings.topic_prefix}{settings.readmodel_group}",
            self.keys.projector_epoch(),
            from_beginning=from_beginning,
            epoch_check_seconds=epoch_check_seconds,
        )
        self.decision_ttl = settings.readmodel_decision_ttl_seconds
        self._beat = -1e9
        self.metrics = metrics or readmodel_metrics()
        self._stream_metrics = stream_metrics
        self._lag_at = -1e9
        self.lag_every = lag_every_seconds

    async def start(self) -> None:
        await self._load_scripts()
        # Redis may have restarted empty while the group's offsets survive in Kafka: without
        # the epoch marker, replay from the beginning.
        if await self._new_epoch() and not self.from_beginning:
            log.info("read model empty for %s: replaying from the beginning", self.keys.ns)
            self.from_beginning = True
        await self._start_reader()

    async def _start_reader(self) -> None:
        s = self.settings
        self._reader = OrderedStreamReader(
            bootstrap=s.kafka_bootstrap,
            group_id=self.group,
            topics=self.topics.for_stream("campaign"),
            topic_of=self.topics.event_topics(),
            dead_letter_topic=self.topics.dead_letter("readmodel"),
            handler=self._apply,
            seed=self._seed,
            on_revoked=self._revoked,
            on_dead_letter=lambda _cause: self.metrics.dead_letters.inc(),
            streams=(_STREAM,),
            from_beginning=self.from_beginning,
            max_event_bytes=s.max_event_bytes,
            hold_limit=s.hold_limit,
            lag_every_seconds=self.lag_every,
            metrics=self._stream_metrics,
            group_instance_id=s.readmodel_instance_id,
            session_timeout_ms=s.readmodel_session_timeout_ms,
            commit_interval_ms=s.readmodel_commit_interval_ms,
        )
        await self._reader.start()

    def _rebuild_noticed(self, lost: bool) -> None:
        log.warning(
            "read model of %s %s: rebuilding it from the log",
            self.keys.ns,
            "lost (epoch marker gone)" if lost else "replaced (epoch marker changed)",
        )
        self.metrics.rebuilds.labels("redis_empty" if lost else "redis_replaced").inc()

    def held_campaigns(self) -> list[str]:
        """Campaigns with events waiting for their predecessor."""
        return [campaign_id for campaign_id, _stream in self._require().held_keys()]

    async def run_until_caught_up(self, idle_ms: int = 1000) -> None:
        await super().run_until_caught_up(idle_ms=idle_ms)
        self._observe()

    async def _stepped(self, reader: OrderedStreamReader) -> None:
        self._observe()
        await super()._stepped(reader)
        if reader.assigned_partitions:
            now = time.monotonic()
            if now - self._beat > 10:
                # Liveness for `make run` and probes: this projector owns partitions.
                self._beat = now
                await self.client.set(f"{self.keys.ns}projector:alive", self.group, ex=30)

    def _observe(self) -> None:
        reader = self._require()
        self.metrics.held_campaigns.set(len(set(reader.held_keys())))
        if time.monotonic() - self._lag_at >= self.lag_every:
            self._lag_at = time.monotonic()
            by_topic: dict[str, int] = {}
            for tp, lag in reader.lag().items():
                by_topic[tp.topic] = by_topic.get(tp.topic, 0) + lag
            for topic, lag in by_topic.items():
                self.metrics.lag.labels(topic).set(lag)

    async def _seed(self, keys: list[StreamKey]) -> Mapping[StreamKey, int]:
        """The seq Redis holds for campaigns the reader meets first (loaded into the cache)."""
        await self._load([campaign_id for campaign_id, _ in keys])
        return {key: int(self._cache[key[0]].summary["seq"]) for key in keys}

    async def _load(self, campaign_ids: list[str]) -> None:
        missing = [c for c in campaign_ids if c not in self._cache]
        if not missing:
            return
        rows = await self.store.campaigns(missing)
        for campaign_id in missing:
            row: CampaignRow | None = rows.get(campaign_id)
            if row is None:
                self._cache[campaign_id] = _Cached(initial_summary(campaign_id), None)
            else:
                summary = row.doc or initial_summary(campaign_id)
                summary["seq"] = row.seq
                self._cache[campaign_id] = _Cached(summary, row.tenant_id)

    def _queue(self, pipe: Pipeline, campaign_id: str, run: Run) -> Run | None:
        cached = self._cache[campaign_id]
        base = int(cached.summary["seq"])
        todo = [e for e in run if e.envelope.seq > base]  # below: applied before
        if not todo:
            return None
        if todo[0].envelope.seq != base + 1:
            log.warning(
                "campaign %s: Redis holds seq %d, the next event read is seq %d",
                campaign_id,
                base,
                todo[0].envelope.seq,
            )
            return None
        ops: list[tuple[str, str, bytes]] = []
        for event in todo:
            cached.tenant, new_ops = project(
                cached.summary, cached.tenant, event.envelope, self.keys
            )
            ops.extend(new_ops)
        args: list[Any] = [
            base,
            todo[-1].envelope.seq,
            cached.tenant or "",
            dump(cached.summary),
            self.decision_ttl,
        ]
        keys = [self.keys.campaign(campaign_id)]
        for key, op, value in ops:
            keys.append(key)
            args.extend((op, value))
        pipe.evalsha(APPLY_SCRIPT.sha, len(keys), *keys, *args)
        return todo

    async def _load_scripts(self) -> None:
        await self.store.load_scripts()

    def _applied_counter(self) -> Counter:
        return self.metrics.applied
