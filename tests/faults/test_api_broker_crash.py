"""SIGKILL the Kafka broker under retrying API load: bounded 503s, nothing lost or doubled.

The broker is a private one (its own ports and data), so the rest of the session keeps the
shared broker. The API, the processor and the projector run in-process. While clients send
pledges and retry each with the same Idempotency-Key until they get their 202, the broker is
killed without a clean shutdown, stays down for longer than the API's send bound, and is
restarted: commands in flight may have been appended with their acknowledgement lost.

While it is down every write is answered within the bound (``api_send_timeout_seconds``):
503 problem documents with ``Retry-After``, never a hang, and a retry of the same request is
let through at once (the key stays reserved for it) rather than answered 409 until the
reservation expires. Afterwards every key's pledge is made exactly once (the idempotent
producer and the key-derived command ids absorb the re-sends), retries replay the first
202, and the processor and the projector, which lived through the crash, show the pledges
accepted.
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
    eventually,
    launched,
    processor,
    projector,
)
from tests.support.infra import PrivateBroker, redis_url, unique_name
from tests.support.load import RetryingLoad, assert_made_exactly_once, assert_projected

pytestmark = [pytest.mark.integration, pytest.mark.timeout(420)]

KEYS = 1500
CLIENTS = 16
#: the API's send bound in this test, and how long the broker stays down (well past it)
SEND_TIMEOUT_S = 2.0
DOWN_S = 6.0
#: scheduling slack on two shared cores above the bound
SLACK_S = 1.5


async def test_a_broker_crash_under_retrying_load_answers_in_bounded_time_and_loses_nothing(
    tmp_path: Path, redis_server: str
) -> None:
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    print(f"seed={seed}")
    broker = PrivateBroker(tmp_path / "kafka")
    broker.start()
    try:
        settings = api_settings(
            broker.bootstrap,
            redis_url(),
            unique_name("kc"),
            api_send_timeout_seconds=SEND_TIMEOUT_S,
        )
        await create_topics(settings)
        keys = [f"k-{i}" for i in range(KEYS)]
        async with processor(settings), projector(settings), api_client(settings) as api:
            campaign_id = await launched(api)
            load = RetryingLoad(api, f"/v1/campaigns/{campaign_id}/pledges", keys, CLIENTS)
            load.start()
            # Strike after a random share of the pledges, not after a fixed time: on an idle
            # box the whole load may take under a second.
            strike_at = rng.randint(50, KEYS // 3)

            async def reached() -> bool:
                return len(load.first) >= strike_at

            await eventually(reached, within=60, every=0.002)
            made_before = len(load.first)
            assert made_before < KEYS  # the crash strikes while pledges are in flight
            slowest_before = load.slowest
            await asyncio.to_thread(broker.crash)  # its wait for the exit must not block the loop
            await asyncio.sleep(DOWN_S)
            made_while_down = len(load.first) - made_before
            await asyncio.to_thread(broker.start)
            await load.finish(within=180)
            print(
                f"202s before the crash: {made_before}, while down: {made_while_down}, "
                f"retries: {dict(load.outcomes)}, slowest answer: {load.slowest:.2f} s "
                f"(before the crash {slowest_before:.2f} s)"
            )
            # Every write in flight was answered within the bound while the broker was down
            # (503 + Retry-After, checked by the load), and its retry was not held off by 409s.
            assert load.outcomes["503"] > 0
            assert load.slowest <= SEND_TIMEOUT_S + SLACK_S
            assert load.outcomes["409"] == 0

            await assert_made_exactly_once(settings, campaign_id, load, within=120)
            sample = rng.sample(keys, 50)
            await load.assert_replays(sample)

            await assert_projected(load, sample, within=60)
    finally:
        broker.stop()
