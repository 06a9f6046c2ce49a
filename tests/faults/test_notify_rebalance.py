"""Notify workers in one group under load: a join, a graceful stop, a SIGKILL and a zombie lose
nothing; a repeat only carries an id already delivered, at most one per kill or zombie.

A seeded load writes pledges (each a webhook) to campaigns on 6 partitions, transactionally as
the processor does, while two workers (the real entry point, ``pledgeflow notify worker``, with
static membership as in deploy/k8s: ``PLEDGEFLOW_NOTIFY_INSTANCE_ID``) deliver to a local
receiver (one delivery in flight per worker: ``notify_endpoint_concurrency=1``, so a crash
leaves at most one send unrecorded). In order:

1. n1 alone; n2 added mid-load (partitions move to it);
2. n2 stopped with SIGTERM (it drains: what it sent is recorded) and restarted within its
   session timeout: as a static member it gets the same partitions back, and n1 sees no
   rebalance (its assignment count stays);
3. n1 SIGKILLed mid-delivery (the receiver answers slowly for a moment, so a send is in
   flight); its partitions move after the session timeout; it restarts;
4. a zombie: n1 frozen (SIGSTOP) mid-delivery likewise until n2 owns every partition and
   delivers on them, then
   resumed (SIGCONT) with the delivery (and maybe the transaction) it held: n2's owner tokens
   and stream writers fenced it, so it claims nothing new and its record is refused; it
   rejoins.

Afterwards every notification arrived, repeats are bounded by the kills and zombies, the notify
stream has one writer's chain per campaign (gapless seq, intact hashes, no seq going backwards
in a partition), and every worker is alive.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter, defaultdict
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from schemas import decode, verify_chain
from schemas.events import NotificationSent
from services.audit.sources import audit_kafka
from services.notify.domain import notification_id
from tests.support.api import eventually, free_port
from tests.support.fleet import fault_run, metric, wait_group
from tests.support.infra import REPO
from tests.support.invariants import wipe_namespace
from tests.support.notify_worker import CampaignLog, register, worker_env
from tests.support.processor import read_topics
from tests.support.webhook_receiver import running_receiver
from tests.unit.notify.events import launch, pledge

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(330)]

PARTITIONS = 6
CAMPAIGNS = 12
SESSION_S = 6
#: Session timeout of the worker stopped gracefully and restarted (it drains, then starts).
RESTART_SESSION_S = 20
LEASE_S = 2


async def test_notify_workers_survive_a_join_a_restart_a_kill_and_a_zombie(
    bootstrap: str, redis_server: str, unique: str, tmp_path: Path
) -> None:
    group = f"{unique}notify"
    started = time.monotonic()
    ports = {name: free_port() for name in ("n1", "n2")}
    async with (
        fault_run(bootstrap, redis_server, tmp_path, prefix=unique, partitions=PARTITIONS) as run,
        running_receiver() as receiver,
    ):
        rng, topics, admin, figures, faults = (
            run.rng,
            run.topics,
            run.admin,
            run.figures,
            run.faults,
        )
        receiver.secrets.update(
            await register(
                bootstrap,
                topics,
                endpoints=[("tenant-a", "hook", receiver.url("hook"), ["PledgeMade"])],
                contacts=[],
            )
        )
        receiver.delay["hook"] = 0.01
        log = CampaignLog(bootstrap, topics, f"{unique}processor")
        expected: set[str] = set()
        campaigns = [f"c{c}-{unique}" for c in range(CAMPAIGNS)]
        for campaign in campaigns:
            await log.write(campaign, [launch()])
        env = worker_env(
            bootstrap,
            redis_server,
            unique,
            1,
            partitions=PARTITIONS,
            notify_endpoint_concurrency=1,
            notify_lease_seconds=LEASE_S,
        )
        env["PYTHONPATH"] = str(REPO)
        fleet = run.fleet(["notify", "worker", "-l", "info"], env, "PLEDGEFLOW_NOTIFY_INSTANCE_ID")
        writing = True

        async def load() -> None:
            batch = 0
            while writing:
                campaign = rng.choice(campaigns)
                made = await log.write(
                    campaign,
                    [pledge(f"p{batch}-{i}", f"b{i}", 100 + i) for i in range(rng.randint(1, 3))],
                )
                expected.update(
                    notification_id(e.event_id, "platform", "hook", "webhook") for e in made
                )
                batch += 1
                await asyncio.sleep(rng.uniform(0.1, 0.3))

        def delivered() -> int:
            return len(receiver.delivered("hook"))

        async def deliveries_under_way() -> None:
            print(f"t={time.monotonic() - started:.1f}s delivered={delivered()}")
            target = delivered() + rng.randint(3, 10)
            await eventually(lambda: _true(delivered() >= target), within=30, every=0.05)
            fleet.assert_alive()

        def add(name: str, session_s: float = SESSION_S) -> None:
            fleet.add(
                name,
                {
                    "PLEDGEFLOW_NOTIFY_DATA_DIR": str(tmp_path / f"faust-{name}"),
                    "PLEDGEFLOW_NOTIFY_SESSION_TIMEOUT_SECONDS": str(session_s),
                    "PLEDGEFLOW_METRICS_PORT": str(ports[name]),
                },
            )

        async def mid_send() -> None:
            """Make sends slow for a moment, so that the next fault lands while the worker
            waits for the receiver's answer (a send made but not recorded yet)."""
            receiver.delay["hook"] = 1.0
            await asyncio.sleep(1.5)

        def fast() -> None:
            receiver.delay["hook"] = 0.01

        async def assignments(name: str) -> float:
            return await metric(ports[name], "pledgeflow_notify_assignments_total")

        writer = asyncio.create_task(load())
        try:
            add("n1")
            await wait_group(admin, group, lambda v: v.stable_with({"n1"}, PARTITIONS),
                             within=60, fleet=fleet, what="n1")  # fmt: skip
            await deliveries_under_way()

            # 1. A second worker mid-load (its longer session timeout serves step 2).
            add("n2", RESTART_SESSION_S)
            faults["join"] += 1
            view, figures["join_s"] = await wait_group(
                admin, group, lambda v: v.stable_with({"n1", "n2"}, PARTITIONS), within=60,
                fleet=fleet, what="n2 joined",
            )  # fmt: skip
            await deliveries_under_way()

            # 2. SIGTERM, restart within the session timeout: same assignment, no rebalance.
            before = view.owners
            n1_assignments = await assignments("n1")
            t = time.monotonic()
            # in a thread: the receiver runs on this loop and must answer the sends n2 drains
            await asyncio.to_thread(fleet.members["n2"].terminate)
            faults["sigterm"] += 1
            figures["graceful_stop_s"] = time.monotonic() - t
            await asyncio.sleep(rng.uniform(0.2, 1.0))
            fleet.members["n2"].start()
            assert time.monotonic() - t < RESTART_SESSION_S - 5, "too slow to test"
            # past the old n2's session timeout: had it not been replaced, it expires now
            await asyncio.sleep(max(0.0, t + RESTART_SESSION_S + 1 - time.monotonic()))
            view, _ = await wait_group(admin, group, lambda v: v.stable_with(2, PARTITIONS),
                                       within=60, fleet=fleet, what="n2 back")  # fmt: skip
            assert view.owners == before, f"static restart moved partitions: {before} -> {view}"
            assert await assignments("n1") == n1_assignments, "n1 saw a rebalance"
            await deliveries_under_way()

            # 3. SIGKILL mid-delivery; restart once its partitions moved.
            victim = fleet.members["n1"]
            await mid_send()
            victim.kill()
            fast()
            faults["sigkill"] += 1
            _, figures["kill_reassign_s"] = await wait_group(
                admin, group, lambda v: v.stable_with({"n2"}, PARTITIONS), within=60,
                fleet=fleet, what="the killed worker's partitions moved",
            )  # fmt: skip
            await deliveries_under_way()
            victim.start()
            await wait_group(admin, group, lambda v: v.stable_with(2, PARTITIONS), within=60,
                             fleet=fleet, what="it rejoined")  # fmt: skip
            await deliveries_under_way()

            # 4. The zombie: frozen until the other worker owns every partition and delivers.
            zombie = fleet.members["n1"]
            await mid_send()
            zombie.pause()
            fast()
            faults["zombie"] += 1
            try:
                _, figures["zombie_reassign_s"] = await wait_group(
                    admin, group, lambda v: v.stable_with({"n2"}, PARTITIONS), within=60,
                    what="the zombie's partitions moved",
                )  # fmt: skip
                await asyncio.sleep(LEASE_S)  # the zombie's claim runs out: n2 re-sends it
                await deliveries_under_way()
            finally:
                zombie.resume()
            _, figures["zombie_rejoin_s"] = await wait_group(
                admin, group, lambda v: v.stable_with(2, PARTITIONS), within=60, fleet=fleet,
                what="the zombie rejoined",
            )  # fmt: skip
            await deliveries_under_way()
            writing = False
            await writer
            drain_from = time.monotonic()

            async def all_delivered() -> bool:
                fleet.assert_alive()
                return {r.webhook_id for r in receiver.delivered("hook")} >= expected

            try:
                await eventually(all_delivered, within=120, every=0.3)
            except AssertionError:
                missing = sorted(expected - {r.webhook_id for r in receiver.delivered("hook")})
                probe = aioredis.Redis.from_url(redis_server)
                states = []
                for i in missing[:3]:
                    item = await probe.hgetall(f"{unique}notify:n:{i}")
                    part = int(item.get(b"part", b"-1"))
                    due = await probe.zscore(f"{unique}notify:due:{part}:webhook:hook", i)
                    owner = await probe.get(f"{unique}notify:owner:{part}")
                    item.pop(b"data", None)
                    states.append((item, f"due in {(due or 0) / 1000 - time.time():.1f}s", owner))
                await probe.aclose()
                view, _ = await wait_group(admin, group, lambda _v: True, within=10)
                raise AssertionError(
                    f"{len(missing)} of {len(expected)} never delivered, e.g. {missing[:3]} "
                    f"{states}; group {view}; figures={figures}"
                ) from None
            figures["drain_s"] = time.monotonic() - drain_from
            await asyncio.sleep(LEASE_S + 1)  # a lease that was running ends: late repeats
            fleet.assert_alive()
            fenced = await metric(ports["n1"], "pledgeflow_notify_fenced_total")
            figures["total_s"] = time.monotonic() - started
        finally:
            writing = False
            with contextlib.suppress(Exception):
                await writer
            run.stop_workers()

    ids = [r.webhook_id for r in receiver.delivered("hook")]
    counts = Counter(ids)
    repeats = len(ids) - len(counts)
    print(
        f"faults={dict(faults)} notifications={len(expected)} deliveries={len(ids)} "
        f"repeats={repeats} zombie_fenced_writes={fenced:.0f} figures="
        + str({k: round(v, 1) for k, v in figures.items()})
    )
    # every notification arrived; a repeat is an id already delivered (never a new one), and
    # each kill or zombie left at most one send unrecorded
    assert set(ids) == expected
    assert repeats <= faults["sigkill"] + faults["zombie"], counts.most_common(4)
    records = await read_topics(bootstrap, topics.for_stream("notify"), PARTITIONS)
    records.sort(key=lambda r: (r[0], r[1], r[2]))  # log order per topic partition
    recorded = [decode(r[4]) for r in records]
    sent = {e.payload.notification_id for e in recorded if isinstance(e.payload, NotificationSent)}
    assert sent == expected
    # one writer at a time per partition: each campaign's seq only goes up in each topic
    # partition (a zombie's late record would go backwards or repeat), and its chain is whole
    last: dict[tuple[str, int, str], int] = {}
    chains: dict[str, list[int]] = defaultdict(list)
    for (topic, partition, offset, *_), event in zip(records, recorded, strict=True):
        where = (topic, partition, event.campaign_id)
        assert event.seq > last.get(where, 0), f"{topic}[{partition}]@{offset}: two writers"
        last[where] = event.seq
        chains[event.campaign_id].append(event.seq)
    for campaign, seqs in chains.items():
        assert sorted(seqs) == list(range(1, len(seqs) + 1)), campaign
    assert verify_chain(sorted(recorded, key=lambda e: (e.campaign_id, e.seq))) is None
    # and the audit (``pledgeflow audit verify``'s engine) finds nothing wrong with the stream
    audit = await asyncio.to_thread(audit_kafka, bootstrap, topics.for_stream("notify"), workers=1)
    assert audit.events == len(recorded)
    assert [f for f in audit.findings if f.stream == "notify"] == []
    await wipe_namespace(redis_server, f"{unique}notify:")


async def _true(value: bool) -> bool:
    return value
