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
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer

from schemas import decode
from services.pledge.config import PledgeSettings
from tests.support.api import (
    AUTH_A,
    api_settings,
    create_topics,
    free_port,
    launch_body,
    pledge_body,
    processor,
    projector,
    write_headers,
)
from tests.support.infra import REPO, redis_url, unique_name

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

KEYS = 3000
CLIENTS = 16
KILLS = 6


class ApiServer:
    """``pledgeflow api run`` in a subprocess, killable and restartable on the same port."""

    def __init__(self, settings: PledgeSettings, log_dir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
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
        self.log_dir = log_dir
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        log = (self.log_dir / f"api-{self.starts}.log").open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "services.cli", "api", "run"],
            cwd=REPO,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    async def ready(self, client: httpx.AsyncClient) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.proc is not None and self.proc.poll() is None, self.logs()
            try:
                if (await client.get(f"{self.url}/readyz", timeout=2)).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
        raise AssertionError(f"API not ready in 60 s:\n{self.logs()}")

    def kill(self) -> None:
        assert self.proc is not None and self.proc.poll() is None, self.logs()
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def logs(self) -> str:
        return (self.log_dir / f"api-{self.starts}.log").read_text(errors="replace")[-4000:]


async def pledges_made(settings: PledgeSettings, campaign_id: str) -> list[str]:
    """The pledge ids of every committed ``PledgeMade`` of the campaign, repeats included."""
    consumer = AIOKafkaConsumer(
        f"{settings.topic_prefix}PledgeMade",
        bootstrap_servers=settings.kafka_bootstrap,
        isolation_level="read_committed",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        found: list[str] = []
        while batch := await consumer.getmany(timeout_ms=1000):
            for records in batch.values():
                for record in records:
                    event = decode(record.value)
                    if event.campaign_id == campaign_id:
                        found.append(event.payload.pledge_id)
        return found
    finally:
        await consumer.stop()


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
    first: dict[str, httpx.Response] = {}
    outcomes: Counter[str] = Counter()
    async with (
        processor(settings),
        projector(settings),
        httpx.AsyncClient(limits=httpx.Limits(max_connections=CLIENTS)) as client,
    ):
        api.start()
        await api.ready(client)
        campaign_id = f"c-{unique_name()}"
        launched = await client.post(
            f"{api.url}/v1/campaigns",
            json=launch_body(campaign_id),
            headers=write_headers("launch", Prefer="wait=10"),
        )
        assert launched.status_code == 201, launched.text
        url = f"{api.url}/v1/campaigns/{campaign_id}/pledges"
        body = pledge_body(None, tier_id=None)

        async def until_accepted(key: str) -> None:
            while True:
                try:
                    response = await client.post(url, json=body, headers=write_headers(key))
                except httpx.TransportError:
                    outcomes["connection dropped"] += 1
                    await asyncio.sleep(0.05)
                    continue
                if response.status_code == 202:
                    first[key] = response
                    return
                # Killed mid-request (503: a dependency failed; 409: the key is still held).
                assert response.status_code in (409, 503), response.text
                outcomes[str(response.status_code)] += 1
                await asyncio.sleep(0.1)

        async def client_loop(share: list[str]) -> None:
            for key in share:
                await until_accepted(key)

        load = asyncio.gather(*(client_loop(keys[i::CLIENTS]) for i in range(CLIENTS)))
        kills_under_load = 0
        try:
            for _ in range(KILLS):
                await asyncio.sleep(rng.uniform(0.3, 1.5))
                if len(first) < KEYS:
                    kills_under_load += 1
                api.kill()
                api.start()
                await api.ready(client)
            await asyncio.wait_for(load, 120)
        finally:
            if not load.done():
                load.cancel()
        print(f"kills under load: {kills_under_load}, retries: {dict(outcomes)}")
        assert kills_under_load >= 2  # the faults struck while pledges were in flight
        assert outcomes["connection dropped"] > 0

        accepted = {response.json()["pledge_id"] for response in first.values()}
        assert len(accepted) == KEYS

        async def all_made() -> list[str] | None:
            made = await pledges_made(settings, campaign_id)
            return made if len(set(made)) >= KEYS else None

        deadline = time.monotonic() + 60
        while (made := await all_made()) is None:
            assert time.monotonic() < deadline, "not every accepted pledge was made"
            await asyncio.sleep(0.5)
        await asyncio.sleep(1.0)  # a second copy, if any, would have been decided by now
        made = await pledges_made(settings, campaign_id)
        print(f"made {len(made)} ({len(set(made))} distinct), accepted {len(accepted)}")
        assert [p for p, n in Counter(made).items() if n > 1] == []
        assert set(made) == accepted

        # A retry of any key replays its first answer, whichever process stored it.
        for key in rng.sample(keys, 100):
            again = await client.post(url, json=body, headers={**AUTH_A, "Idempotency-Key": key})
            assert again.status_code == 202, again.text
            assert again.content == first[key].content
        api.stop()
