"""SIGKILL the notify worker several times while it delivers: every notification arrives, and
a repeat only ever carries an id already delivered, at most one per kill (one delivery in
flight per endpoint here, so one kill can interrupt at most one send)."""

from __future__ import annotations

import asyncio
import random
import signal
from collections import Counter
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from schemas.events import NotificationSent
from schemas.topics import Topics, ensure_topics
from services.notify.domain import notification_id
from tests.support.api import eventually
from tests.support.invariants import wipe_namespace
from tests.support.notify_worker import (
    CampaignLog,
    notify_stream,
    register,
    running_worker,
    worker_env,
)
from tests.support.webhook_receiver import running_receiver
from tests.unit.notify.events import launch, pledge

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(300)]

CAMPAIGNS = 4
PLEDGES = 40
KILLS = 3


async def test_notify_worker_sigkilled_mid_run_delivers_everything_with_bounded_repeats(
    bootstrap: str, redis_server: str, unique: str, tmp_path: Path
) -> None:
    rng = random.Random(14)
    topics = Topics(prefix=unique, partitions=2)
    await ensure_topics(bootstrap, topics)
    async with running_receiver() as receiver:
        receiver.secrets.update(
            await register(
                bootstrap,
                topics,
                endpoints=[("tenant-a", "hook", receiver.url("hook"), ["PledgeMade"])],
                contacts=[],
            )
        )
        receiver.delay["hook"] = 0.02  # a send takes a while, so kills land mid-delivery
        log = CampaignLog(bootstrap, topics, f"{unique}processor")
        expected: set[str] = set()
        for c in range(CAMPAIGNS):
            campaign = f"c{c}-{unique}"
            await log.write(campaign, [launch()])
            for batch in range(PLEDGES // 10):
                made = await log.write(
                    campaign,
                    [pledge(f"p{c}-{batch}-{i}", f"b{i}", 100 + i) for i in range(10)],
                )
                expected.update(
                    notification_id(e.event_id, "platform", "hook", "webhook") for e in made
                )
        env = worker_env(
            bootstrap,
            redis_server,
            unique,
            1,
            notify_data_dir=tmp_path / "faust",
            notify_endpoint_concurrency=1,
            notify_session_timeout_seconds=6,
            notify_lease_seconds=2,
        )
        kills = 0
        for _ in range(KILLS):
            with running_worker(env, tmp_path / "worker.log") as worker:
                before = len(receiver.delivered("hook"))
                await eventually(
                    lambda b=before: _more(receiver, b),
                    within=60,
                    every=0.05,  # type: ignore[misc]
                )
                await asyncio.sleep(rng.uniform(0.1, 1.0))
                assert worker.poll() is None, (tmp_path / "worker.log").read_text()[-3000:]
                worker.send_signal(signal.SIGKILL)
                worker.wait()
                kills += 1
        with running_worker(env, tmp_path / "worker.log"):

            async def all_delivered() -> bool:
                return {r.webhook_id for r in receiver.delivered("hook")} >= expected

            try:
                await eventually(all_delivered, within=90, every=0.5)
            except AssertionError:
                got = {r.webhook_id for r in receiver.delivered("hook")}
                probe = aioredis.Redis.from_url(redis_server)
                states = [
                    await probe.hgetall(f"{unique}notify:n:{i}") for i in sorted(expected - got)[:3]
                ]
                await probe.aclose()
                text = (tmp_path / "worker.log").read_text()[-3000:]
                raise AssertionError(
                    f"{len(expected - got)} of {len(expected)} never delivered {states}; "
                    f"log:\n{text}"
                ) from None
            await asyncio.sleep(3)  # a lease that was running ends: late repeats show up

    ids = [r.webhook_id for r in receiver.delivered("hook")]
    assert set(ids) == expected
    repeats = sum(n - 1 for n in Counter(ids).values())
    assert repeats <= kills, Counter(ids).most_common(5)
    recorded = await notify_stream(bootstrap, topics)
    sent = {e.payload.notification_id for e in recorded if isinstance(e.payload, NotificationSent)}
    assert sent == expected
    for campaign in {e.campaign_id for e in recorded}:
        seqs = sorted(e.seq for e in recorded if e.campaign_id == campaign)
        assert seqs == list(range(1, len(seqs) + 1))
    await wipe_namespace(redis_server, f"{unique}notify:")


async def _more(receiver: object, before: int) -> bool:
    from tests.support.webhook_receiver import Receiver

    assert isinstance(receiver, Receiver)
    return len(receiver.delivered("hook")) > before
