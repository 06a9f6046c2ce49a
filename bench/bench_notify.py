"""Notify's webhook delivery speed and isolation, against baselines measured in this run.

* ``notify_throughput`` — signed webhook deliveries/s through the real path (Redis queue,
  dispatcher lanes, Kafka-recorded ``NotificationSent``) to ten endpoints of a local receiver
  process that answers after 20 ms, vs a naive loop awaiting each signed POST in turn (target
  ratio >= 10). CPU seconds of this process per delivery are reported beside it.
* ``notify_one_endpoint`` — the same to a single endpoint: its lane (8 slots, 20 ms each, so
  at most ~400/s) must be refilled as soon as a slot frees; vs the naive loop (target ratio
  >= 4).
* ``notify_backlog_cpu`` — CPU of this process per webhook delivered from a backlog of 3,000
  queued for one endpoint that answers at once (the launch-day case: one platform endpoint,
  notify behind), counted from the first delivery (the enqueue is not in it), with the
  deliveries/s beside it; vs the CPU of a bare signed POST through the same HTTP adapter, 8 in
  flight (target: <= 0.4 ms, and <= 4x the bare POST, i.e. baseline/value >= 0.25).
* ``notify_slow_endpoint`` — p99 delivery latency (enqueue -> recorded) of ten healthy
  endpoints, notifications arriving at a steady 100/s, while an eleventh endpoint answers after
  2 s, vs the same run without the slow one (target: within 2x, i.e. baseline/value >= 0.5).
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from uuid import uuid4

import httpx
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry

from bench.harness import Target, delete_topics, kafka_bootstrap, redis_url, write_result
from bench.stack import free_port
from schemas.events import NotificationFailed, NotificationSent
from schemas.topics import Topics, ensure_topics
from services.notify.adapters.http_webhook import HttpWebhookSender
from services.notify.adapters.kafka_recorder import NotifyStreamRecorder
from services.notify.adapters.redis_queue import RedisDeliveryQueue
from services.notify.adapters.smtp import SmtpTransport
from services.notify.config import NotifySettings
from services.notify.directory import Directory, endpoint_key, endpoint_value
from services.notify.dispatch import Dispatcher
from services.notify.domain import Notification, WebhookEndpoint
from services.notify.mail import MailRenderer
from services.notify.metrics import NotifyMetrics
from services.notify.partitioning import partition_function
from services.notify.webhooks import body_bytes, new_secret, signed_headers

ENDPOINTS = 10
DELAY_MS = 20
N_FAST = 3000
N_NAIVE = 150
N_ONE = 1000
N_LATENCY = 1100
N_BACKLOG = 3000
#: Arrivals per second of the latency runs: steady, well under the throughput measured above.
RATE = 100.0


@contextlib.contextmanager
def sink() -> AsyncIterator[str]:  # type: ignore[misc]
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "bench.webhook_sink", str(port)])
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                httpx.post(f"{base}/hook/x/0", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        yield base
    finally:
        proc.terminate()
        proc.wait()


def notification(campaign: str, endpoint: str, i: int) -> Notification:
    return Notification(
        notification_id=f"msg_{uuid4().hex}",
        cause_event_id=uuid4(),
        campaign_id=campaign,
        tenant_id="tenant-a",
        event_type="PledgeMade",
        occurred_at=datetime.now(UTC),
        channel="webhook",
        recipient_kind="platform",
        recipient=endpoint,
        template="pledge_made",
        params={"type": "PledgeMade", "data": {"i": i, "campaign_id": campaign}},
    )


class TimedRecorder:
    """The real recorder, timing each recorded notification from its enqueue."""

    def __init__(self, inner: NotifyStreamRecorder) -> None:
        self.inner = inner
        self.enqueued: dict[str, float] = {}
        self.latency: dict[str, list[float]] = {}
        self.sent = 0

    async def record(
        self, campaign_id: str, events: list[NotificationSent | NotificationFailed], cause: str
    ) -> None:
        await self.inner.record(campaign_id, events, cause)
        for e in events:
            if isinstance(e, NotificationSent):
                self.sent += 1
                took = time.perf_counter() - self.enqueued[e.notification_id]
                self.latency.setdefault(e.recipient, []).append(took)


async def run_dispatcher(
    base: str,
    prefix: str,
    n: int,
    *,
    slow: bool,
    rate: float | None = None,
    endpoints: int = ENDPOINTS,
    delay_ms: int = DELAY_MS,
    backlog: bool = False,
) -> tuple[float, float, TimedRecorder]:
    """Deliver ``n`` notifications spread over the endpoints, all at once or ``rate`` per
    second, or (``backlog``) all queued before the dispatcher starts and the clocks with it;
    returns (seconds, cpu seconds, recorder)."""
    bootstrap = kafka_bootstrap()
    partitions = 6
    topics = Topics(prefix=prefix, partitions=partitions)
    await ensure_topics(bootstrap, topics)
    settings = NotifySettings(
        kafka_bootstrap=bootstrap,
        topic_prefix=prefix,
        partitions=partitions,
        notify_allow_private_urls=True,
        notify_poll_seconds=0.005,
    )
    client = aioredis.Redis(
        connection_pool=aioredis.BlockingConnectionPool.from_url(redis_url(), max_connections=64)
    )
    partition_of = partition_function(partitions)
    queue = RedisDeliveryQueue(client, prefix=prefix, partition_of=partition_of)
    directory = Directory()
    names = [f"ep{i}" for i in range(endpoints)] + (["slow"] if slow else [])
    for name in names:
        delay = 2000 if name == "slow" else delay_ms
        ep = WebhookEndpoint(
            name, "tenant-a", f"{base}/hook/{name}/{delay}", frozenset({"PledgeMade"}), new_secret()
        )
        directory.apply_endpoint(endpoint_key("tenant-a", name), endpoint_value(ep))
    recorder = TimedRecorder(
        NotifyStreamRecorder(bootstrap, f"{prefix}notify-stream", topics, partition_of)
    )
    # this worker owns every partition (the recorder refuses records on others)
    await recorder.inner.acquire(set(range(partitions)))
    poster = HttpWebhookSender(allow_private=True)
    dispatcher = Dispatcher(
        queue=queue,
        directory=directory,
        poster=poster,
        transport=SmtpTransport("127.0.0.1", 1),
        renderer=MailRenderer(sender="n@x", message_id_domain="x"),
        recorder=recorder,
        dead_letters=None,  # type: ignore[arg-type]  # nothing fails in this bench
        settings=settings,
        metrics=NotifyMetrics.create(CollectorRegistry()),
    )
    items = [notification(f"c{i % 60}", names[i % len(names)], i) for i in range(n)]
    stop = asyncio.Event()
    queued = []
    if backlog:
        for it in items:
            recorder.enqueued[it.notification_id] = time.perf_counter()
            await queue.enqueue(it, int(time.time() * 1000))
    else:
        queued = items
    task = asyncio.create_task(dispatcher.run(stop))
    wanted = sum(1 for it in items if it.recipient != "slow")
    cpu0, t0 = time.process_time(), time.perf_counter()
    for k, it in enumerate(queued):
        if rate is not None:
            await asyncio.sleep(max(0.0, t0 + k / rate - time.perf_counter()))
        recorder.enqueued[it.notification_id] = time.perf_counter()
        await queue.enqueue(it, int(time.time() * 1000))
    while sum(len(v) for k, v in recorder.latency.items() if k != "slow") < wanted:  # noqa: ASYNC110
        await asyncio.sleep(0.01)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    stop.set()
    await task
    await recorder.inner.close()
    await poster.aclose()
    keys = [k async for k in client.scan_iter(match=f"{prefix}notify:*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()
    await delete_topics(bootstrap, prefix)
    return seconds, cpu, recorder


async def naive(base: str, n: int) -> float:
    """Deliveries/s of a loop awaiting each signed POST in turn."""
    secret = new_secret()
    async with httpx.AsyncClient() as http:
        t0 = time.perf_counter()
        for i in range(n):
            body = body_bytes({"type": "PledgeMade", "data": {"i": i}})
            headers = signed_headers(f"msg_{i}", datetime.now(UTC), body, [secret])
            answer = await http.post(
                f"{base}/hook/ep{i % ENDPOINTS}/{DELAY_MS}", content=body, headers=headers
            )
            answer.raise_for_status()
        return n / (time.perf_counter() - t0)


async def bare_post_cpu(base: str, n: int) -> float:
    """CPU seconds per signed POST through the HTTP adapter alone, 8 in flight."""
    poster = HttpWebhookSender(allow_private=True)
    secret = new_secret()
    slots = asyncio.Semaphore(8)

    async def one(i: int) -> None:
        async with slots:
            body = body_bytes({"type": "PledgeMade", "data": {"i": i}})
            headers = signed_headers(f"msg_{i}", datetime.now(UTC), body, [secret])
            outcome = await poster.post(f"{base}/hook/ep0/0", headers, body)
            assert outcome.ok, outcome

    await one(-1)  # the connection pool's first connection
    cpu0 = time.process_time()
    await asyncio.gather(*(one(i) for i in range(n)))
    cpu = time.process_time() - cpu0
    await poster.aclose()
    return cpu / n


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


async def main() -> None:
    with sink() as base:
        naive_rate = await naive(base, N_NAIVE)
        seconds, cpu, _ = await run_dispatcher(base, f"bn{uuid4().hex[:8]}.", N_FAST, slow=False)
        rate = N_FAST / seconds
        write_result(
            "notify_throughput",
            "webhook deliveries (signed, queued, recorded) per second",
            "deliveries/s",
            rate,
            baseline=("naive loop awaiting each signed POST", naive_rate),
            target=Target(ratio=10.0),
            extra={"cpu_seconds_per_delivery": cpu / N_FAST, "receiver_delay_ms": DELAY_MS},
        )
        seconds, cpu, _ = await run_dispatcher(
            base, f"bn{uuid4().hex[:8]}.", N_ONE, slow=False, endpoints=1
        )
        write_result(
            "notify_one_endpoint",
            "webhook deliveries per second to one endpoint (its lane's slots kept busy)",
            "deliveries/s",
            N_ONE / seconds,
            baseline=("naive loop awaiting each signed POST", naive_rate),
            target=Target(ratio=4.0),
            extra={
                "cpu_seconds_per_delivery": cpu / N_ONE,
                "receiver_delay_ms": DELAY_MS,
                "slots": NotifySettings.model_fields["notify_endpoint_concurrency"].default,
            },
        )
        bare = await bare_post_cpu(base, N_BACKLOG)
        seconds, cpu, _ = await run_dispatcher(
            base, f"bn{uuid4().hex[:8]}.", N_BACKLOG, slow=False, endpoints=1, delay_ms=0,
            backlog=True,
        )  # fmt: skip
        write_result(
            "notify_backlog_cpu",
            "CPU per webhook delivered from a 3,000 backlog to one endpoint answering at once",
            "ms",
            cpu / N_BACKLOG * 1000,
            baseline=("a bare signed POST through the same HTTP adapter", bare * 1000),
            target=Target(value=0.4, ratio=0.25, lower_is_better=True),
            extra={"deliveries_per_second": N_BACKLOG / seconds, "queued": N_BACKLOG},
        )
        steady = dict(slow=False, rate=RATE)
        _, _, calm = await run_dispatcher(base, f"bn{uuid4().hex[:8]}.", N_LATENCY, **steady)
        steady["slow"] = True
        _, _, noisy = await run_dispatcher(base, f"bn{uuid4().hex[:8]}.", N_LATENCY, **steady)
        calm_p99 = p99([x for k, v in calm.latency.items() for x in v])
        noisy_p99 = p99([x for k, v in noisy.latency.items() if k != "slow" for x in v])
        write_result(
            "notify_slow_endpoint",
            "p99 latency of healthy endpoints with one answering after 2 s",
            "s",
            noisy_p99,
            baseline=("same load without the slow endpoint", calm_p99),
            target=Target(ratio=0.5, lower_is_better=True),
        )


if __name__ == "__main__":
    asyncio.run(main())
