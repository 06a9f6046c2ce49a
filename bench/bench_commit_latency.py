"""Where the time from the API's 202 to the committed ``PledgeMade`` goes, hop by hop, at a
fixed rate: the api and processor processes only (the projector with ``--projector``), so a
change to the processor or the stream runtime is measured without the rest of the stack.

Per pledge (wall clock, ``time.time()`` on this machine, milliseconds):

* ``appended``: the command record's timestamp (the API appended it to its record batch);
* ``202``: the answer reached the client;
* ``command_seen``: a ``read_committed`` consumer in this process first sees the command (how
  soon any reader of ``pledge-commands`` can have it: the bench's own fetch delay);
* ``event_appended``: the ``PledgeMade`` record's timestamp (the processor appended it to
  its transaction's batch: it had read, decided and begun the transaction);
* ``committed``: the consumer first sees ``PledgeMade`` (its transaction's commit marker
  written);
* ``visible`` (``--projector``): the read-model row is no longer ``pending``.

First ``LONE`` pledges one at a time on the idle stack (each sent once the previous one is
committed): the floor of every hop, the baseline. Then pledges on a fixed open-loop timetable
(``--rate``, default 338/s: 25 % of the API's maximum measured on this box) for ``SECONDS``.
Reported: p50/p99 per hop, CPU ms per pledge of the api, processor and broker (the broker is
shared: its figure includes other work on the box), and the processor's transactions
(commit markers in the ``PledgeMade`` partitions) per pledge.

``python -m bench commit_latency``; ``python -m bench.bench_commit_latency --quick`` (3 s);
``--rate N``, ``--seconds S``, ``--projector``. Target: p99 202 -> committed <= 150 ms at the
rate (a 250 ms budget for 202 -> visible leaves the projector 100 ms).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, TopicPartition

from bench.bench_e2e_latency import KEY, TENANT, Load, ReadModelWatch, percentile
from bench.harness import Target, delete_topics, kafka_bootstrap, write_result
from bench.stack import (
    MachineLoad,
    PrivateRedis,
    Service,
    cpu_seconds,
    free_port,
    group_lag,
    stack_env,
    stop_all,
    wait_for,
)
from schemas.topics import Topics
from services.client import PledgeflowClient

PARTITIONS = 6
CAMPAIGNS = 100
LONE = 40
BOUND_MS = 150.0
HOPS = (
    ("202", "command_seen"),
    ("202", "event_appended"),
    ("event_appended", "committed"),
    ("202", "committed"),
    ("committed", "visible"),
    ("202", "visible"),
)


def broker_pid() -> int | None:
    """The local Kafka broker's process (for its CPU seconds), if it runs on this machine."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if b"kafka.Kafka" in cmdline and b"server.properties" in cmdline:
            return int(proc.name)
    return None


class HopWatch:
    """One ``read_committed`` consumer over ``pledge-commands`` and ``PledgeMade``: when each
    pledge's command and event were first seen, and their record timestamps."""

    def __init__(self, bootstrap: str, topics: Topics, fetch_max_wait_ms: int) -> None:
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            isolation_level="read_committed",
            enable_auto_commit=False,
            fetch_max_wait_ms=fetch_max_wait_ms,
        )
        self.commands = topics.commands
        self.made = topics.for_event("PledgeMade")
        self.tps = [
            TopicPartition(t, p) for t in (self.commands, self.made) for p in range(PARTITIONS)
        ]
        #: pledge id -> hop name -> seconds
        self.at: dict[str, dict[str, float]] = {}
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.consumer.start()
        self.consumer.assign(self.tps)
        await self.consumer.seek_to_end(*self.tps)
        for tp in self.tps:
            await self.consumer.position(tp)
        self.task = asyncio.create_task(self._run())

    async def ends(self) -> dict[TopicPartition, int]:
        return await self.consumer.end_offsets([tp for tp in self.tps if tp.topic == self.made])

    async def _run(self) -> None:
        while True:
            for tp, records in (await self.consumer.getmany(timeout_ms=100)).items():
                now = time.time()
                command = tp.topic == self.commands
                for record in records:
                    body = orjson.loads(record.value)
                    pledge = body.get("pledge_id") if command else body["payload"]["pledge_id"]
                    if pledge is None:
                        continue
                    hops = self.at.setdefault(pledge, {})
                    if command:
                        hops.setdefault("appended", record.timestamp / 1000)
                        hops.setdefault("command_seen", now)
                    else:
                        hops.setdefault("event_appended", record.timestamp / 1000)
                        hops.setdefault("committed", now)

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
        await self.consumer.stop()


def hop_figures(rows: Iterable[dict[str, float]]) -> dict[str, Any]:
    rows = list(rows)
    out: dict[str, Any] = {"pledges": len(rows)}
    for start, end in HOPS:
        values = [(r[end] - r[start]) * 1000 for r in rows if start in r and end in r]
        if values:
            out[f"{start}->{end}"] = {
                "p50": round(percentile(values, 0.5), 1),
                "p99": round(percentile(values, 0.99), 1),
                "max": round(max(values), 1),
            }
    return out


class MiniStack:
    def __init__(self, log_dir: Path, projector: bool) -> None:
        self.redis = PrivateRedis(log_dir)
        self.bootstrap = kafka_bootstrap()
        self.prefix = f"bench-hops-{uuid.uuid4().hex[:8]}."
        self.topics = Topics(prefix=self.prefix, partitions=PARTITIONS)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = stack_env(
            self.bootstrap,
            self.redis.url,
            self.prefix,
            PARTITIONS,
            PLEDGEFLOW_API_KEYS=f"{TENANT}:{KEY}",
            PLEDGEFLOW_API_PORT=str(self.port),
            PLEDGEFLOW_PROCESSOR_INSTANCE_ID=f"{self.prefix}processor-0",
            PLEDGEFLOW_API_RATE_PER_SECOND="1e9",
            PLEDGEFLOW_API_RATE_BURST="1000000000",
        )
        # Experiments, as in bench_e2e_latency: BENCH_E2E_PLEDGEFLOW_X=v sets PLEDGEFLOW_X=v.
        env.update(
            {
                key.removeprefix("BENCH_E2E_"): value
                for key, value in os.environ.items()
                if key.startswith("BENCH_E2E_PLEDGEFLOW_")
            }
        )
        names = ["api", "processor"] + (["projector"] if projector else [])
        self.services = {name: Service(name, env, log_dir) for name in names}

    async def start(self) -> None:
        self.redis.start()
        self.services["api"].start()  # creates the topics
        await wait_for(self._api_ready, 90, "api not ready", self.services.values())
        for name, service in self.services.items():
            if name != "api":
                service.start()

    async def _api_ready(self) -> bool:
        try:
            async with httpx.AsyncClient() as http:
                return (await http.get(self.url + "/readyz", timeout=1)).status_code == 200
        except httpx.HTTPError:
            return False

    async def launch(self, api: PledgeflowClient) -> None:
        """The campaigns, then wait until the processor has decided every command."""
        deadline = (datetime.now(UTC) + timedelta(days=30)).isoformat()
        for c in range(CAMPAIGNS):
            body = {"campaign_id": f"c-{c}", "title": f"Bench {c}", "creator_id": "creator-1",
                    "goal": {"amount_minor": 10**12, "currency": "EUR"}, "deadline": deadline,
                    "funding_model": "keep_it_all"}  # fmt: skip
            await api.launch_campaign(body, idempotency_key=f"launch-{c}")
        await self.caught_up(120)

    async def caught_up(self, within: float) -> None:
        group = f"{self.prefix}pledge-processor"

        async def done() -> bool:
            return await group_lag(self.bootstrap, group, [self.topics.commands], PARTITIONS) == 0

        await wait_for(done, within, "processor not caught up", self.services.values(), 0.5)

    def cpu(self) -> dict[str, float]:
        return {name: s.cpu_seconds() for name, s in self.services.items()}

    async def close(self) -> None:
        stop_all(self.services.values())
        self.redis.stop()
        await delete_topics(self.bootstrap, self.prefix)


async def lone(url: str, load: Load, hops: HopWatch, count: int, first: int) -> None:
    """``count`` pledges, each sent once the previous one's event is committed."""
    async with httpx.AsyncClient(base_url=url) as http:
        for i in range(first, first + count):
            campaign, pledge = load.pledge(i)
            body = {"pledge_id": pledge, "backer_id": f"b-{i}", "amount_minor": 2500,
                    "currency": "EUR", "payment_token": "tok_ok"}  # fmt: skip
            headers = {"Authorization": f"Bearer {KEY}", "Idempotency-Key": pledge}
            answer = await http.post(
                f"/v1/campaigns/{campaign}/pledges", json=body, headers=headers
            )
            if answer.status_code == 202:
                load.answered[i] = time.time()
                load.pending.add(i)
            deadline = time.monotonic() + 10
            while "committed" not in hops.at.get(pledge, {}) and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.002)
            await asyncio.sleep(0.05)
    load.sent = first + count


def rows(
    load: Load, hops: HopWatch, watch: ReadModelWatch | None, indexes: range
) -> list[dict[str, float]]:
    out = []
    for i in indexes:
        if i not in load.answered:
            continue
        row = dict(hops.at.get(load.pledge(i)[1], {}))
        row["202"] = load.answered[i]
        if watch is not None and i in watch.visible:
            row["visible"] = watch.visible[i]
        out.append(row)
    return out


async def main(args: argparse.Namespace) -> dict[str, Any]:
    broker = broker_pid()
    with tempfile.TemporaryDirectory(prefix="bench-hops-") as logs:
        stack = MiniStack(Path(logs), args.projector)
        redis_client = aioredis.Redis.from_url(stack.redis.url)
        try:
            await stack.start()
            async with PledgeflowClient(stack.url, KEY) as api:
                await stack.launch(api)
            load = Load(stack.url, uuid.uuid4().hex[:6])
            watch = ReadModelWatch(redis_client, stack.prefix, load) if args.projector else None
            if watch is not None:
                watch.start()
            hops = HopWatch(stack.bootstrap, stack.topics, args.fetch_max_wait_ms)
            await hops.start()
            await lone(stack.url, load, hops, LONE, 0)
            baseline = hop_figures(rows(load, hops, watch, range(0, LONE)))
            print(f"lone pledges: {baseline}", flush=True)
            ends0 = await hops.ends()
            cpu0, machine = stack.cpu(), MachineLoad()
            broker0 = cpu_seconds(broker) if broker else 0.0
            first = load.sent
            achieved = await load.open_loop(args.rate, args.seconds, first)
            await stack.caught_up(60)
            await asyncio.sleep(1.0)
            cpu = {name: round(v - cpu0[name], 3) for name, v in stack.cpu().items()}
            cpu["broker (shared)"] = round((cpu_seconds(broker) if broker else 0.0) - broker0, 3)
            busy = machine.busy_cores()
            ends1 = await hops.ends()
            indexes = range(first, load.sent)
            found = hop_figures(rows(load, hops, watch, indexes))
            made = sum(1 for i in indexes if "committed" in hops.at.get(load.pledge(i)[1], {}))
            markers = sum(ends1[tp] - ends0.get(tp, 0) for tp in ends1) - made
            n = max(found["pledges"], 1)
            found.update(
                rate=round(achieved, 1),
                cpu_seconds=cpu,
                cpu_ms_per_pledge={k: round(v / n * 1000, 3) for k, v in cpu.items()},
                transactions_per_pledge=round(markers / n, 3),
                machine_busy_cores=round(busy, 2),
            )
            print(f"at {args.rate:.0f}/s: {found}", flush=True)
            await hops.stop()
            if watch is not None:
                await watch.stop()
        finally:
            await redis_client.aclose()
            await stack.close()
    return {"lone": baseline, "rate": found}


def cli() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench_commit_latency")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rate", type=float, default=338.0)
    parser.add_argument("--seconds", type=float, default=None)
    parser.add_argument("--projector", action="store_true")
    parser.add_argument(
        "--fetch-max-wait-ms", type=int, default=500, help="of the bench's consumer (default 500)"
    )
    args = parser.parse_args()
    if args.seconds is None:
        args.seconds = 3.0 if args.quick else 10.0
    return args


if __name__ == "__main__":
    options = cli()
    result = asyncio.run(main(options))
    at_rate, floor = result["rate"], result["lone"]
    write_result(
        "commit_latency",
        f"p99 ms from the API's 202 to PledgeMade committed, at {options.rate:.0f} pledges/s "
        "(api + processor only)",
        "ms",
        at_rate["202->committed"]["p99"],
        baseline=(
            "p99 of lone pledges on the idle stack, same run",
            floor["202->committed"]["p99"],
        ),
        target=Target(value=BOUND_MS, lower_is_better=True),
        extra={"rate": at_rate, "lone": floor, "seconds": options.seconds},
    )
