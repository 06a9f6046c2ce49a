"""Processor recovery with 1,000,000 events in its partitions: snapshots vs a full replay.

The log: ``EVENTS`` campaign-stream events (1,000,000 by default) decided by the pure domain
(``tests.support.history``: launches, pledges, refusals, cancellations, goals, closes) and
replicated under new campaign ids and re-stamped hash chains, written straight to the event
topics of 6 partitions with one batching producer (going through the API would take an hour
on this box and measure the API, not recovery).

The worker is the real entry point (``python -m services.cli processor run``, a static group
member as ``make run`` and k8s run it). A trial starts it on that log, sends one
``LaunchCampaign`` probe per partition at once, and measures the time from the process start
until every probe's ``CampaignLaunched`` is committed: interpreter start, group join, rebuilding
all 6 partitions and the first decision on each, with the worker's CPU seconds until then.
The worker is then SIGKILLed and the next trial starts.

* measured: recovery from the processor's own snapshot round (written by the first trial's
  probes, which come after 1,000,000 events: over ``snapshot_every_events``);
* baseline, same run, same log: a full replay, the same worker with
  ``PLEDGEFLOW_PROCESSOR_USE_SNAPSHOTS=false``.

Trials alternate (full, snapshot, full, snapshot, ...) so both meet the same machine load.
Targets: with snapshots >= 10x faster than the full replay, and <= 10 s.

``python -m bench recovery`` (or ``python -m bench.bench_recovery [--quick]``: 50,000 events,
one trial each, a smoke run). ``BENCH_RECOVERY_EVENTS`` / ``BENCH_RECOVERY_TRIALS`` override.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from bench.harness import (
    Target,
    delete_topics,
    kafka_bootstrap,
    launch_command,
    redis_url,
    write_result,
)
from bench.stack import MachineLoad, Service, stack_env
from schemas import message_key
from schemas.topics import Topics, ensure_topics
from services.streams import key_partition

QUICK = "--quick" in sys.argv[1:]
EVENTS = int(os.environ.get("BENCH_RECOVERY_EVENTS", "50000" if QUICK else "1000000"))
TRIALS = int(os.environ.get("BENCH_RECOVERY_TRIALS", "1" if QUICK else "2"))
PARTITIONS = 6
SEED = 17
BOUND_S = 10.0
RATIO = 10.0


def history(n: int) -> list[bytes]:
    """``n`` campaign-stream events: a domain-decided history replicated (whole chains, each
    campaign's events in seq order; the last copy may stop inside a campaign's life)."""
    from tests.support.history import generate_history, replicate

    base = generate_history(
        campaigns=24, pledges=(150, 450), seed=SEED, prefix="rc-", settlement=False
    ).lines
    out: list[bytes] = []
    for line in replicate(base, -(-n // len(base))):
        out.append(line)
        if len(out) == n:
            break
    return out


async def write_log(bootstrap: str, prefix: str, lines: list[bytes]) -> float:
    """Produce ``lines`` to their event topics (key = campaign id); returns seconds taken."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=20, max_batch_size=1024 * 1024
    )
    await producer.start()
    started = time.perf_counter()
    try:
        for line in lines:
            raw = orjson.loads(line)
            await producer.send(
                prefix + raw["event_type"], line, key=message_key(raw["campaign_id"])
            )
        await producer.flush()
    finally:
        await producer.stop()
    return time.perf_counter() - started


def probe_ids(tag: str) -> list[str]:
    """One new campaign id per partition."""
    found: dict[int, str] = {}
    n = 0
    while len(found) < PARTITIONS:
        cid = f"probe-{tag}-{n}"
        found.setdefault(key_partition(message_key(cid), PARTITIONS), cid)
        n += 1
    return [found[p] for p in range(PARTITIONS)]


def launch(campaign_id: str) -> bytes:
    return launch_command(campaign_id, "Recovery probe")


async def trial(
    bootstrap: str, topics: Topics, env: dict[str, str], log_dir: Path, tag: str, snapshots: bool
) -> dict[str, Any]:
    """Start a worker, probe every partition, time until all probes are decided."""
    launched = [TopicPartition(topics.for_event("CampaignLaunched"), p) for p in range(PARTITIONS)]
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, isolation_level="read_committed", enable_auto_commit=False
    )
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await consumer.start()
    await producer.start()
    consumer.assign(launched)
    await consumer.seek_to_end(*launched)
    for tp in launched:
        await consumer.position(tp)
    probes = probe_ids(tag)
    worker = Service(
        "processor",
        env,
        log_dir,
        PLEDGEFLOW_PROCESSOR_USE_SNAPSHOTS="true" if snapshots else "false",
    )
    load = MachineLoad()
    try:
        worker.start()
        for cid in probes:  # waiting in the topic when the worker gets there
            await producer.send_and_wait(topics.commands, launch(cid), key=message_key(cid))
        waiting = set(probes)
        deadline = time.monotonic() + 600
        while waiting:
            worker.check()
            if time.monotonic() > deadline:
                raise TimeoutError(f"probes {sorted(waiting)} not decided")
            for records in (await consumer.getmany(timeout_ms=50)).values():
                for record in records:
                    waiting.discard(orjson.loads(record.value)["campaign_id"])
        took = time.monotonic() - worker.started_at
        cpu = worker.cpu_seconds()
        rss = worker.rss_bytes()
    finally:
        worker.kill()
        await consumer.stop()
        await producer.stop()
    return {
        "snapshots": snapshots,
        "seconds": round(took, 3),
        "cpu_seconds": round(cpu, 3),
        "rss_mib": round(rss / 2**20, 1),
        "machine_busy_cores": round(load.busy_cores(), 2),
    }


async def main() -> None:
    bootstrap = kafka_bootstrap()
    prefix = f"bench-recovery-{uuid.uuid4().hex[:8]}."
    topics = Topics(prefix=prefix, partitions=PARTITIONS)
    lines = history(EVENTS)
    print(f"log: {len(lines):,} events, {PARTITIONS} partitions", flush=True)
    env = stack_env(
        bootstrap,
        redis_url(),
        prefix,
        PARTITIONS,
        PLEDGEFLOW_PROCESSOR_INSTANCE_ID=f"{prefix}processor-0",
        # The default (50,000) unless the log is too small for a round per partition.
        PLEDGEFLOW_SNAPSHOT_EVERY_EVENTS=str(min(50_000, EVENTS // (PARTITIONS * 2))),
    )
    trials: list[dict[str, Any]] = []
    try:
        await ensure_topics(bootstrap, topics)
        wrote = await write_log(bootstrap, prefix, lines)
        print(f"written in {wrote:.1f} s ({len(lines) / wrote:,.0f} events/s)", flush=True)
        with tempfile.TemporaryDirectory(prefix="bench-recovery-") as logs:
            # The first trial replays in full and its probes make the snapshot round.
            for i in range(TRIALS):
                for snapshots in (False, True):
                    found = await trial(
                        bootstrap, topics, env, Path(logs), f"{i}{int(snapshots)}", snapshots
                    )
                    trials.append(found)
                    kind = "snapshots" if snapshots else "full replay"
                    print(
                        f"trial {i} {kind}: ready in {found['seconds']:.2f} s "
                        f"({found['cpu_seconds']:.2f} s CPU, RSS {found['rss_mib']} MiB, "
                        f"machine busy cores {found['machine_busy_cores']})",
                        flush=True,
                    )
    finally:
        await delete_topics(bootstrap, prefix)
    full = statistics.median(t["seconds"] for t in trials if not t["snapshots"])
    snap = statistics.median(t["seconds"] for t in trials if t["snapshots"])
    result = write_result(
        "recovery",
        f"seconds from a processor's restart to a decision on each of its {PARTITIONS} "
        f"partitions, {len(lines):,} events in them, from snapshots (median)",
        "s",
        snap,
        baseline=("full replay of the same log (no snapshots), same run", full),
        target=Target(value=BOUND_S, ratio=RATIO, lower_is_better=True),
        seed=SEED,
        extra={
            "events": len(lines),
            "partitions": PARTITIONS,
            "trials": trials,
            "events_per_second_full_replay": round(len(lines) / full),
            "cpu_us_per_event_full_replay": round(
                statistics.median(t["cpu_seconds"] for t in trials if not t["snapshots"])
                / len(lines)
                * 1e6,
                2,
            ),
            # CPU seconds (robust to the other work on the shared cores): full / snapshots.
            "cpu_ratio": round(
                statistics.median(t["cpu_seconds"] for t in trials if not t["snapshots"])
                / statistics.median(t["cpu_seconds"] for t in trials if t["snapshots"]),
                2,
            ),
            "load_average": os.getloadavg(),
        },
    )
    print(f"snapshots {snap:.2f} s vs full replay {full:.2f} s: ratio {result['ratio']}, "
          f"met {result['met']}")  # fmt: skip


if __name__ == "__main__":
    asyncio.run(main())
