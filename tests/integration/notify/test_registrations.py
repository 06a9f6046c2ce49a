"""Webhook endpoints and contacts registered through the notify router, recorded on the
compacted topics (real Kafka) with the endpoint view in real Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer

from schemas.topics import Topics
from services.notify.directory import Directory
from services.notify.ports import ERASED
from tests.support.api import AUTH_A, AUTH_B, api_client, api_settings, create_topics

pytestmark = pytest.mark.integration


@asynccontextmanager
async def client(
    bootstrap: str, redis_server: str, unique: str
) -> AsyncIterator[tuple[httpx.AsyncClient, Topics]]:
    """The ingest API app (which includes the notify router) in-process."""
    settings = api_settings(bootstrap, redis_server, unique, partitions=1)
    topics = await create_topics(settings)
    async with api_client(settings) as http:
        yield http, topics
    redis = aioredis.Redis.from_url(redis_server)
    keys_left = [k async for k in redis.scan_iter(match=f"{settings.topic_prefix}notify:*")]
    if keys_left:
        await redis.delete(*keys_left)
    await redis.aclose()


async def records(bootstrap: str, topic: str) -> list[tuple[str, bytes | None]]:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    try:
        out: list[tuple[str, bytes | None]] = []
        while batch := await consumer.getmany(timeout_ms=1000):
            for recs in batch.values():
                out.extend((r.key.decode(), r.value) for r in recs)
        return out
    finally:
        await consumer.stop()


async def test_endpoint_lifecycle_is_per_tenant_and_recorded_on_the_compacted_topic(
    bootstrap: str, redis_server: str, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PLEDGEFLOW_NOTIFY_ALLOW_PRIVATE_URLS", "true")
    async with client(bootstrap, redis_server, unique) as (http, topics):
        created = await http.post(
            "/v1/webhook-endpoints",
            json={"url": "http://127.0.0.1:9/hook", "event_types": ["GoalReached"]},
            headers=AUTH_A,
        )
        assert created.status_code == 201, created.text
        ep = created.json()
        assert ep["secret"].startswith("whsec_") and ep["event_types"] == ["GoalReached"]
        listed = (await http.get("/v1/webhook-endpoints", headers=AUTH_A)).json()["items"]
        assert listed == [{"id": ep["id"], "url": ep["url"], "event_types": ["GoalReached"]}]
        assert (await http.get("/v1/webhook-endpoints", headers=AUTH_B)).json()["items"] == []
        other = await http.get(f"/v1/webhook-endpoints/{ep['id']}", headers=AUTH_B)
        assert other.status_code == 404
        assert other.headers["content-type"] == "application/problem+json"

        rotated = await http.post(f"/v1/webhook-endpoints/{ep['id']}/rotate-secret", headers=AUTH_A)
        assert rotated.status_code == 200 and rotated.json()["secret"] != ep["secret"]
        assert (
            await http.delete(f"/v1/webhook-endpoints/{ep['id']}", headers=AUTH_B)
        ).status_code == 404
        assert (
            await http.delete(f"/v1/webhook-endpoints/{ep['id']}", headers=AUTH_A)
        ).status_code == 204
        assert (
            await http.get(f"/v1/webhook-endpoints/{ep['id']}", headers=AUTH_A)
        ).status_code == 404

        log = await records(bootstrap, topics.notify_endpoints)
        assert [k for k, _ in log] == [f"tenant-a/{ep['id']}"] * 3
        directory = Directory()
        for key, value in log[:2]:
            directory.apply_endpoint(key, value)
        [replayed] = directory.endpoints("tenant-a")
        assert (replayed.secret, replayed.previous_secret) == (
            rotated.json()["secret"],
            ep["secret"],
        )
        directory.apply_endpoint(*log[2])
        assert log[2][1] is None and directory.endpoints("tenant-a") == []


async def test_endpoint_registration_refuses_internal_urls_and_unknown_types(
    bootstrap: str, redis_server: str, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PLEDGEFLOW_NOTIFY_ALLOW_PRIVATE_URLS", "false")
    async with client(bootstrap, redis_server, unique) as (http, _):
        cases = [
            ({"url": "http://127.0.0.1:9/hook", "event_types": ["GoalReached"]}, "url"),
            ({"url": "http://169.254.169.254/", "event_types": ["GoalReached"]}, "url"),
            ({"url": "gopher://example.com/", "event_types": ["GoalReached"]}, "url"),
            ({"url": "https://example.com/", "event_types": ["PledgeTeleported"]}, "event_types"),
        ]
        for body, field in cases:
            answer = await http.post("/v1/webhook-endpoints", json=body, headers=AUTH_A)
            assert answer.status_code == 422, answer.text
            assert answer.headers["content-type"] == "application/problem+json"
            assert answer.json()["errors"][0]["field"] == field
        unauthenticated = await http.post("/v1/webhook-endpoints", json=cases[0][0])
        assert unauthenticated.status_code == 401
        shapeless = await http.post("/v1/webhook-endpoints", json={"url": 5}, headers=AUTH_A)
        assert shapeless.status_code == 422
        assert shapeless.headers["content-type"] == "application/problem+json"
        fields = {e["field"] for e in shapeless.json()["errors"]}
        assert fields == {"body.url", "body.event_types"}


async def test_contacts_are_recorded_and_erased_with_a_tombstone(
    bootstrap: str, redis_server: str, unique: str
) -> None:
    async with client(bootstrap, redis_server, unique) as (http, topics):
        put = await http.put(
            "/v1/backers/b-1", json={"email": "ana@example.org", "locale": "fr-FR"}, headers=AUTH_A
        )
        assert put.status_code == 200 and put.json()["locale"] == "fr-FR"
        creator = await http.put(
            "/v1/creators/u-9", json={"email": "u9@example.org"}, headers=AUTH_A
        )
        assert creator.status_code == 200
        bad = await http.put(
            "/v1/backers/b-1", json={"email": "nope", "locale": "fr"}, headers=AUTH_A
        )
        assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "email"
        bad = await http.put(
            "/v1/backers/b-1", json={"email": "a@b.org", "locale": "xx-nowhere"}, headers=AUTH_A
        )
        assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "locale"
        assert (await http.delete("/v1/backers/b-1", headers=AUTH_A)).status_code == 204

        directory = Directory()
        for key, value in await records(bootstrap, topics.notify_contacts):
            directory.apply_contact(key, value)
        assert directory.contact("tenant-a", "backer", "b-1") is ERASED
        assert directory.contact("tenant-a", "creator", "u-9").email == "u9@example.org"  # type: ignore[union-attr]
        assert directory.contact("tenant-b", "creator", "u-9") is None


async def test_a_retried_registration_with_an_idempotency_key_gets_the_same_endpoint(
    bootstrap: str, redis_server: str, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PLEDGEFLOW_NOTIFY_ALLOW_PRIVATE_URLS", "true")
    async with client(bootstrap, redis_server, unique) as (http, _):
        body = {"url": "http://127.0.0.1:9/hook", "event_types": ["GoalReached"]}
        headers = {**AUTH_A, "Idempotency-Key": "reg-1"}
        first = await http.post("/v1/webhook-endpoints", json=body, headers=headers)
        again = await http.post("/v1/webhook-endpoints", json=body, headers=headers)
        assert first.status_code == again.status_code == 201
        assert first.json() == again.json()
        other = await http.post(
            "/v1/webhook-endpoints", json={**body, "url": "http://127.0.0.1:9/x"}, headers=headers
        )
        assert other.status_code == 422
        assert other.json()["errors"][0]["field"] == "Idempotency-Key"
        listed = (await http.get("/v1/webhook-endpoints", headers=AUTH_A)).json()["items"]
        assert [e["id"] for e in listed] == [first.json()["id"]]
        # the same key from another tenant is another endpoint
        theirs = await http.post(
            "/v1/webhook-endpoints", json=body, headers={**AUTH_B, "Idempotency-Key": "reg-1"}
        )
        assert theirs.status_code == 201 and theirs.json()["id"] != first.json()["id"]


async def test_a_tenant_holds_at_most_the_configured_number_of_endpoints(
    bootstrap: str, redis_server: str, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each endpoint is a delivery per event for the notify worker and a row in an unpaged
    # listing: without a cap one API key could make both as large as it likes.
    monkeypatch.setenv("PLEDGEFLOW_NOTIFY_ALLOW_PRIVATE_URLS", "true")
    monkeypatch.setenv("PLEDGEFLOW_NOTIFY_MAX_ENDPOINTS_PER_TENANT", "2")
    body = {"url": "http://127.0.0.1:9/hook", "event_types": ["GoalReached"]}
    async with client(bootstrap, redis_server, unique) as (http, _):

        async def create(auth: dict[str, str], key: str) -> httpx.Response:
            return await http.post(
                "/v1/webhook-endpoints", json=body, headers={**auth, "Idempotency-Key": key}
            )

        first = await create(AUTH_A, "k1")
        assert first.status_code == 201 and (await create(AUTH_A, "k2")).status_code == 201
        refused = await create(AUTH_A, "k3")
        assert refused.status_code == 409, refused.text
        assert refused.headers["content-type"] == "application/problem+json"
        assert refused.json()["reason"] == "endpoint_limit_reached"
        assert (await create(AUTH_A, "k1")).json()["id"] == first.json()["id"]  # a retry
        assert (await create(AUTH_B, "k3")).status_code == 201  # per tenant
        gone = await http.delete(f"/v1/webhook-endpoints/{first.json()['id']}", headers=AUTH_A)
        assert gone.status_code == 204
        assert (await create(AUTH_A, "k3")).status_code == 201
        assert len((await http.get("/v1/webhook-endpoints", headers=AUTH_A)).json()["items"]) == 2


async def test_the_notify_routes_take_from_the_keys_rate_limit_bucket(
    bootstrap: str, redis_server: str, unique: str
) -> None:
    from tests.support.api import api_settings as settings_for

    settings = settings_for(
        bootstrap, redis_server, unique, partitions=1, api_rate_per_second=0.01, api_rate_burst=3
    )
    await create_topics(settings)
    async with api_client(settings) as http:
        codes = [
            (await http.get("/v1/webhook-endpoints", headers=AUTH_A)).status_code for _ in range(3)
        ]
        limited = [
            await http.get("/v1/webhook-endpoints", headers=AUTH_A),
            await http.put("/v1/backers/b-1", json={"email": "a@example.org"}, headers=AUTH_A),
            await http.get("/v1/webhook-endpoints/ep_x", headers=AUTH_A),
        ]
        assert codes == [200, 200, 200]
        assert [r.status_code for r in limited] == [429, 429, 429], limited[0].text
        assert all(r.headers["content-type"] == "application/problem+json" for r in limited)
        assert all(int(r.headers["retry-after"]) >= 1 for r in limited)
        assert (await http.get("/v1/webhook-endpoints", headers=AUTH_B)).status_code == 200


async def test_the_idempotency_key_is_read_as_on_every_other_write(
    bootstrap: str, redis_server: str, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 1-255 visible ASCII (400 idempotency-key-required otherwise), as the README and the
    # other writes say; this route had its own limit (200, answered 422).
    monkeypatch.setenv("PLEDGEFLOW_NOTIFY_ALLOW_PRIVATE_URLS", "true")
    body = {"url": "http://127.0.0.1:9/hook", "event_types": ["GoalReached"]}
    async with client(bootstrap, redis_server, unique) as (http, _):

        async def create(key: str) -> httpx.Response:
            headers = {**AUTH_A, "Idempotency-Key": key}
            return await http.post("/v1/webhook-endpoints", json=body, headers=headers)

        long_key = "k" * 255
        first = await create(long_key)
        assert first.status_code == 201, first.text
        assert (await create(f'"{long_key}"')).json()["id"] == first.json()["id"]  # sf-string
        for bad in ("k" * 256, "two words"):
            refused = await create(bad)
            assert refused.status_code == 400, refused.text
            assert refused.json()["type"].endswith("/idempotency-key-required")


async def test_bodies_are_bounded_and_must_be_json_as_on_every_other_write(
    bootstrap: str, redis_server: str, unique: str
) -> None:
    # These routes let FastAPI buffer any body whole (5 MB answered 422, after reading it)
    # and called a text/plain body invalid (422) where the rest of the API says 415.
    big = b'{"email": "a@example.org", "pad": "' + b"x" * 5_000_000 + b'"}'
    json_type = {"content-type": "application/json"}
    async with client(bootstrap, redis_server, unique) as (http, _):
        for method, path in (("PUT", "/v1/backers/b-1"), ("POST", "/v1/webhook-endpoints")):
            large = await http.request(method, path, content=big, headers={**AUTH_A, **json_type})
            assert large.status_code == 413, (path, large.text)
            assert large.json()["type"].endswith("/payload-too-large")
            text = await http.request(
                method, path, content=b"email=a", headers={**AUTH_A, "content-type": "text/plain"}
            )
            assert text.status_code == 415, (path, text.text)
        fine = await http.put(
            "/v1/backers/b-1",
            content=b'{"email": "a@example.org"}',
            headers={**AUTH_A, "content-type": "application/json; charset=utf-8"},
        )
        assert fine.status_code == 200, fine.text
