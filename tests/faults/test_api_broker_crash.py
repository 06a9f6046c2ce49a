"""SIGKILL and restart the Kafka broker under retrying API load: nothing lost or doubled.

The broker is a private one (its own ports and data), so the rest of the session keeps the
shared broker. The API, the processor and the projector run in-process. While clients send
pledges and retry each with the same Idempotency-Key until they get their 202, the broker is
killed without a clean shutdown and restarted: commands in flight may have been appended with
their acknowledgement lost. Afterwards every key's pledge is made exactly once (the idempotent
producer and the key-derived command ids must absorb the re-sends), retries replay the first
202, and the processor and the projector, which lived through the crash, show the pledges
accepted. Answers meanwhile may only be 202, 409 or 503 problem documents.
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest

from tests.support.api import (
    api_client,
    api_settings,
    create_topics,
    launched,
    processor,
    projector,
)
from tests.support.infra import PrivateBroker, redis_url, unique_name
from tests.support.load import RetryingLoad, assert_made_exactly_once, assert_projected

pytestmark = [pytest.mark.integration, pytest.mark.timeout(420)]

KEYS = 1500
CLIENTS = 16


async def test_a_broker_crash_under_retrying_load_loses_and_doubles_nothing(
    tmp_path: Path, redis_server: str
) -> None:
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    print(f"seed={seed}")
    broker = PrivateBroker(tmp_path / "kafka")
    broker.start()
    try:
        settings = api_settings(broker.bootstrap, redis_url(), unique_name("kc"))
        await create_topics(settings)
        keys = [f"k-{i}" for i in range(KEYS)]
        async with processor(settings), projector(settings), api_client(settings) as api:
            campaign_id = await launched(api)
            load = RetryingLoad(api, f"/v1/campaigns/{campaign_id}/pledges", keys, CLIENTS)
            load.start()
            await asyncio.sleep(rng.uniform(0.5, 1.5))
            made_before = len(load.first)
            assert made_before < KEYS  # the crash strikes while pledges are in flight
            broker.crash()
            await asyncio.sleep(1.0)
            await asyncio.to_thread(broker.start)
            await load.finish(within=180)
            print(f"202s before the crash: {made_before}, retries: {dict(load.outcomes)}")

            await assert_made_exactly_once(settings, campaign_id, load, within=120)
            sample = rng.sample(keys, 50)
            await load.assert_replays(sample)

            await assert_projected(load, sample, within=60)
    finally:
        broker.stop()
