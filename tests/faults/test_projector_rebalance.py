"""Two read-model projectors in one group under load: rebalances, a SIGKILL and a zombie leave
the read model equal to a replay of the log.

One processor worker decides a seeded stream of commands on 6 partitions; the projectors are
the real entry point (``pledgeflow readmodel run``) with static membership
(``PLEDGEFLOW_READMODEL_INSTANCE_ID``) and a 6 s session timeout, in order:

1. one projector starts, a second is added mid-load (partitions move to it);
2. the second (not the leader; 15 s session timeout) is stopped with SIGTERM mid-load and
   restarted within its session timeout: it gets the same partitions back and the group does
   not rebalance (the first is assigned nothing anew);
3. one is SIGKILLed mid-batch; the group gives its partitions away after the session timeout,
   then it restarts;
4. a zombie: one is frozen (SIGSTOP) until the other owns its partitions and applied every
   event committed by then, then resumed (SIGCONT) with the events it held and its cached
   summaries: the read model's compare-and-set on each campaign's ``seq`` must refuse whatever
   it would write stale, and it rejoins as the same process.

Afterwards every projector is alive, the read model reached every campaign's last ``seq``, and
``pledgeflow audit verify --from-kafka --against-readmodel`` is clean. The test prints how often
each fault was injected.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.support.command_stream import CommandStream
from tests.support.fleet import FaultRun, Member, audit_verify, wait_group
from tests.support.invariants import checked_log, wait_readmodel, wipe_namespace
from tests.support.processor import read_events
from tests.support.worker import drained

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(300)]

PARTITIONS = 6
CAMPAIGNS = 24
SESSION_MS = 6000
#: Session timeout of the projector stopped gracefully and restarted (it drains first).
RESTART_SESSION_MS = 15_000


def assignments(member: Member) -> int:
    """Rebalances the member's current process took part in (one log line each)."""
    return member.full_log().count("assigned partitions")


async def test_two_projectors_survive_rebalances_a_kill_and_a_zombie(run: FaultRun) -> None:
    bootstrap, redis_server, prefix, topics = run.bootstrap, run.redis_url, run.prefix, run.topics
    rng, admin, figures, faults = run.rng, run.admin, run.figures, run.faults
    group = f"{prefix}pledge-readmodel"
    env = run.service_env(
        processor_batch_max=500,
        processor_poll_ms=50,
        readmodel_session_timeout_ms=SESSION_MS,
    )
    processor = run.fleet(["processor", "run"], env, "PLEDGEFLOW_PROCESSOR_INSTANCE_ID")
    projectors = run.fleet(["readmodel", "run"], env, "PLEDGEFLOW_READMODEL_INSTANCE_ID")
    load = CommandStream(
        bootstrap, topics.commands, [f"camp-{i:02d}" for i in range(CAMPAIGNS)], rng
    )
    watch = run.watch(group, topics.for_stream("campaign"), transactional=True)

    def alive() -> None:
        processor.assert_alive()
        projectors.assert_alive()

    try:
        processor.add("proc")
        projectors.add("r1")
        await load.start()
        await wait_group(admin, group, lambda v: v.stable_with(1, PARTITIONS), within=60,
                         fleet=projectors, what="r1")  # fmt: skip
        await watch.start()
        await asyncio.sleep(rng.uniform(1.0, 2.5))

        # 1. A second projector mid-load (its own session timeout is longer: step 2).
        projectors.add("r2", {"PLEDGEFLOW_READMODEL_SESSION_TIMEOUT_MS": str(RESTART_SESSION_MS)})
        faults["worker added mid-load"] += 1
        t = time.monotonic()
        view, figures["join_s"] = await wait_group(
            admin, group, lambda v: v.stable_with({"r1", "r2"}, PARTITIONS), within=60,
            fleet=projectors, what="r2 joined",
        )  # fmt: skip
        await asyncio.sleep(rng.uniform(1.5, 3.0))
        alive()
        figures["join_stall_s"] = watch.longest_after(t, time.monotonic())

        # 2. SIGTERM mid-load and a restart within the session timeout: the same partitions,
        # no rebalance (r1 is assigned nothing anew).
        before = view.owners
        r1_assignments = assignments(projectors.members["r1"])
        t = await run.static_restart(projectors.members["r2"], RESTART_SESSION_MS / 1000)
        view, _ = await wait_group(
            admin, group, lambda v: v.stable_with({"r1", "r2"}, PARTITIONS), within=60,
            fleet=projectors, what="r2 back",
        )  # fmt: skip
        assert view.owners == before, f"static restart moved partitions: {before} -> {view}"
        assert assignments(projectors.members["r1"]) == r1_assignments, "a rebalance"
        figures["static_restart_stall_s"] = watch.longest_after(t - 1, time.monotonic())
        alive()

        # 3. SIGKILL mid-batch; its partitions move after the session timeout (r1's: 6 s).
        victim = projectors.members["r1"]
        victim.kill()
        faults["SIGKILL"] += 1
        t = time.monotonic()
        _, figures["kill_reassign_s"] = await wait_group(
            admin, group, lambda v: v.stable_with(1, PARTITIONS), within=60, fleet=projectors,
            what="the killed projector's partitions moved",
        )  # fmt: skip
        await asyncio.sleep(1.0)
        figures["kill_stall_s"] = watch.longest_after(t - 1, time.monotonic())
        victim.start()
        await wait_group(admin, group, lambda v: v.stable_with(2, PARTITIONS),
                         within=60, fleet=projectors, what="it rejoined")  # fmt: skip
        await asyncio.sleep(rng.uniform(1.0, 2.0))
        alive()

        # 4. The zombie (r1, 6 s): frozen until the other projector applied what its
        # partitions hold.
        zombie = projectors.members["r1"]
        zombie_starts = zombie.starts
        zombie.pause()
        faults["zombie (SIGSTOP, SIGCONT)"] += 1
        t = time.monotonic()
        try:
            _, figures["zombie_reassign_s"] = await wait_group(
                admin, group, lambda v: v.stable_with(1, PARTITIONS), within=60,
                what="the zombie's partitions moved",
            )  # fmt: skip
            # The survivor applied everything committed by now, the zombie's partitions too.
            now = await read_events(bootstrap, topics)
            await wait_readmodel(redis_server, prefix, now, within=30, alive=processor.assert_alive)
        finally:
            zombie.resume()
        figures["zombie_stall_s"] = watch.longest_after(t - 1, time.monotonic())
        _, figures["zombie_rejoin_s"] = await wait_group(
            admin, group, lambda v: v.stable_with(2, PARTITIONS), within=60, fleet=projectors,
            what="the zombie rejoined",
        )  # fmt: skip
        assert zombie.alive() and zombie.starts == zombie_starts, zombie.logs()
        await asyncio.sleep(rng.uniform(1.0, 2.0))

        await load.stop()
        t = time.monotonic()
        processor_group = f"{prefix}pledge-processor"
        while not await drained(bootstrap, processor_group, topics.commands, PARTITIONS):
            alive()
            assert time.monotonic() - t < 60, "processor not drained"
            await asyncio.sleep(0.5)
        events = await checked_log(bootstrap, topics, load.sent)
        await wait_readmodel(redis_server, prefix, events, within=60, alive=alive)
        alive()
        code, output = await audit_verify(bootstrap, prefix, redis_server)
        print(f"faults injected: {dict(faults)}")
        print(f"commands={len(load.sent)} events={len(events)} figures={figures}")
        print(f"stalls={sorted(watch.stalls)}")
        assert code == 0, output[-3000:]
    finally:
        run.stop_workers()  # first: nothing below may leave workers running
        await load.stop()
        await wipe_namespace(redis_server, prefix)
