"""Commands/s of 1, 2 and 3 processor workers on the same preloaded commands, with CPU cost.

Each round uses fresh topics (6 partitions) and ``k`` workers as the real entry point
(``pledgeflow processor run`` subprocesses, static members, one consumer group). The workers
join and decide the campaign launches; then they are frozen (SIGSTOP), the pledges are
preloaded into ``pledge-commands``, and all are resumed together (SIGCONT): the clock runs
from there until the group's committed offsets reach the end of the topic. Nothing else
differs between rounds, so the rounds compare like with like.

Reported per round: commands/s, CPU seconds of each worker (``/proc/<pid>/stat``) and per
command (each worker's and the total), and how busy the whole machine was meanwhile
(``/proc/stat``): on a 2-core box the broker shares the cores with the workers, so the curve
flattens once the machine is saturated. Baseline = 1 worker; target: 3 workers are not slower.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from bench.bench_processor import CAMPAIGNS, PARTITIONS, commands, preload
from bench.harness import Target, delete_topics, kafka_bootstrap, write_result
from bench.stack import cpu_seconds, machine_ticks

N = int(os.environ.get("BENCH_SCALING_N", "60000"))
WORKERS = (1, 2, 3)
REPO = Path(__file__).resolve().parents[1]
SEED = 18


async def committed_total(admin: AIOKafkaAdminClient, group: str, topic: str) -> int:
    offsets = await admin.list_consumer_group_offsets(group)
    return sum(o.offset for tp, o in offsets.items() if tp.topic == topic and o.offset >= 0)


def spawn(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """``pledgeflow processor run`` in a subprocess, output to ``log``."""
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "services.cli", "processor", "run"],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


async def wait_for(check: Any, within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        await asyncio.sleep(0.2)


async def run_round(bootstrap: str, prefix: str, k: int, log_dir: Path) -> dict[str, Any]:
    from schemas.topics import Topics, ensure_topics

    topics = Topics(prefix=prefix, partitions=PARTITIONS)
    await ensure_topics(bootstrap, topics)
    group = f"{prefix}pledge-processor"
    items = commands(N, prefix.rstrip("."))
    launches, pledges = items[:CAMPAIGNS], items[CAMPAIGNS:]
    await preload(bootstrap, topics.commands, launches)
    env = {key: value for key, value in os.environ.items() if not key.startswith("PLEDGEFLOW_")}
    env.update(
        PLEDGEFLOW_KAFKA_BOOTSTRAP=bootstrap,
        PLEDGEFLOW_TOPIC_PREFIX=prefix,
        PLEDGEFLOW_PARTITIONS=str(PARTITIONS),
        # Frozen while the pledges are preloaded: no rebalance meanwhile.
        PLEDGEFLOW_PROCESSOR_SESSION_TIMEOUT_MS="60000",
        PLEDGEFLOW_SNAPSHOT_EVERY_EVENTS="1000000",
    )
    workers: list[subprocess.Popen[bytes]] = []
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await admin.start()
    await consumer.start()
    try:
        for i in range(k):
            env_i = {**env, "PLEDGEFLOW_PROCESSOR_INSTANCE_ID": f"w{i}"}
            workers.append(spawn(env_i, log_dir / f"{prefix}w{i}.log"))

        async def joined() -> bool:
            for worker in workers:
                if worker.poll() is not None:
                    raise RuntimeError(f"a worker exited: see {log_dir}")
            response = (await admin.describe_consumer_groups([group]))[0]
            _error, _group, state, _ptype, _protocol, members, *_ = response.groups[0]
            return state == "Stable" and len(members) == k

        async def launched() -> bool:
            return await committed_total(admin, group, topics.commands) >= CAMPAIGNS

        await wait_for(joined, 90, f"{k} workers never formed a stable group")
        await wait_for(launched, 60, "launches not decided")
        for worker in workers:
            worker.send_signal(signal.SIGSTOP)
        await preload(bootstrap, topics.commands, pledges)
        end = CAMPAIGNS + len(pledges)
        tps = [TopicPartition(topics.commands, p) for p in range(PARTITIONS)]
        assert sum((await consumer.end_offsets(tps)).values()) == end

        cpu0 = [cpu_seconds(w.pid) for w in workers]
        busy0, total0 = machine_ticks()
        started = time.perf_counter()
        for worker in workers:
            worker.send_signal(signal.SIGCONT)

        async def drained() -> bool:
            return await committed_total(admin, group, topics.commands) >= end

        await wait_for(drained, 600, "not drained")
        seconds = time.perf_counter() - started
        cpu = [cpu_seconds(w.pid) - c for w, c in zip(workers, cpu0, strict=True)]
        busy1, total1 = machine_ticks()
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.send_signal(signal.SIGCONT)
                worker.send_signal(signal.SIGTERM)
        for worker in workers:
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.kill()
        await consumer.stop()
        await admin.close()
    decided = len(pledges)
    return {
        "workers": k,
        "commands": decided,
        "seconds": round(seconds, 3),
        "commands_per_second": round(decided / seconds, 1),
        "cpu_seconds_per_worker": [round(c, 3) for c in cpu],
        # Per worker: its CPU over the commands the group decided / k (the partitions are
        # spread evenly: 6 over 1, 2 or 3 workers).
        "cpu_us_per_command_per_worker": [round(c / (decided / k) * 1e6, 1) for c in cpu],
        "cpu_us_per_command_total": round(sum(cpu) / decided * 1e6, 1),
        # Cores the workers kept busy, against the whole machine's (broker and neighbours).
        "workers_busy_cores": round(sum(cpu) / seconds, 2),
        "machine_busy_cores": round((busy1 - busy0) / (total1 - total0) * (os.cpu_count() or 1), 2),
    }


async def main() -> None:
    bootstrap = kafka_bootstrap()
    run = f"bench-{uuid.uuid4().hex[:8]}"
    rounds = []
    with tempfile.TemporaryDirectory(prefix="bench-scaling-") as logs:
        try:
            for k in WORKERS:
                result = await run_round(bootstrap, f"{run}-{k}w.", k, Path(logs))
                rounds.append(result)
                print(
                    f"{k} worker(s): {result['commands_per_second']:>9,.0f} commands/s, "
                    f"CPU us/command per worker {result['cpu_us_per_command_per_worker']}, "
                    f"total {result['cpu_us_per_command_total']}; busy cores: workers "
                    f"{result['workers_busy_cores']}, machine {result['machine_busy_cores']}"
                )
        finally:
            await delete_topics(bootstrap, run)
    one, three = rounds[0], rounds[-1]
    write_result(
        "scaling",
        "commands decided per second by 3 processor workers (subprocesses, one group)",
        "commands/s",
        three["commands_per_second"],
        baseline=("1 worker", one["commands_per_second"]),
        target=Target(ratio=1.0),
        seed=SEED,
        extra={
            "commands": N - CAMPAIGNS,
            "partitions": PARTITIONS,
            "rounds": rounds,
            # Two shared cores: the broker and anything else running share them.
            "load_average_1m": round(os.getloadavg()[0], 2),
        },
    )


if __name__ == "__main__":
    asyncio.run(main())
