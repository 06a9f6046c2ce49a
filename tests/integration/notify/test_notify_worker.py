"""The notify worker (faust, as a subprocess) on real Kafka + Redis, with a verifying webhook
receiver and mailpit: a campaign reaching its goal notifies each endpoint of its tenant once
and each backer once in their language; an aborted transaction notifies nobody; a flaky
receiver gets it on the 4th attempt; a dead one goes to notify.dlq and redrive delivers it."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from schemas.events import NotificationFailed, NotificationSent
from schemas.topics import Topics, ensure_topics
from services.audit.sources import audit_kafka
from services.notify.config import NotifySettings
from services.notify.redrive import redrive
from tests.support.api import eventually
from tests.support.invariants import wipe_namespace
from tests.support.mailpit import Mailpit
from tests.support.notify_worker import (
    CampaignLog,
    notify_stream,
    register,
    running_worker,
    worker_env,
)
from tests.support.webhook_receiver import running_receiver
from tests.unit.notify.events import capture_failed, goal, launch, pledge

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


async def test_goal_reached_end_to_end_through_the_worker(
    bootstrap: str, redis_server: str, unique: str, mailpit: Mailpit, tmp_path: Path
) -> None:
    topics = Topics(prefix=unique, partitions=2)
    await ensure_topics(bootstrap, topics)
    mail = {who: f"{who}-{unique}@example.org" for who in ("b1", "b2", "b3", "creator", "x1")}
    async with running_receiver() as receiver:
        secrets = await register(
            bootstrap,
            topics,
            endpoints=[
                ("tenant-a", "a-ok", receiver.url("a-ok"), ["GoalReached"]),
                ("tenant-a", "a-flaky", receiver.url("a-flaky"), ["GoalReached"]),
                ("tenant-a", "a-dead", receiver.url("a-dead"), ["GoalReached"]),
                ("tenant-b", "b-ok", receiver.url("b-ok"), ["GoalReached", "PledgeMade"]),
            ],
            contacts=[
                ("tenant-a", "backer", "b1", mail["b1"], "fr-FR"),
                ("tenant-a", "backer", "b2", mail["b2"], "en"),
                ("tenant-a", "backer", "b3", mail["b3"], None),
                ("tenant-a", "creator", "creator-1", mail["creator"], "fr"),
                ("tenant-a", "backer", "x1", mail["x1"], "en"),
            ],
        )
        receiver.secrets.update(secrets)
        receiver.fail_first["a-flaky"] = 3
        receiver.down.add("a-dead")

        log = CampaignLog(bootstrap, topics, f"{unique}processor")
        campaign, ghost = f"c-{unique}", f"g-{unique}"
        await log.write(campaign, [launch()])
        await log.write(
            campaign,
            [pledge("p1", "b1", 6000, locale="fr"), pledge("p2", "b2", 3000, locale="en")],
        )
        # a settlement event written before the pledge it is about: it waits for it
        await log.write(campaign, [capture_failed("p3", "b3", 1000)])
        await log.write(campaign, [pledge("p3", "b3", 1000, locale="en"), goal(10_000, 3)])
        # a transaction that aborts: its events must never be notified
        await log.write(ghost, [launch(), pledge("px", "x1", 20_000), goal(20_000, 1)], abort=True)

        # a record no writer should have written: dead-lettered, the worker goes on
        junk = AIOKafkaProducer(bootstrap_servers=bootstrap)
        await junk.start()
        await junk.send_and_wait(topics.for_event("PledgeMade"), b"not json", key=campaign.encode())
        await junk.stop()

        env = worker_env(
            bootstrap, redis_server, unique, mailpit.smtp_port, notify_data_dir=tmp_path / "faust"
        )
        with running_worker(env, tmp_path / "worker.log") as worker:

            async def settled() -> bool:
                assert worker.poll() is None, (tmp_path / "worker.log").read_text()
                goal_mails = [
                    m for w in ("b1", "b2", "b3", "creator") for m in mailpit.messages_to(mail[w])
                ]
                return (
                    len(receiver.delivered("a-ok")) == 1
                    and len(receiver.delivered("a-flaky")) == 1
                    and len(goal_mails) == 8  # 3 receipts, 3 goal, the creator, payment failed
                    and len([r for r in receiver.received if r.name == "a-dead"]) == 4
                )

            try:
                await eventually(settled, within=120, every=0.5)
            except AssertionError:
                seen = [(r.name, r.status, r.body and r.body["type"]) for r in receiver.received]
                counts = {w: len(mailpit.messages_to(a)) for w, a in mail.items()}
                text = (tmp_path / "worker.log").read_text()[-6000:]
                raise AssertionError(f"webhooks {seen}; mails {counts}; log:\n{text}") from None

            hooks = [r for r in receiver.received if r.verified and r.status < 300]
            goal_hooks = [r for r in hooks if r.body and r.body["type"] == "GoalReached"]
            assert sorted(r.name for r in goal_hooks) == ["a-flaky", "a-ok"]
            assert {r.body["data"]["campaign_id"] for r in hooks if r.body} == {campaign}
            assert not [r for r in receiver.received if r.name == "b-ok"]  # other tenant
            flaky_goal = [
                r.status
                for r in receiver.received
                if r.name == "a-flaky" and r.body and r.body["type"] == "GoalReached"
            ]
            assert flaky_goal == [500, 500, 500, 200]

            subjects = {
                w: sorted(m["Subject"] for m in mailpit.messages_to(mail[w]))
                for w in ("b1", "b2", "b3", "creator")
            }
            assert subjects["b1"] == [
                "Mon album a atteint son objectif",
                "Votre contribution à Mon album",
            ]
            assert subjects["b2"] == ["Mon album reached its goal", "Your pledge to Mon album"]
            assert subjects["b3"] == [
                "Action needed: your payment for Mon album failed",
                "Mon album reached its goal",
                "Your pledge to Mon album",
            ]
            [failed_mail] = [
                m for m in mailpit.messages_to(mail["b3"]) if m["Subject"].startswith("Action")
            ]
            [receipt] = [
                m for m in mailpit.messages_to(mail["b3"]) if m["Subject"].startswith("Your")
            ]
            # shown after the receipt although written before the pledge: held until ready
            assert failed_mail["Created"] >= receipt["Created"]
            assert "March 8, 2026" in mailpit.message(failed_mail["ID"])["Text"]
            assert subjects["creator"] == ["Votre campagne Mon album a atteint son objectif"]
            assert mailpit.messages_to(mail["x1"]) == []  # the aborted transaction's backer

            settings = NotifySettings(
                kafka_bootstrap=bootstrap,
                redis_url=redis_server,
                topic_prefix=unique,
                partitions=2,
            )

            async def dead_lettered() -> bool:
                recorded = await notify_stream(bootstrap, topics)
                return any(
                    isinstance(e.payload, NotificationFailed)
                    and e.payload.recipient == "a-dead"
                    and not e.payload.will_retry
                    for e in recorded
                )

            await eventually(dead_lettered, within=30, every=0.5)
            receiver.down.discard("a-dead")
            report = await redrive(settings)
            assert (report.requeued, report.unreadable) == (1, 1)  # the junk record stays
            await eventually(lambda: _true(bool(receiver.delivered("a-dead"))), within=30)

        letters = await read_all(bootstrap, topics.dead_letter("notify"))
        junk_letters = [r for r in letters if dict(r.headers).get("dlq.cause") == b"malformed"]
        assert [r.value for r in junk_letters] == [b"not json"]
        recorded = await notify_stream(bootstrap, topics)
        chain = sorted(e.seq for e in recorded if e.campaign_id == campaign)
        assert chain == list(range(1, len(chain) + 1))  # one gapless chain per campaign
        sent_ids = [
            e.payload.notification_id for e in recorded if isinstance(e.payload, NotificationSent)
        ]
        assert len(sent_ids) == len(set(sent_ids)) == 1 + 1 + 8 + 1  # a-ok, a-flaky, mails, a-dead
        assert {e.campaign_id for e in recorded} == {campaign}
        audit = await asyncio.to_thread(
            audit_kafka, bootstrap, topics.for_stream("notify"), workers=1
        )
        assert audit.events == len(recorded)
        assert [f for f in audit.findings if f.stream == "notify"] == []
    await wipe_namespace(redis_server, f"{unique}notify:")


async def _true(value: bool) -> bool:
    await asyncio.sleep(0)
    return value


async def read_all(bootstrap: str, topic: str) -> list[Any]:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    try:
        found: list[Any] = []
        while batch := await consumer.getmany(timeout_ms=1500):
            for records in batch.values():
                found.extend(records)
        return found
    finally:
        await consumer.stop()
