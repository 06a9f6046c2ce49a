"""An Idempotency-Key reused with another body after Redis restarted or lost the key's record.

Redis is a private one started by ``deploy/local/redis/redis-up.sh`` (the local runs' own
configuration: AOF, fsync every second) on a free port and a data folder of the test's own;
the API, the processor and the projector run in-process on the shared broker.

* Redis SIGKILLed and restarted: the key's record survives (AOF), so the key reused with
  another body is still refused with 422 by the API.
* The key's record lost (deleted, as a Redis without persistence loses it): the API can no
  longer tell and appends the command, whose id is the first request's. The processor, which
  knows that command id decided another pledge, refuses the new one visibly
  (``idempotency_key_reused``), so it reads as rejected rather than ``pending`` forever, and
  the first pledge stays the only one made.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.pledge.adapters.redis_readmodel import Keys
from tests.support.api import (
    AUTH_A,
    api_client,
    api_settings,
    create_topics,
    eventually,
    free_port,
    launched,
    pledge_body,
    processor,
    projector,
    write_headers,
)
from tests.support.infra import ScriptRedis, unique_name
from tests.support.load import pledges_made

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


async def post_until_answered(api: httpx.AsyncClient, url: str, body: Any, key: str) -> Any:
    """POST, retrying while Redis is still coming back (503)."""
    for _ in range(200):
        response = await api.post(url, json=body, headers=write_headers(key))
        if response.status_code != 503:
            return response
        await asyncio.sleep(0.1)
    raise AssertionError("the API kept answering 503")


async def test_a_key_reused_with_another_body_is_refused_after_redis_restarts_or_loses_it(
    broker: Any, tmp_path: Path
) -> None:
    redis_server = ScriptRedis(tmp_path, free_port())
    redis_server.start()
    settings = api_settings(broker.bootstrap, redis_server.url, unique_name("ir"))
    await create_topics(settings)
    try:
        async with processor(settings), projector(settings), api_client(settings) as api:
            campaign_id = await launched(api)
            url = f"/v1/campaigns/{campaign_id}/pledges"
            first = await api.post(
                url,
                json=pledge_body("p-a", tier_id=None),
                headers=write_headers("k-reused", Prefer="wait=10"),
            )
            assert first.status_code == 201, first.text

            # Redis crashes and comes back: the key's record is still there.
            await asyncio.sleep(1.5)  # one appendfsync everysec period, and some
            redis_server.kill()
            await asyncio.to_thread(redis_server.start)
            other = await post_until_answered(
                api, url, pledge_body("p-b", tier_id=None, amount_minor=9900), "k-reused"
            )
            assert other.status_code == 422, other.text
            assert other.json()["type"].endswith("/idempotency-key-reused")

            # The record is lost: the processor refuses the reuse, visibly.
            import redis.asyncio as aioredis

            client = aioredis.Redis.from_url(redis_server.url)
            try:
                await client.delete(Keys(settings.topic_prefix).idempotency("tenant-a", "k-reused"))
            finally:
                await client.aclose()
            reused = await post_until_answered(
                api, url, pledge_body("p-b", tier_id=None, amount_minor=9900), "k-reused"
            )
            assert reused.status_code == 202, reused.text

            async def decided() -> Any:
                view = await api.get(f"{url}/p-b", headers=AUTH_A)
                if view.status_code != 200 or view.json()["status"] == "pending":
                    return None
                return view.json()

            view = await eventually(decided, within=30)
            assert view["status"] == "rejected", view
            assert view["reason"] == "idempotency_key_reused", view
            first_view = await api.get(f"{url}/p-a", headers=AUTH_A)
            assert first_view.json()["status"] == "accepted"
            assert await pledges_made(settings, campaign_id) == ["p-a"]
    finally:
        redis_server.stop()
