"""Webhook delivery on real Redis and Kafka to a local receiver that verifies signatures:
retries until the 4th attempt succeeds, dead letters, redrive, no SSRF, no redirects."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import redis.asyncio as aioredis
from aiokafka import AIOKafkaProducer
from prometheus_client import CollectorRegistry

from schemas.events import NotificationFailed, NotificationSent
from schemas.topics import Topics, ensure_topics
from services.notify.adapters.http_webhook import HttpWebhookSender
from services.notify.adapters.kafka_dlq import KafkaDeadLetters
from services.notify.adapters.redis_queue import RedisDeliveryQueue
from services.notify.adapters.smtp import SmtpTransport
from services.notify.config import NotifySettings
from services.notify.directory import Directory, endpoint_key, endpoint_value
from services.notify.dispatch import Dispatcher
from services.notify.domain import CampaignView, Notification, WebhookEndpoint, decide, evolve
from services.notify.mail import MailRenderer
from services.notify.metrics import NotifyMetrics
from services.notify.redrive import redrive
from services.notify.webhooks import new_secret, signed_headers
from tests.support.api import eventually
from tests.support.invariants import wipe_namespace
from tests.support.notify_fakes import MemoryRecorder
from tests.support.webhook_receiver import Receiver, running_receiver
from tests.unit.notify.events import Stream, goal, launch, pledge

pytestmark = pytest.mark.integration


@dataclass
class Rig:
    settings: NotifySettings
    queue: RedisDeliveryQueue
    directory: Directory
    dispatcher: Dispatcher
    recorder: MemoryRecorder
    receiver: Receiver

    def register(self, name: str, tenant: str = "tenant-a") -> WebhookEndpoint:
        secret = new_secret()
        self.receiver.secrets[name] = secret
        ep = WebhookEndpoint(
            name, tenant, self.receiver.url(name), frozenset({"GoalReached"}), secret
        )
        self.directory.apply_endpoint(endpoint_key(tenant, name), endpoint_value(ep))
        return ep

    async def goal_reached(self) -> list[Notification]:
        s = Stream(f"c-{self.settings.topic_prefix}")
        envs = [s(launch()), s(pledge("p1", "b1", 10_000)), s(goal(10_000, 1))]
        view = CampaignView(s.campaign_id)
        for env in envs[:-1]:
            evolve(view, env)
        owed = [
            n
            for n in decide(view, envs[-1], self.directory.endpoints("tenant-a"))
            if n.channel == "webhook"
        ]
        for n in owed:
            assert await self.queue.enqueue(n, 0)
            assert not await self.queue.enqueue(n, 0)  # a redelivered event adds nothing
        return owed


@asynccontextmanager
async def rig(
    bootstrap: str, redis_server: str, unique: str, **overrides: object
) -> AsyncIterator[Rig]:
    settings = NotifySettings(
        kafka_bootstrap=bootstrap,
        redis_url=redis_server,
        topic_prefix=unique,
        partitions=1,
        notify_allow_private_urls=True,
        notify_retry_initial_seconds=0.02,
        notify_retry_max_seconds=0.1,
        notify_breaker_threshold=50,
        **overrides,  # type: ignore[arg-type]
    )
    topics = Topics(prefix=unique, partitions=1)
    await ensure_topics(bootstrap, [topics.get(topics.dead_letter("notify"))])
    client = aioredis.Redis.from_url(redis_server)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    poster = HttpWebhookSender(allow_private=True, timeout=5)
    queue = RedisDeliveryQueue(client, prefix=unique)
    directory = Directory()
    recorder = MemoryRecorder()
    async with running_receiver() as receiver:
        dispatcher = Dispatcher(
            queue=queue,
            directory=directory,
            poster=poster,
            transport=SmtpTransport("127.0.0.1", 1),
            renderer=MailRenderer(sender="n@x.test", message_id_domain="x.test"),
            recorder=recorder,
            dead_letters=KafkaDeadLetters(producer, topics.dead_letter("notify")),
            settings=settings,
            metrics=NotifyMetrics.create(CollectorRegistry()),
        )
        stop = asyncio.Event()
        task = asyncio.create_task(dispatcher.run(stop))
        try:
            yield Rig(settings, queue, directory, dispatcher, recorder, receiver)
        finally:
            stop.set()
            await task
            await poster.aclose()
            await producer.stop()
            await wipe_namespace(redis_server, f"{unique}notify:")
            await client.aclose()


async def test_one_signed_goal_reached_per_endpoint_of_the_tenant(
    bootstrap: str, redis_server: str, unique: str
) -> None:
    async with rig(bootstrap, redis_server, unique) as r:
        r.register("a1")
        r.register("a2")
        r.register("b1", tenant="tenant-b")
        owed = await r.goal_reached()
        await eventually(lambda: _done(r, len(owed)))
        await asyncio.sleep(0.3)  # nothing more arrives
        assert sorted(x.name for x in r.receiver.received) == ["a1", "a2"]
        assert all(
            x.verified and x.body and x.body["type"] == "GoalReached" for x in r.receiver.received
        )
        assert {x.webhook_id for x in r.receiver.received} == {n.notification_id for n in owed}
        assert [await r.queue.state(n.notification_id) for n in owed] == ["sent", "sent"]


async def test_a_receiver_failing_three_times_gets_it_on_the_fourth_attempt(
    bootstrap: str, redis_server: str, unique: str
) -> None:
    async with rig(bootstrap, redis_server, unique) as r:
        r.register("flaky")
        r.receiver.fail_first["flaky"] = 3
        [n] = await r.goal_reached()
        await eventually(lambda: _done(r, 1))
        seen = [x for x in r.receiver.received if x.name == "flaky"]
        assert [x.status for x in seen] == [500, 500, 500, 200]
        assert {x.webhook_id for x in seen} == {n.notification_id}  # receivers can de-duplicate
        failed = [e for e in r.recorder.events if isinstance(e, NotificationFailed)]
        assert [(e.attempt, e.reason, e.will_retry) for e in failed] == [
            (1, "http_500", True),
            (2, "http_500", True),
            (3, "http_500", True),
        ]
        [sent] = [e for e in r.recorder.events if isinstance(e, NotificationSent)]
        assert sent.attempt == 4 and sent.notification_id == n.notification_id


async def test_a_dead_endpoint_lands_in_the_dlq_and_redrive_delivers_once_it_recovers(
    bootstrap: str, redis_server: str, unique: str
) -> None:
    async with rig(bootstrap, redis_server, unique, notify_max_attempts=3) as r:
        r.register("dead")
        r.register("fine")
        r.receiver.down.add("dead")
        owed = await r.goal_reached()
        dead_id = next(n.notification_id for n in owed if n.recipient == "dead")

        async def dead_lettered() -> bool:
            return await r.queue.state(dead_id) == "dead"

        await eventually(dead_lettered)
        assert len(r.receiver.delivered("fine")) == 1
        assert [x.status for x in r.receiver.received if x.name == "dead"] == [503, 503, 503]
        last = [e for e in r.recorder.events if isinstance(e, NotificationFailed)][-1]
        assert (last.attempt, last.will_retry) == (3, False)

        r.receiver.down.discard("dead")
        report = await redrive(r.settings)
        assert (report.requeued, report.unreadable) == (1, 0)
        await eventually(lambda: _delivered(r.receiver, "dead"))
        assert r.receiver.delivered("dead")[0].webhook_id == dead_id
        assert (await redrive(r.settings)).requeued == 0  # a dead letter is redriven once


async def test_redirects_are_not_followed_and_loopback_is_refused_without_the_setting(
    bootstrap: str, redis_server: str, unique: str
) -> None:
    async with rig(bootstrap, redis_server, unique, notify_max_attempts=1) as r:
        r.register("moved")
        r.receiver.redirect.add("moved")
        r.dispatcher.poster = HttpWebhookSender(allow_private=False)
        r.register("internal")
        owed = await r.goal_reached()
        await eventually(lambda: _final(r, owed))
        reasons = {
            e.recipient: e.reason for e in r.recorder.events if isinstance(e, NotificationFailed)
        }
        assert reasons == {"moved": "unsafe_url", "internal": "unsafe_url"}
        assert r.receiver.received == []  # the guard stopped both before any request
        r.dispatcher.poster = HttpWebhookSender(allow_private=True)
        for n in owed:
            await r.queue.redrive(n, 0)
        await eventually(lambda: _final(r, owed))
        reasons = {
            e.recipient: e.reason
            for e in r.recorder.events[2:]
            if isinstance(e, NotificationFailed)
        }
        assert reasons["moved"] == "redirect_refused"
        assert [x.status for x in r.receiver.received if x.name == "moved"] == [302]


async def _done(r: Rig, count: int) -> bool:
    return sum(isinstance(e, NotificationSent) for e in r.recorder.events) >= count


async def _delivered(receiver: Receiver, name: str) -> bool:
    return bool(receiver.delivered(name))


async def _final(r: Rig, owed: list[Notification]) -> bool:
    states = [await r.queue.state(n.notification_id) for n in owed]
    return all(s in ("sent", "dead", "skipped") for s in states)


async def test_the_receiver_rejects_a_modified_body_and_an_old_timestamp() -> None:
    body = b'{"type":"GoalReached","data":{"seq":5}}'
    async with running_receiver() as receiver, httpx.AsyncClient() as http:
        secret = receiver.secrets["ep"] = new_secret()
        now = datetime.now(UTC)
        good = signed_headers("msg_x", now, body, [secret])
        old = signed_headers("msg_x", now - timedelta(minutes=6), body, [secret])
        answers = [
            (await http.post(receiver.url("ep"), content=body, headers=good)).status_code,
            (await http.post(receiver.url("ep"), content=body + b" ", headers=good)).status_code,
            (await http.post(receiver.url("ep"), content=body, headers=old)).status_code,
        ]
        assert answers == [200, 400, 400]
        assert [x.verified for x in receiver.received] == [True, False, False]


def test_redrive_cli_names_a_missing_dead_letter_topic_in_one_line(
    bootstrap: str, redis_server: str, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from services.notify.cli import app as notify_cli

    monkeypatch.setenv("PLEDGEFLOW_KAFKA_BOOTSTRAP", bootstrap)
    monkeypatch.setenv("PLEDGEFLOW_REDIS_URL", redis_server)  # the suite's (its port may vary)
    monkeypatch.setenv("PLEDGEFLOW_TOPIC_PREFIX", f"{unique}-absent.")
    result = CliRunner().invoke(notify_cli, ["redrive"])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        f"notify redrive: topic '{unique}-absent.notify.dlq' does not exist"
    ]


@pytest.mark.parametrize("down", ["kafka", "redis"])
async def test_redrive_cli_names_an_unreachable_broker_or_redis_in_one_line(
    bootstrap: str, redis_server: str, unique: str, down: str
) -> None:
    import asyncio
    import os
    import sys

    from tests.support.api import free_port

    address = f"127.0.0.1:{free_port()}"
    env = {
        **os.environ,
        "PLEDGEFLOW_KAFKA_BOOTSTRAP": address if down == "kafka" else bootstrap,
        "PLEDGEFLOW_REDIS_URL": f"redis://{address}/0" if down == "redis" else redis_server,
        "PLEDGEFLOW_TOPIC_PREFIX": f"{unique}-absent.",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.cli", "notify", "redrive",
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await asyncio.wait_for(process.communicate(), timeout=40)
    lines = err.decode().strip().splitlines()
    assert process.returncode == 2, lines
    setting = "PLEDGEFLOW_KAFKA_BOOTSTRAP" if down == "kafka" else "PLEDGEFLOW_REDIS_URL"
    assert len(lines) == 1 and setting in lines[0] and address in lines[0], lines
