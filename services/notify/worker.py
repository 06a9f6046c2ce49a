"""What the notify worker does with each record and with the registrations; no faust here.

``app.py`` feeds :meth:`NotifyService.on_records` the records of the campaign and settlement
topics (read_committed) in batches (what faust has buffered, up to ``NOTIFY_APPLY_BATCH``),
each with an ``ack`` callback. Per (campaign, stream) the runtime's
:class:`~services.streams.SeqOrderer` releases events in ``seq`` order; settlement events then
wait in a per-campaign line until :func:`~services.notify.domain.ready` (their pledge, the
launch, the close have been applied). Applying an event = :func:`decide` + :func:`evolve` +
an atomic Redis write of the view and the owed notifications, all the events a batch releases
in one script call (one round trip, in order); only then are their records acked,
so the consumer commits an offset only below every event not yet applied (faust commits
acked offsets up to the first gap). A record redelivered after a crash is either held by
the orderer or recognised as applied by the view's last seq: nothing is enqueued twice.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from schemas.envelope import Envelope
from schemas.events import CampaignLaunched
from services.notify.adapters.kafka_topics import topic_partitions
from services.notify.adapters.redis_views import PreparedApply, RedisCampaignViews
from services.notify.directory import Directory, parse_endpoint
from services.notify.domain import CampaignView, decide, evolve, ready
from services.notify.registrations import EndpointView
from services.streams import (
    DeadLetter,
    Pushed,
    Rejected,
    SeqOrderer,
    StreamKey,
    dead_letter,
    judge_event,
)
from services.streams.kafka_security import kafka_client_kwargs

__all__ = ["NotifyService", "RegistrationFeed"]

log = logging.getLogger("pledgeflow.notify.worker")

Ack = Callable[[], object]

#: redis-py's own (not subclasses of the builtin ConnectionError / TimeoutError)
REDIS_UNAVAILABLE = (RedisConnectionError, RedisTimeoutError)


@dataclass(slots=True)
class _Pending:
    envelope: Envelope
    ack: Ack


@dataclass(slots=True)
class _Staged:
    write: PreparedApply
    item: _Pending


class NotifyService:
    """Applies records to the campaigns' views and enqueues what they owe."""

    def __init__(
        self,
        *,
        views: RedisCampaignViews,
        directory: Directory,
        partition_of: Callable[[str], int],
        topic_of: dict[str, str],
        reject: Callable[[DeadLetter], Awaitable[None]],
        max_event_bytes: int = 1024 * 1024,
        on_bad_record: Callable[[str], None] = lambda _cause: None,
    ) -> None:
        self.views = views
        self.directory = directory
        self.partition_of = partition_of
        self.topic_of = topic_of
        self.reject = reject
        self.max_event_bytes = max_event_bytes
        self.on_bad_record = on_bad_record
        self.orderer: SeqOrderer[StreamKey, _Pending] = SeqOrderer()
        self._views: dict[str, CampaignView] = {}
        self._settlement: dict[str, deque[_Pending]] = {}
        self._revoked: set[int] = set()

    async def on_record(self, record: Any, ack: Ack) -> None:
        """:meth:`on_records` of one record."""
        await self.on_records([(record, ack)])

    async def on_records(self, batch: Sequence[tuple[Any, Ack]]) -> None:
        """Handle a batch of records (anything with ``topic``, ``partition``, ``offset``,
        ``key``, ``value``: faust's messages) in their order; each ``ack`` is called once its
        event is applied, or once a record that cannot be applied went to the dead-letter
        topic. The events the batch releases are written to Redis in one script call."""
        staged: list[_Staged] = []
        for record, ack in batch:
            await self._stage(record, ack, staged)
        await self._write(staged)

    async def _stage(self, record: Any, ack: Ack, staged: list[_Staged]) -> None:
        if record.partition in self._revoked:
            return  # buffered before the revocation: its new owner reads it (no ack here)
        verdict = judge_event(record, topic_of=self.topic_of, max_bytes=self.max_event_bytes)
        if isinstance(verdict, Rejected):
            log.warning("notify: record dead-lettered (%s): %s", verdict.cause, verdict.detail)
            await self.reject(dead_letter(record, verdict.cause, verdict.detail))
            self.on_bad_record(str(verdict.cause))
            ack()
            return
        envelope = verdict
        if envelope.stream not in ("campaign", "settlement"):
            ack()
            return
        campaign = envelope.campaign_id
        view = await self._view(campaign)
        if self.partition_of(campaign) in self._revoked:
            self.forget(set())  # revoked while its view loaded: drop what the load added
            return
        status, run = self.orderer.push(
            (campaign, envelope.stream), envelope.seq, _Pending(envelope, ack)
        )
        if status in (Pushed.STALE, Pushed.DUPLICATE):
            ack()
            return
        for item in run:
            if item.envelope.stream == "settlement":
                self._settlement.setdefault(campaign, deque()).append(item)
            else:
                staged.append(self._prepare(view, item))
        line = self._settlement.get(campaign)
        while line and ready(view, line[0].envelope.payload):
            staged.append(self._prepare(view, line.popleft()))
        if line is not None and not line:
            del self._settlement[campaign]

    def assigned(self, partitions: set[int]) -> None:
        """``partitions`` are this worker's (again): their records are applied."""
        self._revoked -= partitions

    def forget(self, partitions: set[int]) -> None:
        """Drop the state of campaigns in revoked ``partitions`` (another worker owns them now
        and the view is reloaded from Redis if they come back); their records still buffered
        or in a batch under way are neither applied nor acked until :meth:`assigned`."""
        self._revoked |= partitions

        def keep(campaign: str) -> bool:
            return self.partition_of(campaign) not in self._revoked

        self.orderer.forget(lambda key: keep(key[0]))
        for campaign in [c for c in self._views if not keep(c)]:
            del self._views[campaign]
        for campaign in [c for c in self._settlement if not keep(c)]:
            del self._settlement[campaign]

    @property
    def held(self) -> int:
        """Events waiting: out of seq order, or settlement events not ready yet."""
        return self.orderer.held + sum(len(q) for q in self._settlement.values())

    async def _view(self, campaign: str) -> CampaignView:
        view = self._views.get(campaign)
        if view is None:
            view, lasts = await self.views.load(campaign)
            self._views[campaign] = view
            for stream in ("campaign", "settlement"):
                self.orderer.seed((campaign, stream), lasts.get(stream, 0))
        return view

    def _prepare(self, view: CampaignView, item: _Pending) -> _Staged:
        envelope = item.envelope
        payload = envelope.payload
        tenant = payload.tenant_id if isinstance(payload, CampaignLaunched) else view.tenant_id
        endpoints = self.directory.endpoints(tenant) if tenant else []
        owed = decide(view, envelope, endpoints)
        evolve(view, envelope)
        write = self.views.prepare(
            view,
            envelope,
            owed,
            partition=self.partition_of(envelope.campaign_id),
            now_ms=int(time.time() * 1000),
        )
        return _Staged(write, item)

    async def _write(self, staged: list[_Staged]) -> None:
        delay = 0.05
        while True:  # without Redis nothing can progress: wait for it, do not skip an event
            # a partition revoked meanwhile: its events are not written nor acked (its new
            # owner reads them again; its state here was forgotten)
            staged = [s for s in staged if s.write.partition not in self._revoked]
            try:
                await self.views.apply_many([s.write for s in staged])
                break
            except (ConnectionError, OSError, TimeoutError, *REDIS_UNAVAILABLE) as exc:
                log.warning("notify: Redis unavailable applying %d events: %r", len(staged), exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        for s in staged:
            s.item.ack()


class RegistrationFeed:
    """Reads the compacted registration topics into the directory (and the API's endpoint
    view), from the beginning, then follows them. ``ready`` is set once caught up."""

    def __init__(
        self,
        bootstrap: str,
        endpoints_topic: str,
        contacts_topic: str,
        directory: Directory,
        endpoint_view: EndpointView | None = None,
    ) -> None:
        self.bootstrap = bootstrap
        self.endpoints_topic = endpoints_topic
        self.contacts_topic = contacts_topic
        self.directory = directory
        self.endpoint_view = endpoint_view
        self.ready = asyncio.Event()

    async def run(self, stop: asyncio.Event) -> None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            **kafka_client_kwargs(),
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        await consumer.start()
        try:
            tps = []
            for topic in (self.endpoints_topic, self.contacts_topic):
                for p in await topic_partitions(self.bootstrap, topic):
                    tps.append(TopicPartition(topic, p))
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            ends = await consumer.end_offsets(tps)
            while not stop.is_set():
                batches = await consumer.getmany(timeout_ms=200)
                for tp, records in batches.items():
                    for record in records:
                        await self._apply(tp.topic, record.key, record.value)
                if not self.ready.is_set():
                    positions = [await consumer.position(tp) for tp in tps]
                    if all(pos >= ends[tp] for pos, tp in zip(positions, tps, strict=True)):
                        self.ready.set()
        finally:
            await consumer.stop()

    async def _apply(self, topic: str, key: bytes | None, value: bytes | None) -> None:
        if key is None:
            return
        text = key.decode()
        try:
            if topic == self.endpoints_topic:
                self.directory.apply_endpoint(text, value)
                if self.endpoint_view is not None:
                    tenant, _, endpoint_id = text.partition("/")
                    if value is None:
                        await self.endpoint_view.remove(tenant, endpoint_id)
                    else:
                        await self.endpoint_view.save(parse_endpoint(value))
            else:
                self.directory.apply_contact(text, value)
        except ValueError as exc:
            log.warning("notify: registration record %r skipped: %s", text, exc)
