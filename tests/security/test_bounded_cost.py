"""What one client can make the service spend (issue 12): a batch pays per item, reads and
refused requests are rate-limited, a command for a campaign that does not exist leaves no
lasting state, and a Redis out of memory answers 503 (real broker and Redis)."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis

from services.pledge.adapters.redis_readmodel import Keys
from tests.support.api import (
    AUTH_A,
    api_client,
    api_settings,
    create_topics,
    free_port,
    new_id,
    pledge_body,
    read_model_whole,
    topic_values,
    write_headers,
)
from tests.support.infra import kafka_bootstrap, redis_url, unique_name

pytestmark = pytest.mark.integration

PROBLEM = "application/problem+json"


def batch(n: int, campaign_id: str = "c-1") -> dict[str, Any]:
    return {
        "pledges": [
            {**pledge_body(f"p-{i}", tier_id=None), "campaign_id": campaign_id} for i in range(n)
        ]
    }


async def test_a_batch_costs_one_token_per_item(broker: Any, redis_server: str) -> None:
    settings = api_settings(
        kafka_bootstrap(),
        redis_url(),
        unique_name("bc"),
        api_rate_per_second=0.01,
        api_rate_burst=5,
    )
    await create_topics(settings)
    await read_model_whole(settings)
    async with api_client(settings) as api:
        big = await api.post("/v1/pledges/batch", json=batch(6), headers=write_headers(new_id("k")))
        assert big.status_code == 429, big.text  # 6 items > 5 tokens
        assert big.headers["content-type"] == PROBLEM
        fits = await api.post(
            "/v1/pledges/batch", json=batch(5), headers=write_headers(new_id("k"))
        )
        assert fits.status_code == 202, fits.text
        after = await api.post(
            "/v1/pledges/batch", json=batch(1), headers=write_headers(new_id("k"))
        )
        assert after.status_code == 429


async def test_reads_and_refused_requests_are_rate_limited(broker: Any, redis_server: str) -> None:
    settings = api_settings(
        kafka_bootstrap(),
        redis_url(),
        unique_name("rg"),
        api_rate_per_second=0.01,
        api_rate_burst=3,
    )
    await create_topics(settings)
    await read_model_whole(settings)
    async with api_client(settings) as api:
        reads = [(await api.get("/v1/campaigns/c-1", headers=AUTH_A)).status_code for _ in range(5)]
        assert reads[:3] == [404, 404, 404] and reads[3:] == [429, 429]
    settings = api_settings(
        kafka_bootstrap(),
        redis_url(),
        unique_name("rr"),
        api_rate_per_second=0.01,
        api_rate_burst=3,
    )
    await create_topics(settings)
    await read_model_whole(settings)
    async with api_client(settings) as api:
        codes = []
        for _ in range(5):  # refused: malformed body
            response = await api.post(
                "/v1/campaigns/c-1/pledges", content=b"{", headers=write_headers(new_id("k"))
            )
            codes.append(response.status_code)
        assert codes[:3] == [422, 422, 422] and codes[3:] == [429, 429]


async def test_commands_for_a_campaign_that_does_not_exist_leave_no_lasting_state(
    broker: Any, redis_server: str
) -> None:
    settings = api_settings(kafka_bootstrap(), redis_url(), unique_name("uc"))
    await create_topics(settings)
    await read_model_whole(settings)
    epoch = Keys(settings.topic_prefix).projector_epoch().encode()
    campaign_id = new_id("ghost")
    async with api_client(settings) as api:
        answers = [
            await api.post(
                f"/v1/campaigns/{campaign_id}/pledges",
                json=pledge_body("p-1"),
                headers=write_headers(new_id("k")),
            ),
            await api.post(
                f"/v1/campaigns/{campaign_id}/pledges/p-1/cancel",
                headers=write_headers(new_id("k")),
            ),
            await api.post(
                f"/v1/campaigns/{campaign_id}/close",
                json={"reason": "creator_cancelled"},
                headers=write_headers(new_id("k")),
            ),
            await api.post(
                "/v1/pledges/batch",
                json=batch(3, campaign_id),
                headers=write_headers(new_id("k")),
            ),
        ]
    for response in answers[:3]:
        assert response.status_code == 404, response.text
    assert [r["status"] for r in answers[3].json()["results"]] == ["not_found"] * 3
    client = aioredis.Redis.from_url(settings.redis_url)
    try:
        namespace = f"{settings.topic_prefix}pf:"
        lasting = [
            key
            async for key in client.scan_iter(match=f"{namespace}*")
            if key != epoch and (campaign_id.encode() in key or await client.ttl(key) == -1)
        ]
        assert lasting == []
    finally:
        await client.aclose()
    assert [
        v for v in await topic_values(settings, "pledge-commands") if campaign_id.encode() in v
    ] == []


@pytest.fixture
def full_redis(tmp_path: Path) -> Iterator[str]:
    """A private redis-server with a tiny ``maxmemory`` and ``noeviction``, filled up."""
    port = free_port()
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(tmp_path), "--maxmemory", "4mb",
         "--maxmemory-policy", "noeviction"],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    client = redis.Redis(port=port)
    deadline = time.monotonic() + 30
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    try:
        filler = 0
        while True:
            try:
                client.set(f"fill:{filler}", b"x" * 65536)
            except redis.exceptions.OutOfMemoryError:
                break
            filler += 1
        client.config_set("maxmemory", "1mb")  # well below what is used: every write is OOM
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        client.close()
        proc.terminate()
        proc.wait(timeout=10)


async def test_redis_out_of_memory_answers_503_and_is_counted(broker: Any, full_redis: str) -> None:
    settings = api_settings(kafka_bootstrap(), full_redis, unique_name("oom"))
    await create_topics(settings)
    async with api_client(settings) as api:
        response = await api.post(
            "/v1/campaigns/c-1/pledges", json=pledge_body(), headers=write_headers(new_id("k"))
        )
        assert response.status_code == 503, response.text
        assert response.headers["content-type"] == PROBLEM
        assert response.json()["type"] == "https://pledgeflow.dev/problems/unavailable"
        assert "retry-after" in response.headers
        metrics = (await api.get("/metrics")).text
        assert "pledgeflow_api_redis_out_of_memory_total 1.0" in metrics


async def test_requests_with_a_wrong_key_are_rate_limited_per_address(
    broker: Any, redis_server: str
) -> None:
    settings = api_settings(
        kafka_bootstrap(),
        redis_url(),
        unique_name("ra"),
        api_rate_per_second=0.01,
        api_rate_burst=3,
    )
    await create_topics(settings)
    await read_model_whole(settings)
    async with api_client(settings) as api:
        wrong = {"Authorization": "Bearer guess-0123456789"}
        codes = [(await api.get("/v1/campaigns/c-1", headers=wrong)).status_code for _ in range(5)]
        assert codes == [401, 401, 401, 429, 429]
        assert (await api.get("/v1/campaigns/c-1", headers=AUTH_A)).status_code == 404


@pytest.mark.parametrize(
    "path",
    [
        "/v1/campaigns",
        "/v1/campaigns/c-1",
        "/v1/campaigns/c-1/pledges",
        "/v1/campaigns/c-1/events",
        "/v1/campaigns/c-1/settlement",
    ],
)
async def test_reads_answer_503_when_redis_is_out_of_memory(
    broker: Any, full_redis: str, path: str
) -> None:
    """A read's rate-limit write is refused by a full Redis: a 503 problem, never a 500."""
    settings = api_settings(kafka_bootstrap(), full_redis, unique_name("oomr"))
    await create_topics(settings)
    async with api_client(settings) as api:
        response = await api.get(path, headers=write_headers(new_id("k")))
        assert response.status_code == 503, response.text
        assert response.headers["content-type"] == PROBLEM
        assert "retry-after" in response.headers
