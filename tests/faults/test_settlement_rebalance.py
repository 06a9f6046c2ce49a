"""Settlement workers in one group under load: a worker added, one SIGKILLed, a zombie; money
moves once per pledge and every campaign is settled once, on an intact chain.

Seeded waves of funded campaigns are written to 6 partitions while the workers (the real entry
point, ``pledgeflow settlement run``, sandbox gateway with a latency) capture, in order:

1. one worker, a second added mid-load (partitions move to it);
2. one SIGKILLed while captures are under way; its partitions move after the session timeout
   (aiokafka's default, no static membership), then it restarts;
3. a zombie: one frozen (SIGSTOP) until the other owns all partitions and settled a wave written
   meanwhile, then resumed (SIGCONT) with its open calls and in-memory state: its writers are
   fenced by the new owner's transactional ids, so nothing it writes survives, and it rejoins.

Afterwards: exactly one collection per pledge at the sandbox (none for declined cards), one
``CampaignSettled`` per campaign, and the auditor finds nothing on each campaign's streams
(gapless ``seq``, intact chains).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import defaultdict
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from aiokafka.admin import AIOKafkaAdminClient

from schemas import Envelope, decode
from schemas.events import CampaignSettled
from schemas.topics import Topics, ensure_topics
from services.settlement.adapters.sandbox_gateway import SandboxGateway
from tests.support.fleet import Fleet, service_env, wait_group
from tests.support.processor import read_topics
from tests.support.settlement import CampaignBook
from tests.support.settlement_kafka import audit_findings, write_campaigns

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(150)]

PARTITIONS = 6
PER_WAVE = 2
PLEDGES = 20


def token(i: int) -> str:
    return "tok_declined" if i % 10 == 3 else "tok_ok"


def book(campaign_id: str, rng: random.Random) -> CampaignBook:
    campaign = CampaignBook(campaign_id=campaign_id, goal_minor=1_000).launch()
    for i in range(PLEDGES):
        campaign.pledge(f"p{i}", rng.randint(500, 5_000), token(i))
    campaign.close("funded")
    return campaign


async def stream_by_campaign(
    bootstrap: str, topics: Topics, stream: str
) -> dict[str, list[Envelope]]:
    """Every committed event of ``stream``, by campaign, in ``seq`` order (a repeated or
    missing ``seq`` shows as a gap check failure, a foreign writer's event as a broken chain)."""
    out: dict[str, list[Envelope]] = defaultdict(list)
    for record in await read_topics(bootstrap, topics.for_stream(stream), topics.partitions):
        event = decode(record[4])
        out[event.campaign_id].append(event)
    for events in out.values():
        events.sort(key=lambda e: e.seq)
    return out


async def test_settlement_workers_survive_a_join_a_kill_and_a_zombie(
    bootstrap: str, redis_server: str, unique: str, tmp_path: Path
) -> None:
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    print(f"seed={seed}")
    prefix = f"{unique}."
    topics = Topics(prefix=prefix, partitions=PARTITIONS)
    await ensure_topics(bootstrap, topics)
    group = f"{prefix}settlement"
    sandbox_prefix = f"{unique}:sbx:"
    env = service_env(
        kafka_bootstrap=bootstrap,
        redis_url=redis_server,
        topic_prefix=prefix,
        partitions=PARTITIONS,
        sandbox_prefix=sandbox_prefix,
        sandbox_latency_ms=40,
        settlement_max_in_flight_per_campaign=2,
        settlement_retry_schedule="300ms,600ms",
        metrics_port=0,
    )
    fleet = Fleet(["settlement", "run"], env, tmp_path)
    sandbox = SandboxGateway.from_url(redis_server, prefix=sandbox_prefix)
    probe = aioredis.Redis.from_url(redis_server)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    campaigns: list[str] = []
    figures: dict[str, float] = {}
    started = time.monotonic()
    writing = True

    async def load() -> None:
        """Waves of funded campaigns until the faults are done (captures always under way)."""
        wave = 0
        while writing:
            books = [book(f"w{wave}-{i}", rng) for i in range(PER_WAVE)]
            await write_campaigns(
                bootstrap, topics, f"{prefix}t{wave}", [e for b in books for e in b.log]
            )
            campaigns.extend(b.campaign_id for b in books)
            wave += 1
            await asyncio.sleep(rng.uniform(0.8, 1.6))

    async def collected() -> dict[tuple[str, int], int]:
        """Collections at the sandbox per (campaign, pledge number), read by key (a pattern
        scan of the shared Redis would be slow)."""
        names = [(c, i) for c in list(campaigns) for i in range(PLEDGES)]
        async with probe.pipeline(transaction=False) as pipe:
            for c, i in names:
                pipe.hget(f"{sandbox_prefix}pledge:{c}/p{i}", "collected")
            values = await pipe.execute()
        return {name: int(v or 0) for name, v in zip(names, values, strict=True)}

    async def captures_under_way(within: float = 30) -> None:
        """Wait until more collections happened (a fault then lands mid-run)."""
        wanted = sum((await collected()).values()) + rng.randint(5, 20)
        deadline = time.monotonic() + within
        while sum((await collected()).values()) < wanted:
            fleet.assert_alive()
            assert time.monotonic() < deadline, "no captures under way"
            await asyncio.sleep(0.05)

    async def settled(names: list[str], within: float) -> dict[str, list[Envelope]]:
        """The settlement stream by campaign, once each of ``names`` has a CampaignSettled."""
        deadline = time.monotonic() + within
        while True:
            by_campaign = await stream_by_campaign(bootstrap, topics, "settlement")
            waiting = [
                c
                for c in names
                if not any(isinstance(e.payload, CampaignSettled) for e in by_campaign.get(c, []))
            ]
            if not waiting:
                return by_campaign
            fleet.assert_alive()
            assert time.monotonic() < deadline, f"{len(waiting)} not settled: {waiting[:5]}"
            await asyncio.sleep(0.5)

    writer = asyncio.create_task(load())
    try:
        fleet.add("s1")
        await wait_group(admin, group, lambda v: v.stable_with(1, PARTITIONS), within=40,
                         fleet=fleet, what="s1")  # fmt: skip
        await captures_under_way()

        # 1. A second worker mid-load.
        fleet.add("s2")
        _, figures["join_s"] = await wait_group(
            admin, group, lambda v: v.stable_with(2, PARTITIONS), within=40, fleet=fleet,
            what="s2 joined",
        )  # fmt: skip
        await captures_under_way()

        # 2. SIGKILL while captures are under way; restart once its partitions moved.
        victim = fleet.members[rng.choice(["s1", "s2"])]
        victim.kill()
        _, figures["kill_reassign_s"] = await wait_group(
            admin, group, lambda v: v.stable_with(1, PARTITIONS), within=40, fleet=fleet,
            what="the killed worker's partitions moved",
        )  # fmt: skip
        victim.start()
        await wait_group(admin, group, lambda v: v.stable_with(2, PARTITIONS), within=40,
                         fleet=fleet, what="it rejoined")  # fmt: skip
        await captures_under_way()

        # 3. The zombie: frozen mid-run until the other worker owns everything and settled
        # every campaign written by then (the zombie's former partitions too), then resumed.
        zombie = fleet.members[rng.choice(["s1", "s2"])]
        zombie.pause()
        try:
            _, figures["zombie_reassign_s"] = await wait_group(
                admin, group, lambda v: v.stable_with(1, PARTITIONS), within=40,
                what="the zombie's partitions moved",
            )  # fmt: skip
            await settled(list(campaigns), within=40)
        finally:
            zombie.resume()
        # Resumed, it fails its next write with ProducerFenced and exits by design (module
        # docstring of services/settlement/app.py: its supervisor restarts it), or it finds
        # nothing to write and rejoins the group as it is.
        zombie.down = True  # may exit; checked below
        _, figures["zombie_back_s"] = await wait_group(
            admin, group,
            lambda v: not zombie.alive() or v.stable_with(2, PARTITIONS), within=40,
            fleet=fleet, what="the zombie exited or rejoined",
        )  # fmt: skip
        if not zombie.alive():
            figures["zombie_exited"] = 1
            assert "ProducerFenced" in zombie.logs(), zombie.logs()
            zombie.start()  # as its supervisor would
        zombie.down = False
        await wait_group(admin, group, lambda v: v.stable_with(2, PARTITIONS), within=40,
                         fleet=fleet, what="the zombie rejoined")  # fmt: skip
        writing = False
        await writer
        settlement = await settled(list(campaigns), within=40)
        await asyncio.sleep(rng.uniform(1.0, 2.0))  # whatever the zombie still tries, lands
        fleet.assert_alive()
        figures["total_s"] = time.monotonic() - started

        settlement = await stream_by_campaign(bootstrap, topics, "settlement")
        history = await stream_by_campaign(bootstrap, topics, "campaign")
        counts = await collected()
        for campaign in campaigns:
            for i in range(PLEDGES):
                expected = 0 if token(i) == "tok_declined" else 1
                assert counts[campaign, i] == expected, (campaign, i, counts[campaign, i])
            events = settlement[campaign]
            done = [e for e in events if isinstance(e.payload, CampaignSettled)]
            assert len(done) == 1, (campaign, len(done))
            assert [e.seq for e in events] == list(range(1, len(events) + 1)), campaign
            assert audit_findings(history[campaign] + events) == [], campaign
        print(f"campaigns={len(campaigns)} pledges={len(campaigns) * PLEDGES} figures={figures}")
    finally:
        writing = False
        with contextlib.suppress(Exception):
            await writer
        fleet.stop_all()
        await admin.close()
        await sandbox.forget()
        await sandbox.aclose()
        await probe.aclose()
