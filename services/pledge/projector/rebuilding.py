"""What the two read-model projectors (campaign: :mod:`services.pledge.projector.projector`;
settlement: :mod:`services.settlement.projector`) share: the epoch marker by which a running
projector notices that Redis lost or replaced its read model, the replay it then starts, and
the run loop that Redis out of reach pauses instead of ending."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Coroutine
from typing import Any, Generic, TypeVar

import redis.asyncio as aioredis
from prometheus_client import Counter
from redis.asyncio.client import Pipeline
from redis.exceptions import NoScriptError

from services.pledge.adapters.redis_pipeline import REDIS_UNAVAILABLE
from services.streams import OrderedStreamReader, Run
from services.streams.process import LoopWorker

__all__ = ["ProjectorWorker", "RebuildingProjector", "replay"]


#: A projector's cached campaign (what its ``_load`` puts in ``_cache``).
C = TypeVar("C")

#: Cached campaigns kept at most; beyond, the cache is dropped (reloaded from Redis as met).
_CACHE_LIMIT = 200_000


class RebuildingProjector(ABC, Generic[C]):
    """A projector over one :class:`OrderedStreamReader` that replays the log from the
    beginning when its read model's epoch marker is gone or changed (checked every
    ``epoch_check`` seconds, before each poll), and applies each campaign's run in one Lua
    call. Subclasses start the reader, load campaigns into ``_cache``, queue a run's call,
    and log and count a rebuild."""

    #: The subclass's logger (its module's).
    log: logging.Logger

    def __init__(
        self,
        client: aioredis.Redis,
        group: str,
        marker: str,
        *,
        from_beginning: bool,
        epoch_check_seconds: float,
    ) -> None:
        self.client = client
        self.group = group
        self.from_beginning = from_beginning
        self._reader: OrderedStreamReader | None = None
        #: The read model's epoch marker: its key and the value this projector holds.
        self._marker = marker
        self._epoch: bytes | str | None = None
        self._epoch_at = -1e9
        self.epoch_check = epoch_check_seconds
        self.rebuilds = 0
        #: Events applied; ``ready`` is set once the reader owns partitions.
        self.applied = 0
        self.ready = asyncio.Event()
        self._cache: dict[str, C] = {}
        self._applied_by_type: dict[str, Any] = {}

    @abstractmethod
    async def start(self) -> None:
        """Load what Redis needs, hold (or write) the epoch marker, start the reader."""

    @abstractmethod
    async def _start_reader(self) -> None:
        """Create ``self._reader`` (``from_beginning`` as now) and start it."""

    @abstractmethod
    async def _load_scripts(self) -> None:
        """Load the read model's Lua scripts into Redis."""

    @abstractmethod
    async def _load(self, campaign_ids: list[str]) -> None:
        """Cache the campaigns not in ``_cache`` as Redis holds them."""

    @abstractmethod
    def _queue(self, pipe: Pipeline, campaign_id: str, run: Run) -> Run | None:
        """Queue on ``pipe`` the Lua call applying what of ``run`` Redis lacks (advancing the
        cached campaign); the events queued, or None when there is nothing to apply now."""

    @abstractmethod
    def _applied_counter(self) -> Counter:
        """The events-applied counter (labelled by event type)."""

    def _forget(self) -> None:
        """Drop what was cached of the read model."""
        self._cache.clear()

    async def _apply(self, runs: list[Run]) -> None:
        """Apply each campaign's run in one Lua call (all in one pipeline); a campaign another
        writer moved is reloaded and what is left of its run applied again."""
        pending = {run[0].envelope.campaign_id: run for run in runs if run}
        for _attempt in range(5):
            if not pending:
                break
            await self._load(list(pending))
            pipe = self.client.pipeline(transaction=False)
            calls: list[tuple[str, Run]] = []
            for campaign_id, run in pending.items():
                todo = self._queue(pipe, campaign_id, run)
                if todo:
                    calls.append((campaign_id, todo))
            if not calls:
                break
            try:
                results = await pipe.execute(raise_on_error=True)
            except REDIS_UNAVAILABLE:
                # The campaigns were advanced in memory for events Redis may not have: forget
                # them, so that the retry reloads what Redis really holds.
                for campaign_id, _ in calls:
                    self._cache.pop(campaign_id, None)
                raise
            except NoScriptError:  # Redis lost its scripts (restart, failover): load, retry
                await self._load_scripts()
                for campaign_id, _ in calls:
                    self._cache.pop(campaign_id, None)
                continue
            retry: dict[str, Run] = {}
            for (campaign_id, todo), result in zip(calls, results, strict=True):
                if int(result) == -1:
                    # Another writer moved this campaign: reload it and try again.
                    self._cache.pop(campaign_id, None)
                    retry[campaign_id] = todo
                    continue
                if int(result) == 0:
                    self._cache.pop(campaign_id, None)
                for event in todo:
                    self._count_applied(event.envelope.event_type)
                self.applied += len(todo)
            pending = retry
        if len(self._cache) > _CACHE_LIMIT:
            self._cache.clear()

    def _count_applied(self, event_type: str) -> None:
        child = self._applied_by_type.get(event_type)
        if child is None:
            child = self._applied_by_type[event_type] = self._applied_counter().labels(event_type)
        child.inc()

    @abstractmethod
    def _rebuild_noticed(self, lost: bool) -> None:
        """Log and count a rebuild: the marker ``lost`` (gone) or replaced."""

    async def step(self, timeout_ms: int = 200) -> int:
        """One poll (checking the marker when due): hold, apply what became consecutive,
        commit; returns records read."""
        if time.monotonic() - self._epoch_at >= self.epoch_check:
            await self._check_epoch()
        reader = self._require()
        count = await reader.step(timeout_ms=timeout_ms)
        await self._stepped(reader)
        return count

    async def _stepped(self, reader: OrderedStreamReader) -> None:
        """After each poll: ready once the reader owns partitions."""
        if reader.assigned_partitions:
            self.ready.set()

    async def run_until_caught_up(self, idle_ms: int = 1000) -> None:
        """Project until every partition is read up to where it ended when this started."""
        await self._require().run_until_caught_up(idle_ms=idle_ms)

    async def _new_epoch(self) -> bool:
        """Write a new epoch marker unless one exists; hold whichever is there. True when
        this projector wrote it (the read model had none: it is empty or new)."""
        epoch = f"{self.group}:{uuid.uuid4().hex}".encode()
        written = bool(await self.client.set(self._marker, epoch, nx=True))
        self._epoch = epoch if written else await self.client.get(self._marker)
        self._epoch_at = time.monotonic()
        return written

    async def _check_epoch(self) -> None:
        """Rebuild from the log when the epoch marker is gone (Redis lost the read model) or
        another one (Redis replaced, or another projector began a rebuild)."""
        self._epoch_at = time.monotonic()
        current = await self.client.get(self._marker)
        if current is None and self._epoch is None:
            # Rebuilding after a loss: the marker (which tells the API the read model is
            # whole) is written only once the replay has caught up.
            reader = self._require()
            lag = reader.lag()
            if lag and not any(lag.values()) and reader.held == 0:
                await self._new_epoch()
            return
        if current == self._epoch:
            return
        self._rebuild_noticed(current is None)
        self.rebuilds += 1
        reader = self._require()
        self._reader = None
        await reader.stop()
        self._forget()
        self._epoch = current  # None after a loss: written again once the replay caught up
        self.from_beginning = True
        await self._start_reader()

    async def stop(self) -> None:
        if self._reader is not None:
            await self._reader.stop()

    def _require(self) -> OrderedStreamReader:
        if self._reader is None:
            raise RuntimeError(f"{type(self).__name__}.start() first")
        return self._reader

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Project until ``stop`` is set (or forever).

        Redis out of reach (restarting, failing over) pauses the projector instead of ending
        it: offsets are committed only below what was applied, and the runs not applied are
        handed again once Redis answers.
        """
        stop = stop or asyncio.Event()
        backoff = 0.1
        while not stop.is_set():
            try:
                await self.step(timeout_ms=200)
                backoff = 0.1
            except REDIS_UNAVAILABLE as exc:
                self.log.warning("Redis unavailable (%r); retrying in %.1f s", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    async def _revoked(self, _partitions: list[int]) -> None:
        self._forget()  # another member may move those campaigns now


async def replay(projector: RebuildingProjector[Any]) -> int:
    """Start ``projector``, project until caught up, stop it; the events it applied (the
    ``rebuild`` commands, once the read model is wiped)."""
    await projector.start()
    try:
        await projector.run_until_caught_up()
    finally:
        await projector.stop()
    return projector.applied


P = TypeVar("P", bound=RebuildingProjector[Any])


class ProjectorWorker(LoopWorker, Generic[P]):
    """A projector as a stream-runtime worker (``serve`` runs it): its loop, its drain, and
    its Redis client, closed last."""

    def __init__(self, client: aioredis.Redis, projector: P, task_name: str) -> None:
        super().__init__(task_name)
        self.client = client
        self.projector = projector

    def _started(self) -> None:
        """Called once the projector has started, before its loop (a log line)."""

    async def _open(self) -> None:
        await self.projector.start()
        self._started()

    def _loop(self, stop: asyncio.Event) -> Coroutine[Any, Any, None]:
        return self.projector.run(stop)

    async def _close(self) -> None:
        """After the step in flight (its runs applied and committed): the reader, then the
        Redis client."""
        await self.projector.stop()
        await self.client.aclose()
