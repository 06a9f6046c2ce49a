"""Listing a large campaign's pledges page by page through the typed client.

A campaign of ``BENCH_LISTING_PLEDGES`` (default 100,000) accepted pledges is written into the
read model with the projector's own apply script (rows, status index sets and campaign index,
as the projector leaves them), each with a captured payment record in the settlement read
model (every item then carries a full ``payment``, read by the page's script), then listed
through ``GET /v1/campaigns/{id}/pledges`` of the real API (uvicorn, one worker) at
``limit=500``:

* ``client``: ``PledgeflowClient.pledges()`` (cursor handling, pydantic models per item);
* baseline, same run: the same pages fetched with plain httpx and ``orjson.loads`` (no models),
  so the ratio is the client's own cost.

Target: >= 20,000 items/s through the client. Server CPU and the client process's own CPU per
listed item are recorded beside. The two listings alternate ``BENCH_LISTING_ROUNDS`` times
(default 3) and each figure is the median of its rounds: on a shared box one round's rate
follows the load of that moment more than the code.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
import uuid
from typing import Any

import httpx
import orjson
import redis.asyncio as aioredis

from bench.bench_api import KEY, Server
from bench.harness import Target, kafka_bootstrap, redis_url, write_result
from schemas.tenancy import qualify
from services.pledge.adapters.redis_readmodel import APPLY_SCRIPT, Keys
from services.settlement.adapters.redis_readmodel import SettlementKeys

PLEDGES = int(os.environ.get("BENCH_LISTING_PLEDGES", "100000"))
ROUNDS = int(os.environ.get("BENCH_LISTING_ROUNDS", "3"))
PAGE = 500
CHUNK = 1000
TENANT = "bench"
CAMPAIGN = "c-listing"
#: How the read model stores it (tenant-qualified, see schemas.tenancy); the client uses
#: the tenant's own id.
STORED = qualify(TENANT, CAMPAIGN)


def _pledge_doc(pledge_id: str, seq: int) -> bytes:
    return orjson.dumps(
        {
            "pledge_id": pledge_id,
            "campaign_id": STORED,
            "status": "accepted",
            "backer_id": f"b-{seq}",
            "amount": {"amount_minor": 2500, "currency": "EUR"},
            "tier_id": None,
            "seq": seq,
            "reason": None,
            "detail": None,
            "tenant_id": TENANT,
        }
    )


_CAPTURED = {"status": "captured", "attempts": "1", "captured_minor": "2500"}


async def seed(prefix: str) -> None:
    """The campaign and its pledges, written as the projector writes them, and a captured
    payment record per pledge (the settlement projector's hash)."""
    keys = Keys(prefix)
    payments = SettlementKeys(prefix)
    client = aioredis.Redis.from_url(redis_url())
    try:
        apply = client.register_script(APPLY_SCRIPT.source)  # reloaded if Redis lost it
        summary = orjson.dumps({"campaign_id": STORED, "status": "open", "seq": 1})
        await apply(
            keys=[keys.campaign(STORED), keys.campaign_index(TENANT, "")],
            args=[0, 1, TENANT, summary, 600, f"cx:{STORED}", b"open"],
        )
        seq = 1
        index_base = keys.pledge_index(STORED, "")
        for start in range(0, PLEDGES, CHUNK):
            batch_keys: list[str] = [keys.campaign(STORED)]
            ops: list[Any] = []
            count = min(CHUNK, PLEDGES - start)
            paid = client.pipeline(transaction=False)
            for n in range(start, start + count):
                pledge_id = f"p-{uuid.uuid4().hex[:16]}"
                batch_keys += [keys.pledge(STORED, pledge_id), index_base]
                ops += ["set:accepted", _pledge_doc(pledge_id, n + 2), f"ix:{pledge_id}", b""]
                paid.hset(payments.pledge(STORED, pledge_id), mapping=_CAPTURED)
            await paid.execute()
            summary = orjson.dumps({"campaign_id": STORED, "status": "open", "seq": seq + 1})
            await apply(keys=batch_keys, args=[seq, seq + 1, TENANT, summary, 600, *ops])
            seq += 1
    finally:
        await client.aclose()


async def create_topics(prefix: str) -> list[str]:
    """The API's topics (it appends commands; none is sent here, but it checks them)."""
    from schemas.topics import Topics, ensure_topics

    topics = Topics(prefix=prefix)
    await ensure_topics(kafka_bootstrap(), topics)
    return [spec.name for spec in topics]


async def cleanup(prefix: str, topics: list[str]) -> None:
    from aiokafka.admin import AIOKafkaAdminClient

    client = aioredis.Redis.from_url(redis_url())
    try:
        found = [key async for key in client.scan_iter(match=f"{prefix}pf:*", count=5000)]
        for start in range(0, len(found), 5000):
            await client.unlink(*found[start : start + 5000])
    finally:
        await client.aclose()
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap())
    await admin.start()
    try:
        await admin.delete_topics(topics)
    finally:
        await admin.close()


async def through_client(url: str) -> tuple[int, float]:
    from services.client import PledgeflowClient

    async with PledgeflowClient(url, KEY) as api:
        started = time.perf_counter()
        count = 0
        async for _pledge in api.pledges(CAMPAIGN, limit=PAGE):
            count += 1
        return count, time.perf_counter() - started


async def plain_httpx(url: str) -> tuple[int, float]:
    headers = {"Authorization": f"Bearer {KEY}"}
    async with httpx.AsyncClient(base_url=url, headers=headers) as http:
        started = time.perf_counter()
        count = 0
        cursor: str | None = None
        while True:
            params: dict[str, Any] = {"limit": PAGE, **({"cursor": cursor} if cursor else {})}
            page = orjson.loads(
                (await http.get(f"/v1/campaigns/{CAMPAIGN}/pledges", params=params)).content
            )
            count += len(page["data"])
            cursor = page["next_cursor"]
            if cursor is None:
                return count, time.perf_counter() - started


def main() -> None:
    prefix = f"bench-list-{uuid.uuid4().hex[:6]}."
    env = {
        "PLEDGEFLOW_TOPIC_PREFIX": prefix,
        "PLEDGEFLOW_KAFKA_BOOTSTRAP": kafka_bootstrap(),
        "PLEDGEFLOW_REDIS_URL": redis_url(),
        "PLEDGEFLOW_API_KEYS": f"{TENANT}:{KEY}",
    }
    results: dict[str, Any] = {}
    topics = asyncio.run(create_topics(prefix))
    try:
        asyncio.run(seed(prefix))
        server = Server("services.pledge.api:create_app", 1, env)
        try:
            server.wait_ready()
            asyncio.run(plain_httpx(server.url))  # warm-up
            rounds: dict[str, list[dict[str, float]]] = {"plain_httpx": [], "client": []}
            for _ in range(ROUNDS):
                for name, run in (("plain_httpx", plain_httpx), ("client", through_client)):
                    cpu, own = server.cpu_seconds(), time.process_time()
                    count, seconds = asyncio.run(run(server.url))
                    cpu, own = server.cpu_seconds() - cpu, time.process_time() - own
                    if count != PLEDGES:
                        raise SystemExit(f"bench_api_listing: {name} listed {count} of {PLEDGES}")
                    figures = {
                        "items_per_s": round(count / seconds),
                        "server_cpu_us_per_item": round(cpu / count * 1e6, 2),
                        "client_cpu_us_per_item": round(own / count * 1e6, 2),
                        "load_average_1m": round(os.getloadavg()[0], 2),
                    }
                    rounds[name].append(figures)
                    print(f"{name:>12}: {figures}", flush=True)
            for name, runs in rounds.items():
                results[name] = {
                    "items": PLEDGES,
                    "rounds": len(runs),
                    **{m: statistics.median(r[m] for r in runs) for m in runs[0]},
                    "items_per_s_all": [r["items_per_s"] for r in runs],
                }
                print(f"{name:>12} (median): {results[name]}", flush=True)
        finally:
            server.stop()
    finally:
        asyncio.run(cleanup(prefix, topics))
    extra = {f"{k}_{m}": v for k, r in results.items() for m, v in r.items()}
    write_result(
        "api_listing_client",
        f"GET a {PLEDGES:,}-pledge campaign's pledges page by page ({PAGE}/page) via the client",
        "items/s",
        results["client"]["items_per_s"],
        baseline=("plain httpx + orjson, same pages", results["plain_httpx"]["items_per_s"]),
        target=Target(value=20_000),
        extra={"pledges": PLEDGES, "page": PAGE, **extra},
    )


if __name__ == "__main__":
    main()
