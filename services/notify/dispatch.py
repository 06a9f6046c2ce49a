"""The dispatcher: takes due notifications from the queue and delivers them, lane by lane.

Each webhook endpoint is a lane with its own concurrency limit and circuit breaker (all
e-mail shares the ``email`` lane, the SMTP relay), so a slow or dead endpoint holds only its
own slots. A delivery is **claimed** (leased) in the queue before it is sent and **recorded**
(``NotificationSent`` on the notify stream, then marked sent in the queue) after; a failed
attempt is recorded (``NotificationFailed``) and retried with exponential backoff and jitter
until the last attempt, which goes to ``notify.dlq``. The guarantee this gives is stated in
docs/notify.md. A pump is one queue call that claims only what the lanes have room for
(:meth:`~services.notify.ports.DeliveryQueue.take`), so a full lane's backlog costs nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

import aiosmtplib

from schemas.events import NotificationFailed, NotificationSent
from services.notify.adapters.http_webhook import PostOutcome, WebhookPoster
from services.notify.adapters.smtp import MailTransport
from services.notify.breaker import CircuitBreaker
from services.notify.config import NotifySettings
from services.notify.domain import Notification
from services.notify.mail import MailRenderer
from services.notify.metrics import NotifyMetrics, SkipReason
from services.notify.ports import (
    DeadLetters,
    DeliveryQueue,
    Directory,
    Erased,
    NotOwner,
    Queued,
    Recorder,
    Room,
)
from services.notify.webhooks import body_bytes, signed_headers

__all__ = ["Dispatcher", "backoff_seconds"]

log = logging.getLogger("pledgeflow.notify.dispatch")

#: How long the dispatcher lets slots free up together before it pumps again.
_COALESCE_SECONDS = 0.002


@dataclass(frozen=True, slots=True)
class _Skip:
    reason: SkipReason


def backoff_seconds(attempts: int, initial: float, cap: float, rng: random.Random) -> float:
    """Delay before the next attempt after ``attempts`` failures: exponential, capped, with
    "equal jitter" (half fixed, half random) so retries of many notifications spread out."""
    base = min(cap, initial * 2 ** (attempts - 1))
    return float(base / 2 + rng.uniform(0, base / 2))


class Dispatcher:
    """Delivers what the queue says is due; run :meth:`run` as one background task."""

    def __init__(
        self,
        *,
        queue: DeliveryQueue,
        directory: Directory,
        poster: WebhookPoster,
        transport: MailTransport,
        renderer: MailRenderer,
        recorder: Recorder,
        dead_letters: DeadLetters,
        settings: NotifySettings,
        metrics: NotifyMetrics,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        owned: Callable[[], Iterable[int]] | None = None,
    ) -> None:
        self.queue = queue
        self.directory = directory
        self.poster = poster
        self.transport = transport
        self.renderer = renderer
        self.recorder = recorder
        self.dead_letters = dead_letters
        self.settings = settings
        self.metrics = metrics
        self.clock = clock
        self.rng = rng or random.Random()
        #: The partitions whose notifications this worker delivers (those it owns).
        self.owned = owned or (lambda: range(settings.partitions))
        self.breaker = CircuitBreaker(
            threshold=settings.notify_breaker_threshold,
            cooldown=settings.notify_breaker_cooldown_seconds,
        )
        self._lease_ms = int(settings.notify_lease_seconds * 1000)
        #: deliveries in flight per lane (``webhook:<id>``, ``email``)
        self._inflight: dict[str, int] = {}
        self._freed = asyncio.Event()
        #: E-mail lanes of persons with a message in flight (their next one waits).
        self._persons: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        #: deliveries in flight per partition (a revoked partition's are waited for)
        self._by_partition: dict[int, int] = {}
        self._running = False
        self._ended = asyncio.Event()

    def _capacity(self, lane: str) -> int:
        s = self.settings
        return s.notify_email_concurrency if lane == "email" else s.notify_endpoint_concurrency

    def _room(self, now: float) -> Room:
        """Each lane's free slots: its capacity less what is in flight, at most what its
        circuit breaker lets start (nothing while open, one half-open probe)."""
        lanes = {lane: self._capacity(lane) - used for lane, used in self._inflight.items() if used}
        lanes.setdefault("email", self.settings.notify_email_concurrency)
        for lane, limit in self.breaker.limits(now).items():
            lanes[lane] = min(limit, lanes.get(lane, self._capacity(lane)))
        return Room(self.settings.notify_endpoint_concurrency, lanes, list(self._persons))

    async def pump(self) -> int:
        """Start every due delivery its lane has room for; returns how many started.

        One queue call per pump: the queue is told each lane's free slots and claims only
        what can start, the oldest across the worker's partitions first (then, in a webhook
        lane, the next ones of its partition: see the queue's ``take``). A full lane's backlog is
        neither read nor moved, however long; when a slot frees, the next pump takes the
        lane's next item at once, so a fast endpoint's lane is refilled at its own pace.
        """
        now = self.clock()
        room = self._room(now)
        items = await self.queue.take(int(now * 1000), self._lease_ms, self.owned(), room)
        started = 0
        if items:
            still = set(self.owned())  # a partition revoked while taking: left to its owner
            for item in items:
                if item.partition not in still:
                    continue
                lane = item.lane.partition("|")[0]
                self.breaker.allows(lane, now)  # takes the half-open probe the room allowed
                if item.lane != lane:
                    self._persons.add(item.lane)
                self._inflight[lane] = self._inflight.get(lane, 0) + 1
                self._by_partition[item.partition] = self._by_partition.get(item.partition, 0) + 1
                task = asyncio.create_task(self._attempt(item))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
                started += 1
        self.metrics.open_circuits.set(self.breaker.open_count(now))
        return started

    async def run(self, stop: asyncio.Event) -> None:
        """Pump until ``stop`` is set, then wait for the deliveries in flight."""
        self._running = True
        stopping = asyncio.create_task(stop.wait())
        try:
            while not stop.is_set():
                self._freed.clear()
                try:
                    await self.pump()
                except Exception:  # a Redis hiccup must not end the worker: pump again
                    log.exception("notify dispatcher: pump failed")
                # Pump again when a slot frees (or after the poll interval, for new or retried
                # notifications): not in a busy loop that rescans a backlog it cannot start.
                freed = asyncio.create_task(self._freed.wait())
                await asyncio.wait(
                    {freed, stopping},
                    timeout=self.settings.notify_poll_seconds,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                freed.cancel()
                if freed.done() and not freed.cancelled():
                    # let the other deliveries finishing now free their slots too: one pump
                    # (one scan of the due set) for all of them
                    await asyncio.sleep(_COALESCE_SECONDS)
        finally:
            stopping.cancel()
            try:
                await self.drain()
            finally:
                self._ended.set()

    async def stopped(self) -> None:
        """Once ``stop`` is set: wait until :meth:`run` has ended (a pump under way may still
        start deliveries) and every delivery in flight is recorded."""
        if self._running:
            await self._ended.wait()
        await self.drain()

    async def drain(self) -> None:
        """Wait for every delivery in flight."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def quiesce(self, partitions: set[int], within: float) -> bool:
        """Wait (up to ``within`` seconds) until no delivery of ``partitions`` is in flight, so
        a revoked partition's sends are recorded before its writer stops; True if none is."""
        deadline = time.monotonic() + within
        while any(self._by_partition.get(p, 0) for p in partitions):
            if time.monotonic() >= deadline:
                return False
            self._freed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._freed.wait(), deadline - time.monotonic())
        return True

    async def _attempt(self, item: Queued) -> None:
        # The lane's slot is held until the outcome is recorded: a send not yet recorded is
        # still "in flight" (a crash then repeats it), and settling must not pile up.
        try:
            try:
                outcome = await self._send(item.notification)
            except Exception as exc:  # an adapter bug is a failed attempt, not a dead worker
                log.exception("notify: delivery of %s raised", item.notification.notification_id)
                outcome = PostOutcome(False, "internal_error", repr(exc)[:500])
            try:
                await self._settle(item, outcome)
            except NotOwner:  # the partition moved on: its new owner sends it after the lease
                log.info("notify: %s unrecorded: moved", item.notification.notification_id)
            except Exception:  # the lease runs out and the notification is tried again
                log.exception("notify: recording %s failed", item.notification.notification_id)
        finally:
            self._by_partition[item.partition] -= 1
            self._inflight[item.lane.partition("|")[0]] -= 1
            self._persons.discard(item.lane)
            self._freed.set()

    async def _send(self, n: Notification) -> PostOutcome | _Skip:
        if n.channel == "webhook":
            endpoint = self.directory.endpoint(n.tenant_id, n.recipient)
            if endpoint is None:
                return _Skip("endpoint_removed")
            body = body_bytes(n.params)
            sent_at = datetime.fromtimestamp(self.clock(), UTC)
            headers = signed_headers(n.notification_id, sent_at, body, endpoint.signing_secrets)
            return await self.poster.post(endpoint.url, headers, body)
        contact = self.directory.contact(n.tenant_id, n.recipient_kind, n.recipient)
        if isinstance(contact, Erased):
            return _Skip("contact_erased")
        if contact is None:
            return _Skip("no_contact")
        message = self.renderer.render(n, contact).message
        try:
            await self.transport.send(message)
        except aiosmtplib.SMTPRecipientsRefused as exc:
            return PostOutcome(False, "recipient_refused", repr(exc)[:500], retryable=False)
        except (aiosmtplib.SMTPException, OSError) as exc:
            return PostOutcome(False, "smtp_error", repr(exc)[:500])
        return PostOutcome(True)

    async def _settle(self, item: Queued, outcome: PostOutcome | _Skip) -> None:
        n = item.notification
        now = self.clock()
        attempt = item.attempts + 1
        common = {
            "notification_id": n.notification_id,
            "cause_event_id": n.cause_event_id,
            "channel": n.channel,
            "recipient_kind": n.recipient_kind,
            "recipient": n.recipient,
            "template": n.template,
            "attempt": attempt,
        }
        if isinstance(outcome, _Skip):
            failed = NotificationFailed(**common, reason=outcome.reason, will_retry=False)
            await self.recorder.record(n.campaign_id, [failed], n.notification_id)
            await self.queue.finish(item, "skipped")
            self.metrics.skipped.labels(outcome.reason).inc()
            self.metrics.deliveries.labels(n.channel, "skipped").inc()
            return
        if outcome.ok:
            self.breaker.success(item.lane.partition("|")[0])
            sent = NotificationSent(**common)
            await self.recorder.record(n.campaign_id, [sent], n.notification_id)
            await self.queue.finish(item, "sent")
            self.metrics.deliveries.labels(n.channel, "sent").inc()
            self.metrics.latency.labels(n.channel).observe(
                max(0.0, now - n.occurred_at.timestamp())
            )
            return
        self.breaker.failure(item.lane.partition("|")[0], now)
        s = self.settings
        first_ms = item.first_attempt_ms or int(now * 1000)
        final = (
            not outcome.retryable
            or attempt >= s.notify_max_attempts
            or now * 1000 - first_ms >= s.notify_retry_window_seconds * 1000
        )
        failed = NotificationFailed(
            **common, reason=_code(outcome.reason), detail=outcome.detail, will_retry=not final
        )
        await self.recorder.record(n.campaign_id, [failed], n.notification_id)
        if final:
            await self.dead_letters.put(n, outcome.reason, outcome.detail, attempt)
            await self.queue.finish(item, "dead")
            self.metrics.deliveries.labels(n.channel, "dead").inc()
            self.metrics.dead_letters.labels(n.channel).inc()
            return
        delay = backoff_seconds(
            attempt, s.notify_retry_initial_seconds, s.notify_retry_max_seconds, self.rng
        )
        await self.queue.retry_at(item, int((now + delay) * 1000), attempt, int(now * 1000))
        self.metrics.deliveries.labels(n.channel, "failed").inc()


def _code(reason: str) -> str:
    """A reason as a contract ``Code`` (snake_case, at most 64 characters)."""
    cleaned = "".join(c if c.isalnum() else "_" for c in reason.lower()).strip("_")
    return (cleaned if cleaned[:1].isalpha() else f"r_{cleaned}")[:64] or "unknown"
