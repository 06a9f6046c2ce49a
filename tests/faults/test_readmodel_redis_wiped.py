"""Redis restarted empty under a running projector: the read model is rebuilt, no restart.

Redis is a private one (``deploy/local/redis/redis-up.sh`` on a free port); the API, the
processor and the projector run in-process on the shared broker. After pledges are projected,
Redis is SIGKILLed, its files deleted and it is started again - empty, as a Redis without
persistence (or a failover to an empty replica) comes back - and more pledges arrive. The
running projector must notice (its epoch marker is gone), count a ``redis_empty`` rebuild and
replay its partitions, so that every campaign reads again with all its pledges and
``pledgeflow audit verify --against-readmodel`` is clean; before, campaigns answered 404 and
later events were held back forever.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY

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

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

CAMPAIGNS = 4
PLEDGES = 10  # per campaign, before and again after the wipe


def rebuilds() -> float:
    value = REGISTRY.get_sample_value(
        "pledgeflow_readmodel_rebuilds_total", {"cause": "redis_empty"}
    )
    return value or 0.0


async def pledge_all(api: httpx.AsyncClient, campaigns: list[str], round_: int) -> None:
    for campaign_id in campaigns:
        for i in range(PLEDGES):
            while True:  # 503 while Redis comes back
                response = await api.post(
                    f"/v1/campaigns/{campaign_id}/pledges",
                    json=pledge_body(f"p-{round_}-{i}", tier_id=None),
                    headers=write_headers(f"k-{campaign_id}-{round_}-{i}"),
                )
                if response.status_code != 503:
                    break
                await asyncio.sleep(0.1)
            assert response.status_code == 202, response.text


async def all_projected(api: httpx.AsyncClient, campaigns: list[str], count: int) -> bool:
    for campaign_id in campaigns:
        view = await api.get(f"/v1/campaigns/{campaign_id}", headers=AUTH_A)
        if view.status_code != 200 or view.json()["pledge_count"] != count:
            return False
    return True


async def verify_against_readmodel(settings: Any) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.cli", "audit", "verify", "--from-kafka",
        "--bootstrap", settings.kafka_bootstrap, "--topic-prefix", settings.topic_prefix,
        "--against-readmodel", "--redis-url", settings.redis_url,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode()


async def test_a_running_projector_rebuilds_the_read_model_after_redis_comes_back_empty(
    broker: Any, tmp_path: Path
) -> None:
    redis_server = ScriptRedis(tmp_path, free_port())
    redis_server.start()
    settings = api_settings(broker.bootstrap, redis_server.url, unique_name("rw"))
    await create_topics(settings)
    try:
        async with processor(settings), projector(settings) as proj, api_client(settings) as api:
            campaigns = [await launched(api) for _ in range(CAMPAIGNS)]
            await pledge_all(api, campaigns, 1)
            await eventually(lambda: all_projected(api, campaigns, PLEDGES), within=30)
            before = rebuilds()

            redis_server.kill()
            redis_server.wipe_data()
            await asyncio.to_thread(redis_server.start)
            await pledge_all(api, campaigns, 2)

            await eventually(lambda: all_projected(api, campaigns, 2 * PLEDGES), within=30)
            assert proj.held_campaigns() == []
            assert rebuilds() == before + 1
            code, report = await verify_against_readmodel(settings)
            assert code == 0, report[-2000:]
    finally:
        redis_server.stop()
