"""Settlement workers in one group under load: a worker added, one restarted as a static member,
one SIGKILLed, a zombie; money moves once per pledge and every campaign is settled once, on an
intact chain.

Seeded waves of funded campaigns are written to 6 partitions while the workers (the real entry
point, ``pledgeflow settlement run``, sandbox gateway with a latency, static membership through
``PLEDGEFLOW_SETTLEMENT_INSTANCE_ID``, a 6 s session timeout) capture, in order:

1. one worker, a second added mid-load (partitions move to it);
2. the second (not the leader; 15 s session timeout) stopped with SIGTERM while captures are
   under way and restarted within its session timeout: as a static member it gets the same
   partitions back and the group does not rebalance (the other worker rebuilds nothing);
3. the first SIGKILLed while captures are under way; its partitions move after the session
   timeout, then it restarts and rejoins;
4. a zombie: the first frozen (SIGSTOP) while it has gateway calls in flight, until the other
   owns all partitions and settled every campaign written by then, then resumed (SIGCONT) with
   its calls in flight and in-memory state: its writers are fenced by the new owner's
   transactional ids (when it writes before it notices the rebalance), so nothing it writes
   survives; it drops the fenced partitions and rejoins the group without a restart.

Afterwards: exactly one collection per pledge at the sandbox (none for declined cards), one
``CampaignSettled`` per campaign, gapless ``seq`` and intact chains per campaign (a second
writer's events would break them), every worker alive (the zombie still its first process),
and ``pledgeflow audit verify --from-kafka --against-readmodel`` clean against a read model
rebuilt from the log. The test prints how often each fault was injected, and how long the
partitions stood still (the campaign stream's committed offsets).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import Counter, defaultdict

import pytest
import redis.asyncio as aioredis

from schemas import Envelope, decode
from schemas.events import CampaignSettled, PledgeCaptured
from schemas.topics import Topics
from services.settlement.adapters.sandbox_gateway import SandboxGateway
from tests.support.api import free_port
from tests.support.fleet import (
    FaultRun,
    Member,
    audit_verify,
    metric,
    run_cli,
    wait_group,
)
from tests.support.invariants import wipe_namespace
from tests.support.processor import read_topics
from tests.support.settlement import CampaignBook
from tests.support.settlement_kafka import audit_findings, write_campaigns

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(300)]

PARTITIONS = 6
SESSION_MS = 6000
#: Session timeout of the worker stopped gracefully and restarted (it drains first).
RESTART_SESSION_MS = 15_000
PER_WAVE = 2
PLEDGES = 20


def token(i: int) -> str:
    return "tok_declined" if i % 10 == 3 else "tok_ok"


def rebuilds(member: Member) -> int:
    """Partitions the worker's current process rebuilt so far (each follows an assignment)."""
    return member.full_log().count(" rebuilt: ")


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
    run: FaultRun, unique: str
) -> None:
    bootstrap, redis_server, prefix, topics = run.bootstrap, run.redis_url, run.prefix, run.topics
    rng, admin, figures, faults = run.rng, run.admin, run.figures, run.faults
    group = f"{prefix}settlement"
    sandbox_prefix = f"{unique}:sbx:"
    env = run.service_env(
        sandbox_prefix=sandbox_prefix,
        sandbox_latency_ms=40,
        settlement_max_in_flight_per_campaign=2,
        settlement_retry_schedule="300ms,600ms",
        settlement_session_timeout_ms=SESSION_MS,
        metrics_port=0,
    )
    fleet = run.fleet(["settlement", "run"], env, "PLEDGEFLOW_SETTLEMENT_INSTANCE_ID")
    sandbox = SandboxGateway.from_url(redis_server, prefix=sandbox_prefix)
    probe = aioredis.Redis.from_url(redis_server)
    # How long each partition's campaign events waited unread (written in transactions).
    watch = run.watch(group, topics.for_stream("campaign"), transactional=True)
    campaigns: list[str] = []
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
        # s1 first: it leads the group (a static leader's restart was seen to rebalance).
        # s1 serves metrics: the zombie step freezes it while it has gateway calls in flight.
        s1_port = free_port()
        fleet.add("s1", {"PLEDGEFLOW_METRICS_PORT": str(s1_port)})
        await wait_group(admin, group, lambda v: v.stable_with({"s1"}, PARTITIONS), within=40,
                         fleet=fleet, what="s1")  # fmt: skip
        await watch.start()
        await captures_under_way()

        # 1. A second worker mid-load; its own session timeout is longer (step 2 drains it).
        fleet.add("s2", {"PLEDGEFLOW_SETTLEMENT_SESSION_TIMEOUT_MS": str(RESTART_SESSION_MS)})
        faults["worker added mid-load"] += 1
        t = time.monotonic()
        view, figures["join_s"] = await wait_group(
            admin, group, lambda v: v.stable_with({"s1", "s2"}, PARTITIONS), within=40,
            fleet=fleet, what="s2 joined",
        )  # fmt: skip
        await captures_under_way()
        figures["join_stall_s"] = watch.longest_after(t, time.monotonic())

        # 2. SIGTERM mid-run and a restart within the session timeout: the same partitions,
        # no rebalance (s1 rebuilds nothing).
        before = view.owners
        s1 = fleet.members["s1"]
        await asyncio.sleep(rng.uniform(1.0, 2.0))  # s1 logged the rebuilds of the join
        s1_rebuilds = rebuilds(s1)
        t = await run.static_restart(fleet.members["s2"], RESTART_SESSION_MS / 1000)
        view, _ = await wait_group(
            admin, group, lambda v: v.stable_with({"s1", "s2"}, PARTITIONS), within=40,
            fleet=fleet, what="s2 back",
        )  # fmt: skip
        assert view.owners == before, f"static restart moved partitions: {before} -> {view}"
        assert rebuilds(s1) == s1_rebuilds, "the static restart rebalanced the group"
        figures["static_restart_stall_s"] = watch.longest_after(t - 1, time.monotonic())
        await captures_under_way()

        # 3. SIGKILL while captures are under way; restart once its partitions moved.
        victim = fleet.members["s1"]
        victim.kill()
        faults["SIGKILL"] += 1
        t = time.monotonic()
        _, figures["kill_reassign_s"] = await wait_group(
            admin, group, lambda v: v.stable_with({"s2"}, PARTITIONS), within=40, fleet=fleet,
            what="the killed worker's partitions moved",
        )  # fmt: skip
        await asyncio.sleep(1.0)
        figures["kill_stall_s"] = watch.longest_after(t - 1, time.monotonic())
        victim.start()
        await wait_group(admin, group, lambda v: v.stable_with({"s1", "s2"}, PARTITIONS),
                         within=40, fleet=fleet, what="it rejoined")  # fmt: skip
        await captures_under_way()

        # 4. The zombie: frozen mid-run until the other worker owns everything and settled
        # every campaign written by then (the zombie's former partitions too), then resumed.
        zombie = fleet.members["s1"]
        zombie_starts = zombie.starts
        await captures_under_way()
        deadline = time.monotonic() + 30
        while await metric(s1_port, "pledgeflow_settlement_gateway_in_flight") == 0:
            fleet.assert_alive()
            assert time.monotonic() < deadline, "s1 never had gateway calls in flight"
            await asyncio.sleep(0.01)
        zombie.pause()
        faults["zombie (SIGSTOP, SIGCONT)"] += 1
        t = time.monotonic()
        try:
            _, figures["zombie_reassign_s"] = await wait_group(
                admin, group, lambda v: v.stable_with({"s2"}, PARTITIONS), within=40,
                what="the zombie's partitions moved",
            )  # fmt: skip
            await settled(list(campaigns), within=40)
        finally:
            zombie.resume()
        # Resumed, it writes what it decided meanwhile: fenced, it drops those partitions and
        # rejoins as the same process (no supervisor restart).
        _, figures["zombie_rejoin_s"] = await wait_group(
            admin, group, lambda v: v.stable_with({"s1", "s2"}, PARTITIONS), within=40,
            fleet=fleet, what="the zombie rejoined",
        )  # fmt: skip
        assert zombie.alive() and zombie.starts == zombie_starts, zombie.logs()
        figures["zombie_stall_s"] = watch.longest_after(t - 1, time.monotonic())
        writing = False
        await writer
        settlement = await settled(list(campaigns), within=40)
        await asyncio.sleep(rng.uniform(1.0, 2.0))  # whatever the zombie still tries, lands
        fleet.assert_alive()
        assert zombie.starts == zombie_starts, "the zombie was restarted"
        faults["zombie writes fenced"] = zombie.full_log().count("fenced by a newer writer")
        figures["total_s"] = time.monotonic() - started
        print(f"faults injected: {dict(faults)}")
        print(f"campaigns={len(campaigns)} pledges={len(campaigns) * PLEDGES} figures={figures}")

        settlement = await stream_by_campaign(bootstrap, topics, "settlement")
        history = await stream_by_campaign(bootstrap, topics, "campaign")
        counts = await collected()
        for campaign in campaigns:
            events = settlement[campaign]
            captured = Counter(
                e.payload.pledge_id for e in events if isinstance(e.payload, PledgeCaptured)
            )
            for i in range(PLEDGES):
                expected = 0 if token(i) == "tok_declined" else 1
                # Money moved once at the sandbox, and the stream records it once.
                assert counts[campaign, i] == expected, (campaign, i, counts[campaign, i])
                assert captured[f"p{i}"] == expected, (campaign, i, captured[f"p{i}"])
            done = [e for e in events if isinstance(e.payload, CampaignSettled)]
            assert len(done) == 1, (campaign, len(done))
            assert [e.seq for e in events] == list(range(1, len(events) + 1)), campaign
            assert audit_findings(history[campaign] + events) == [], campaign
        fleet.stop_all()

        # The read model rebuilt from the committed log agrees with the audit's replay of it
        # (settlement consistent with each outcome, every ledger balanced).
        run_cli(["readmodel", "rebuild"], env)
        code, output = await audit_verify(bootstrap, prefix, redis_server)
        assert code == 0, output[-3000:]
    finally:
        writing = False
        with contextlib.suppress(Exception):
            await writer
        run.stop_workers()
        await sandbox.forget()
        await sandbox.aclose()
        await probe.aclose()
        await wipe_namespace(redis_server, prefix)
