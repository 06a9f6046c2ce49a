"""Resident memory of every service at 100,000 open campaigns, against the same processes idle.

The stack is the real processes (``python -m services.cli ...``): api, processor, projector,
settlement and notify, on fresh topics (6 partitions) and a fresh Redis namespace. Once every
one is up (one campaign launched through the API and decided), each process's RSS is read from
``/proc`` (the baseline, same run). Redis is a private ``redis-server`` of the run (the shared
one's 512 MiB would not hold 100,000 campaigns beside everyone's data); its ``used_memory`` is
reported too. Then ``CAMPAIGNS`` ``LaunchCampaign`` commands are written
straight to ``pledge-commands`` with one batching producer (the log, not the API: the API holds
no campaign state, and 100,000 launches through it would measure it instead), and once every
service has caught up (the processor's and the projector's, settlement's and notify's consumer
groups at the end of what they read, every campaign listed open in the read model), the RSS of
each is read again. Reported per service: idle, at ``CAMPAIGNS`` campaigns, and bytes per
campaign; plus the CPU seconds each spent taking the campaigns in.

No target in the issue: the figures are recorded (``bench/README.md``). ``python -m bench
e2e_rss``; ``python -m bench.bench_e2e_rss --quick`` is a smoke run with 5,000 campaigns.
``BENCH_RSS_CAMPAIGNS`` overrides the count.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import redis.asyncio as aioredis

from bench.harness import Target, delete_topics, kafka_bootstrap, produce, write_result
from bench.stack import (
    MachineLoad,
    PrivateRedis,
    Service,
    free_port,
    group_lag,
    stack_env,
    stop_all,
    wait_for,
)
from schemas import LaunchCampaign, encode_command, message_key
from schemas.topics import Topics
from services.client import PledgeflowClient
from services.client.errors import NotFound
from services.pledge.adapters.redis_readmodel import Keys

QUICK = "--quick" in sys.argv[1:]
CAMPAIGNS = int(os.environ.get("BENCH_RSS_CAMPAIGNS", "5000" if QUICK else "100000"))
PARTITIONS = 6
TENANT = "bench"
KEY = "bench-rss-key-0123456789abcdef"
SERVICES = ("api", "processor", "projector", "settlement", "notify")
SETTLE_S = 3.0


def launches(n: int) -> list[tuple[bytes, bytes]]:
    """``(key, value)`` of ``n`` launches of open campaigns (tenant-qualified ids, as the API
    writes them), with deadlines a month out."""
    now = datetime.now(UTC)
    template = LaunchCampaign.model_validate(
        {
            "command_id": "launch-0",
            "tenant_id": TENANT,
            "correlation_id": "corr-0",
            "issued_at": now,
            "campaign_id": f"{TENANT}/r-0",
            "creator_id": "creator-1",
            "title": "Memory bench campaign",
            "goal": {"amount_minor": 5_000_000, "currency": "EUR"},
            "deadline": now + timedelta(days=30),
            "funding_model": "all_or_nothing",
            "settlement_mode": "authorize_then_capture",
            "commission_bps": 500,
        }
    )
    out = []
    for i in range(n):
        cid = f"{TENANT}/r-{i}"
        command = template.model_copy(
            update={"command_id": f"launch-{i}", "correlation_id": f"corr-{i}", "campaign_id": cid}
        )
        out.append((message_key(cid), encode_command(command)))
    return out


def rss(services: dict[str, Service]) -> dict[str, int]:
    return {name: s.rss_bytes() for name, s in services.items()}


async def main() -> None:
    bootstrap = kafka_bootstrap()
    prefix = f"bench-rss-{uuid.uuid4().hex[:8]}."
    topics = Topics(prefix=prefix, partitions=PARTITIONS)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    items = launches(CAMPAIGNS)
    with tempfile.TemporaryDirectory(prefix="bench-rss-") as logs:
        private = PrivateRedis(Path(logs)).start()
        redis_client = aioredis.Redis.from_url(private.url)
        env = stack_env(
            bootstrap,
            private.url,
            prefix,
            PARTITIONS,
            PLEDGEFLOW_API_KEYS=f"{TENANT}:{KEY}",
            PLEDGEFLOW_API_PORT=str(port),
            PLEDGEFLOW_PROCESSOR_INSTANCE_ID=f"{prefix}processor-0",
            PLEDGEFLOW_NOTIFY_DATA_DIR=str(Path(logs) / "notify-data"),
        )
        services = {name: Service(name, env, Path(logs)) for name in SERVICES}
        try:
            services["api"].start()  # creates the topics

            async def api_ready() -> bool:
                try:
                    async with httpx.AsyncClient() as http:
                        return (await http.get(url + "/readyz", timeout=1)).status_code == 200
                except httpx.HTTPError:
                    return False

            await wait_for(api_ready, 90, "api not ready", services.values())
            for name in SERVICES[1:]:
                services[name].start()
            deadline = (datetime.now(UTC) + timedelta(days=30)).isoformat()
            async with PledgeflowClient(url, KEY) as api:
                body = {"campaign_id": "warm-up", "title": "Warm-up", "creator_id": "creator-1",
                        "goal": {"amount_minor": 100_000, "currency": "EUR"},
                        "deadline": deadline, "funding_model": "keep_it_all"}  # fmt: skip
                for _attempt in range(120):
                    result = await api.launch_campaign(body, wait=1, idempotency_key="warm-up")
                    if result.status != "pending":
                        break
                    for service in services.values():
                        service.check()

                async def projected() -> bool:
                    try:
                        return (await api.get_campaign("warm-up")).status == "open"
                    except NotFound:
                        return False

                await wait_for(projected, 120, "warm-up campaign not projected", services.values())
            launched = topics.for_event("CampaignLaunched")

            async def caught_up_with(count: int) -> bool:
                lags = await asyncio.gather(
                    group_lag(bootstrap, f"{prefix}settlement", [launched], PARTITIONS),
                    group_lag(bootstrap, f"{prefix}notify", [launched], PARTITIONS),
                    group_lag(bootstrap, f"{prefix}pledge-processor", [topics.commands], 6),
                )
                listed = await redis_client.zcard(Keys(prefix).campaign_index(TENANT, "open"))
                # A transaction's commit marker may sit after a group's last offset.
                return listed >= count and all(lag <= 2 * PARTITIONS for lag in lags)

            await wait_for(lambda: caught_up_with(1), 120, "idle stack", services.values())
            await asyncio.sleep(SETTLE_S)
            idle = rss(services)
            redis_idle = private.used_memory()
            print("idle RSS MiB:", {k: round(v / 2**20, 1) for k, v in idle.items()}, flush=True)
            cpu0 = {name: s.cpu_seconds() for name, s in services.items()}
            machine = MachineLoad()
            started = time.monotonic()
            await produce(
                bootstrap, topics.commands, items, linger_ms=20, max_batch_size=1024 * 1024
            )
            await wait_for(
                lambda: caught_up_with(CAMPAIGNS + 1), 1800, "not caught up", services.values(), 1
            )
            took = time.monotonic() - started
            cpu = {name: round(s.cpu_seconds() - cpu0[name], 2) for name, s in services.items()}
            busy = machine.busy_cores()
            async with PledgeflowClient(url, KEY) as api:  # the API reading a few of them
                for i in range(0, CAMPAIGNS, max(1, CAMPAIGNS // 100)):
                    await api.get_campaign(f"r-{i}")
                await api.campaign_page(status="open")
            await asyncio.sleep(SETTLE_S)
            loaded = rss(services)
            redis_loaded = private.used_memory()
        finally:
            stop_all(services.values())
            await redis_client.aclose()
            private.stop()
            await delete_topics(bootstrap, prefix)
    per: dict[str, Any] = {}
    for name in SERVICES:
        per[name] = {
            "idle_mib": round(idle[name] / 2**20, 1),
            "loaded_mib": round(loaded[name] / 2**20, 1),
            "bytes_per_campaign": round((loaded[name] - idle[name]) / CAMPAIGNS),
            "cpu_seconds_to_catch_up": cpu[name],
        }
        print(f"{name:>10}: {per[name]}")
    total_idle, total_loaded = sum(idle.values()), sum(loaded.values())
    write_result(
        "e2e_rss",
        f"RSS of all five services (api, processor, projector, settlement, notify) at "
        f"{CAMPAIGNS:,} open campaigns",
        "MiB",
        total_loaded / 2**20,
        baseline=("the same processes idle (1 campaign), same run", total_idle / 2**20),
        target=Target(lower_is_better=True),
        extra={
            "campaigns": CAMPAIGNS,
            "partitions": PARTITIONS,
            "services": per,
            "redis_used_memory_mib": {
                "idle": round(redis_idle / 2**20, 1),
                "loaded": round(redis_loaded / 2**20, 1),
                "bytes_per_campaign": round((redis_loaded - redis_idle) / CAMPAIGNS),
            },
            "seconds_to_catch_up": round(took, 1),
            "machine_busy_cores": round(busy, 2),
            "load_average": os.getloadavg(),
        },
    )
    print(f"redis used_memory {redis_idle / 2**20:.0f} MiB idle -> "
          f"{redis_loaded / 2**20:.0f} MiB")  # fmt: skip
    print(f"total {total_idle / 2**20:.0f} MiB idle -> {total_loaded / 2**20:.0f} MiB at "
          f"{CAMPAIGNS:,} campaigns ({took:.0f} s to catch up)")  # fmt: skip


if __name__ == "__main__":
    asyncio.run(main())
