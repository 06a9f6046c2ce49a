"""Composition root of the notify worker: a faust app (agent, tasks, timer) around the service.

* **read_committed.** faust's aiokafka consumer reads *uncommitted* records unless faust's own
  transactions are on (its ``exactly_once`` mode, which has open duplicate bugs), so an
  aborted transaction's events would be notified. :class:`NotifyFaustApp` uses a transport
  whose worker consumer is ``read_committed`` (and co-partitioned with the runtime's
  assignor: partition *p* of every campaign and settlement topic goes to one worker, which
  is what ordering by ``seq`` across topics needs). Both are set on the consumer faust builds,
  before it starts; tests/integration/notify/test_notify_worker.py proves the first.
* **agent** ``notify_events``: every record of the campaign and settlement streams, in
  batches (``noack_take``: up to ``NOTIFY_APPLY_BATCH`` records, waiting at most
  ``NOTIFY_APPLY_WITHIN_SECONDS`` for more), each acked by hand once applied (see
  ``worker.py``), concurrency 1.
* **tasks**: the registration feed (endpoints and contacts) and the dispatcher (deliveries);
  **timer**: gauges.

Run: ``pledgeflow notify worker`` (or ``python -m services.notify.app worker``).
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from typing import Any

import faust
import redis.asyncio as aioredis
from aiokafka import AIOKafkaProducer
from faust.transport.drivers import aiokafka as faust_aiokafka
from prometheus_client import REGISTRY, CollectorRegistry, start_http_server

from schemas.topics import Topics, ensure_topics
from services.notify.adapters.http_webhook import HttpWebhookSender
from services.notify.adapters.kafka_dlq import KafkaDeadLetters
from services.notify.adapters.kafka_recorder import NotifyStreamRecorder
from services.notify.adapters.redis_queue import RedisDeliveryQueue
from services.notify.adapters.redis_views import RedisCampaignViews
from services.notify.adapters.registration_store import RedisEndpointView
from services.notify.adapters.smtp import SmtpTransport
from services.notify.config import NotifySettings
from services.notify.directory import Directory
from services.notify.dispatch import Dispatcher
from services.notify.mail import MailRenderer
from services.notify.metrics import NotifyMetrics
from services.notify.partitioning import partition_function
from services.notify.worker import NotifyService, RegistrationFeed
from services.streams import CoPartitionedAssignor, DeadLetter
from services.streams.kafka_security import faust_broker_credentials, kafka_client_kwargs

__all__ = ["NotifyFaustApp", "create_app", "main"]

log = logging.getLogger("pledgeflow.notify")


class _ReadCommittedConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):  # type: ignore[misc]
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        # aiokafka reads both when the consumer starts (its fetcher and its coordinator).
        consumer._isolation_level = "read_committed"
        consumer._partition_assignment_strategy = [CoPartitionedAssignor]
        return consumer


class _ReadCommittedConsumer(faust_aiokafka.Consumer):  # type: ignore[misc]
    def _new_consumer_thread(self) -> Any:
        return _ReadCommittedConsumerThread(self, loop=self.loop, beacon=self.beacon)


class _ReadCommittedTransport(faust_aiokafka.Transport):  # type: ignore[misc]
    Consumer = _ReadCommittedConsumer


class NotifyFaustApp(faust.App):  # type: ignore[misc]
    """faust.App whose consumer reads read_committed, co-partitioned (module docstring)."""

    notify: _Parts

    def _new_transport(self) -> Any:
        return _ReadCommittedTransport(self.conf.broker_consumer, self)

    async def on_stop(self) -> None:
        parts = getattr(self, "notify", None)
        if parts is not None:
            await parts.close()
        await super().on_stop()


class _Parts:
    """The worker's adapters and services, started by the app's first task."""

    def __init__(self, settings: NotifySettings, registry: CollectorRegistry) -> None:
        s = settings
        self.settings = s
        self.topics = Topics(prefix=s.topic_prefix, partitions=s.partitions)
        self.partition_of = partition_function(s.partitions)
        self.metrics = NotifyMetrics.create(registry)
        # A bounded pool that waits for a free connection rather than failing under load.
        self.redis = aioredis.Redis(
            connection_pool=aioredis.BlockingConnectionPool.from_url(
                s.redis_url, max_connections=64, timeout=30
            )
        )
        self.queue = RedisDeliveryQueue(
            self.redis, prefix=s.topic_prefix, partition_of=self.partition_of, fenced=True
        )
        self.directory = Directory()
        self.service = NotifyService(
            views=RedisCampaignViews(self.redis, self.queue, prefix=s.topic_prefix),
            directory=self.directory,
            partition_of=self.partition_of,
            topic_of=self.topics.event_topics(),
            reject=self._reject,
            on_bad_record=lambda cause: self.metrics.skipped.labels(cause).inc(),
        )
        self.feed = RegistrationFeed(
            s.kafka_bootstrap,
            self.topics.notify_endpoints,
            self.topics.notify_contacts,
            self.directory,
            RedisEndpointView(self.redis, prefix=s.topic_prefix),
        )
        self.recorder = NotifyStreamRecorder(
            s.kafka_bootstrap,
            f"{s.topic_prefix}{s.notify_group}-stream",
            self.topics,
            self.partition_of,
            owns=self.queue.owns,
            on_fenced=lambda _p: self.metrics.fenced.inc(),
        )
        self.poster = HttpWebhookSender(
            allow_private=s.notify_allow_private_urls,
            timeout=s.notify_webhook_timeout_seconds,
            connections_per_endpoint=s.notify_endpoint_concurrency,
        )
        self.producer: AIOKafkaProducer | None = None
        self.dispatcher: Dispatcher | None = None
        self.owned: set[int] = set()
        self.stop = asyncio.Event()
        self.started = asyncio.Event()

    async def _reject(self, letter: DeadLetter) -> None:
        """A record that cannot be applied goes to notify.dlq as it is (runtime format)."""
        await self.started.wait()
        assert self.producer is not None
        key, value, headers = letter
        await self.producer.send_and_wait(
            self.topics.dead_letter("notify"), value=value, key=key, headers=headers
        )

    async def start(self) -> Dispatcher:
        s = self.settings
        await ensure_topics(s.kafka_bootstrap, self.topics)  # idempotent; registry-wide
        self.producer = AIOKafkaProducer(
            bootstrap_servers=s.kafka_bootstrap,
            **kafka_client_kwargs(s.kafka_security),
            acks="all",
            enable_idempotence=True,
        )
        await self.producer.start()
        self.dispatcher = Dispatcher(
            queue=self.queue,
            directory=self.directory,
            poster=self.poster,
            transport=SmtpTransport(
                s.notify_smtp_host,
                s.notify_smtp_port,
                username=s.notify_smtp_username,
                password=s.notify_smtp_password,
                start_tls=s.notify_smtp_starttls,
            ),
            renderer=MailRenderer(
                sender=s.notify_mail_sender, message_id_domain=s.notify_message_id_domain
            ),
            recorder=self.recorder,
            dead_letters=KafkaDeadLetters(self.producer, self.topics.dead_letter("notify")),
            settings=s,
            metrics=self.metrics,
            owned=lambda: sorted(self.owned),
        )
        self.started.set()
        return self.dispatcher

    async def close(self) -> None:
        started = time.monotonic()
        self.stop.set()
        if self.dispatcher is not None:
            await self.dispatcher.stopped()  # what was sent is recorded (a graceful stop)
        drained = time.monotonic()
        await self.recorder.close()
        await self.poster.aclose()
        if self.producer is not None:
            await self.producer.stop()
        await self.redis.aclose()
        log.info(
            "notify: stopped in %.1f s (deliveries in flight drained in %.1f s)",
            time.monotonic() - started,
            drained - started,
        )


def create_app(
    settings: NotifySettings | None = None, *, registry: CollectorRegistry | None = None
) -> NotifyFaustApp:
    """The notify worker's faust app (see the module docstring)."""
    s = settings or NotifySettings()
    app = NotifyFaustApp(
        f"{s.topic_prefix}{s.notify_group}",
        broker=f"kafka://{s.kafka_bootstrap}",
        broker_credentials=faust_broker_credentials(s.kafka_security),
        store="memory://",
        datadir=s.notify_data_dir,
        web_enabled=False,
        autodiscover=False,
        topic_partitions=s.partitions,
        topic_replication_factor=1,
        consumer_auto_offset_reset="earliest",
        stream_wait_empty=False,
        broker_commit_interval=0.5,
        broker_session_timeout=s.notify_session_timeout_seconds,
        broker_heartbeat_interval=min(3.0, s.notify_session_timeout_seconds / 3),
        # static membership: a restart within the session timeout keeps the assignment
        consumer_group_instance_id=s.notify_instance_id,
    )
    parts = app.notify = _Parts(s, registry or REGISTRY)
    names = parts.topics.for_stream("campaign") + parts.topics.for_stream("settlement")
    source = app.topic(*names, key_serializer="raw", value_serializer="raw")

    @app.agent(source, concurrency=1)  # type: ignore[untyped-decorator]
    async def notify_events(stream: Any) -> None:
        await parts.started.wait()
        await parts.feed.ready.wait()
        if s.notify_apply_batch == 1:
            async for event in stream.noack().events():
                await apply([event])
        else:
            within = s.notify_apply_within_seconds
            async for events in stream.noack_take(s.notify_apply_batch, within=within):
                await apply(events)

    async def apply(events: Any) -> None:
        try:
            await parts.service.on_records([(e.message, e.ack) for e in events])
        except Exception as exc:  # a bug: stop the worker (its events are redelivered)
            log.exception("notify: applying a record failed; stopping the worker")
            await app.crash(exc)
            raise

    @app.task  # type: ignore[untyped-decorator]
    async def start_parts() -> None:
        dispatcher = await parts.start()
        feed = asyncio.create_task(parts.feed.run(parts.stop))
        try:
            # Deliveries look endpoints and contacts up: not before the directory is complete
            # (else a queued notification would look unregistered and be skipped).
            await parts.feed.ready.wait()
            await dispatcher.run(parts.stop)
        finally:
            await feed

    @app.timer(interval=5.0)  # type: ignore[untyped-decorator]
    async def gauges() -> None:
        parts.metrics.pending.set(await parts.queue.pending(sorted(parts.owned)))

    @app.on_partitions_assigned.connect  # type: ignore[untyped-decorator]
    async def on_assigned(_sender: Any, assigned: set[Any], **_: Any) -> None:
        # Fence before delivering: a new owner token (an older owner's claims are refused),
        # then the partitions' stream writers (an older owner's records are refused).
        new = {tp.partition for tp in assigned if tp.topic in names}
        log.info("notify: partitions %s assigned", sorted(new))
        parts.service.assigned(new)  # records read from now on are applied
        parts.metrics.assignments.inc()
        await parts.queue.acquire(sorted(new))
        await parts.recorder.acquire(new)
        parts.owned |= new
        log.info("notify: partitions %s fenced and delivering", sorted(new))

    @app.on_partitions_revoked.connect  # type: ignore[untyped-decorator]
    async def on_revoked(_sender: Any, revoked: set[Any], **_: Any) -> None:
        gone = {tp.partition for tp in revoked if tp.topic in names}
        log.info("notify: partitions %s revoked", sorted(gone))
        parts.owned -= gone
        parts.queue.release(gone)
        parts.service.forget(gone)
        # the sends in flight on them are recorded before their writers stop (a graceful
        # move repeats nothing); bounded, as the group waits for this
        if parts.dispatcher is not None:
            await parts.dispatcher.quiesce(gone, s.notify_webhook_timeout_seconds + 5)
        await parts.recorder.release(gone)
        log.info("notify: partitions %s released", sorted(gone))

    return app


def main(argv: list[str] | None = None) -> None:
    """Run the worker (faust's command line: ``worker -l info``)."""
    settings = NotifySettings()
    if settings.metrics_port:
        start_http_server(settings.metrics_port, addr=settings.metrics_host)
    app = create_app(settings)
    args = list(argv if argv is not None else sys.argv[1:])
    if args[:1] == ["worker"] and not any(a.startswith("--with") for a in args[1:]):
        # faust's ``worker`` defaults to --with-web, overriding web_enabled=False: its web
        # server would bind 0.0.0.0:6066, and a second worker on the host would not start.
        args.insert(1, "--without-web")
    sys.argv = [sys.argv[0], *args]
    app.main()


if __name__ == "__main__":
    main()
