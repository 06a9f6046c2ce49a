"""SIGKILL the ingest API under load while platforms retry: every pledge made exactly once.

The API is the real entry point (``pledgeflow api run`` as a subprocess); the processor and
the projector run beside it. Clients send pledges without a ``pledge_id`` (the API derives it
from the Idempotency-Key), each retrying with the same key after a dropped connection, a 503
or a 409 (request in progress) until it gets its 202, while the API is killed with SIGKILL
several times and restarted. Afterwards every key's pledge must be in the log exactly once, no
other pledge may be there, and a retry of any key must replay the 202 it first got.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.pledge.config import PledgeSettings
from tests.support.api import (
    api_settings,
    create_topics,
    free_port,
    launched,
    processor,
    projector,
)
from tests.support.infra import redis_url, unique_name
from tests.support.load import RetryingLoad, assert_made_exactly_once
from tests.support.worker import ServiceProcess

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

KEYS = 3000
CLIENTS = 16
KILLS = 6


class ApiServer(ServiceProcess):
    """``pledgeflow api run``, restarted on the same port."""

    def __init__(self, settings: PledgeSettings, log_dir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {
            **os.environ,
            "PLEDGEFLOW_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
            "PLEDGEFLOW_REDIS_URL": settings.redis_url,
            "PLEDGEFLOW_TOPIC_PREFIX": settings.topic_prefix,
            "PLEDGEFLOW_PARTITIONS": str(settings.partitions),
            "PLEDGEFLOW_API_KEYS": settings.api_keys,
            "PLEDGEFLOW_API_PORT": str(self.port),
            # A request killed between its Kafka append and storing its response holds its
            # key this long; the retry after that re-sends the same command.
            "PLEDGEFLOW_API_IDEMPOTENCY_LOCK_SECONDS": "2",
        }
        super().__init__(["api", "run"], env, log_dir, "api")

    async def ready(self, client: httpx.AsyncClient) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.alive(), self.logs()
            try:
                if (await client.get(f"{self.url}/readyz", timeout=2)).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
        raise AssertionError(f"API not ready in 60 s:\n{self.logs()}")


async def test_sigkill_of_the_api_under_retrying_load_makes_each_pledge_exactly_once(
    broker: Any, redis_server: str, tmp_path: Path
) -> None:
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    print(f"seed={seed}")
    settings = api_settings(broker.bootstrap, redis_url(), unique_name("ak"))
    await create_topics(settings)
    api = ApiServer(settings, tmp_path)
    keys = [f"k-{i}" for i in range(KEYS)]
    async with (
        processor(settings),
        projector(settings),
        httpx.AsyncClient(limits=httpx.Limits(max_connections=CLIENTS)) as client,
    ):
        api.start()
        await api.ready(client)
        campaign_id = await launched(client, base=api.url)
        load = RetryingLoad(client, f"{api.url}/v1/campaigns/{campaign_id}/pledges", keys, CLIENTS)
        load.start()
        kills_under_load = 0
        for _ in range(KILLS):
            await asyncio.sleep(rng.uniform(0.3, 1.5))
            kills_under_load += not load.done
            api.kill()
            api.start()
            await api.ready(client)
        await load.finish(within=120)
        print(f"kills under load: {kills_under_load}, retries: {dict(load.outcomes)}")
        assert kills_under_load >= 2  # the faults struck while pledges were in flight
        assert load.outcomes["connection dropped"] > 0

        await assert_made_exactly_once(settings, campaign_id, load)
        # A retry of any key replays its first answer, whichever process stored it.
        await load.assert_replays(rng.sample(keys, 100))
        api.stop()
