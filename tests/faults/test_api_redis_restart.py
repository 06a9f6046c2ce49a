"""SIGKILL and restart Redis under retrying load: 503s while it is down, nothing lost or doubled.

Redis runs as a private ``redis-server`` with an fsync-always AOF (production keeps Redis on
AOF too), so a restart loses no acknowledged write. The API, the processor and the projector
run in-process on the shared broker. While clients send pledges and retry each with the same
Idempotency-Key until they get their 202, Redis is killed and restarted twice. The API must
answer 503 problem documents meanwhile (never a 500), to pledges, batches and reads alike;
afterwards every key's pledge is made exactly once, retries replay the first 202, and the
projector, which lived through the outages, shows the pledges accepted.
"""

from __future__ import annotations

import asyncio
import random
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

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
from tests.support.infra import unique_name
from tests.support.load import RetryingLoad, assert_made_exactly_once, assert_projected

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

KEYS = 1500
CLIENTS = 16
OUTAGES = 2


class PrivateRedis:
    """A ``redis-server`` of the test's own: SIGKILL and restart on the same port and data."""

    def __init__(self, data: Path) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.data = data
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "yes", "--appendfsync", "always", "--dir", str(self.data)],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        import redis

        client = redis.Redis(port=self.port)
        deadline = time.monotonic() + 30
        while True:
            try:
                client.ping()
                break
            except (redis.ConnectionError, redis.exceptions.BusyLoadingError):
                assert time.monotonic() < deadline, "private redis not ready in 30 s"
                time.sleep(0.05)
        client.close()

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


async def test_redis_restarts_under_retrying_load_answer_503_and_lose_nothing(
    broker: Any, tmp_path: Path
) -> None:
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    print(f"seed={seed}")
    redis_server = PrivateRedis(tmp_path)
    redis_server.start()
    settings = api_settings(broker.bootstrap, redis_server.url, unique_name("rr"))
    await create_topics(settings)
    keys = [f"k-{i}" for i in range(KEYS)]
    try:
        async with processor(settings), projector(settings), api_client(settings) as api:
            campaign_id = await launched(api)
            load = RetryingLoad(api, f"/v1/campaigns/{campaign_id}/pledges", keys, CLIENTS)
            load.start()
            outages_under_load = 0
            # Each outage strikes after a random share of the pledges, not after a fixed time:
            # on an idle box the whole load may take under a second.
            for strike_at in sorted(rng.sample(range(50, KEYS * 2 // 3), OUTAGES)):

                async def reached(strike_at: int = strike_at) -> bool:
                    return len(load.first) >= strike_at

                await eventually(reached, within=60, every=0.002)
                outages_under_load += not load.done
                redis_server.kill()
                await asyncio.sleep(0.2)
                # Reads and batches meet the outage too: 503 problem documents as well.
                for response in (
                    await api.get(f"/v1/campaigns/{campaign_id}", headers=AUTH_A),
                    await api.post(
                        "/v1/pledges/batch",
                        json={"pledges": [{**pledge_body(None), "campaign_id": campaign_id}]},
                        headers=write_headers(unique_name()),
                    ),
                ):
                    assert response.status_code == 503, response.text
                    assert response.headers["content-type"] == "application/problem+json"
                    assert response.headers["retry-after"] == "1"
                await asyncio.sleep(rng.uniform(0.3, 1.3))
                redis_server.start()
            await load.finish(within=120)
            print(f"outages under load: {outages_under_load}, answers: {dict(load.outcomes)}")
            assert outages_under_load == OUTAGES
            assert load.outcomes["503"] > 0

            await assert_made_exactly_once(settings, campaign_id, load)
            sample = rng.sample(keys, 50)
            await load.assert_replays(sample)

            await assert_projected(load, sample, within=30)
    finally:
        redis_server.stop()
