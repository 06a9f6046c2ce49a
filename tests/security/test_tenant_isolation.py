"""Attacks of one tenant on another, through the API, against the real broker, Redis,
processor and projector (issue 12): pledge-id squatting, read-model key collisions, foreign
launches, the existence oracle; and two tenants using the same ids end to end."""

from __future__ import annotations

import asyncio
import logging
import sys
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest
import pytest_asyncio
from aiokafka import AIOKafkaConsumer

from schemas.tenancy import qualify
from schemas.topics import Topics
from services.pledge.config import PledgeSettings
from tests.support.api import (
    AUTH_A,
    AUTH_B,
    KEY_A,
    KEY_B,
    api_client,
    api_settings,
    create_topics,
    events_of,
    eventually,
    launch_body,
    new_id,
    pledge_body,
    processor,
    projector,
    write_headers,
)
from tests.support.infra import kafka_bootstrap, redis_url, unique_name

pytestmark = pytest.mark.integration

NOT_FOUND = "https://pledgeflow.dev/problems/not-found"


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def stack(
    broker: Any, redis_server: str
) -> AsyncIterator[tuple[PledgeSettings, httpx.AsyncClient]]:
    """API in-process + real processor + projector, on this module's own topics."""
    settings = api_settings(kafka_bootstrap(), redis_url(), unique_name("sec"))
    await create_topics(settings)
    async with processor(settings), projector(settings), api_client(settings) as client:
        yield settings, client


@pytest.fixture
def api(stack: tuple[PledgeSettings, httpx.AsyncClient]) -> httpx.AsyncClient:
    return stack[1]


async def launch(api: httpx.AsyncClient, campaign_id: str, auth: dict[str, str]) -> httpx.Response:
    return await api.post(
        "/v1/campaigns",
        json=launch_body(campaign_id, tiers=[]),
        headers=write_headers(new_id("k"), auth, Prefer="wait=10"),
    )


async def pledge(
    api: httpx.AsyncClient,
    campaign_id: str,
    pledge_id: str,
    auth: dict[str, str],
    *,
    wait: bool = True,
    **fields: Any,
) -> httpx.Response:
    extra = {"Prefer": "wait=10"} if wait else {}
    return await api.post(
        f"/v1/campaigns/{campaign_id}/pledges",
        json=pledge_body(pledge_id, tier_id=None, **fields),
        headers=write_headers(new_id("k"), auth, **extra),
    )


async def test_a_pledge_id_used_by_another_tenant_first_is_not_squatted(
    api: httpx.AsyncClient,
) -> None:
    campaign_id = new_id("c")
    squat = await pledge(api, campaign_id, "p1", AUTH_B, backer_id="b-squatter")
    assert squat.status_code in (404, 409), squat.text  # B's own namespace has no such campaign
    assert (await launch(api, campaign_id, AUTH_A)).status_code == 201
    mine = await pledge(api, campaign_id, "p1", AUTH_A, backer_id="b-owner")
    assert mine.status_code == 201, mine.text
    row = await api.get(f"/v1/campaigns/{campaign_id}/pledges/p1", headers=AUTH_A)
    assert row.status_code == 200
    assert row.json()["backer_id"] == "b-owner" and row.json()["status"] == "accepted"


async def test_a_colliding_campaign_and_pledge_id_neither_read_nor_overwrite(
    api: httpx.AsyncClient,
) -> None:
    base = new_id("acme")
    assert (await launch(api, f"{base}:spring", AUTH_A)).status_code == 201
    assert (await pledge(api, f"{base}:spring", "p1", AUTH_A, backer_id="b-a")).status_code == 201
    assert (await launch(api, base, AUTH_B)).status_code == 201
    read = await api.get(f"/v1/campaigns/{base}/pledges/spring:p1", headers=AUTH_B)
    assert read.status_code == 404 and read.json()["type"] == NOT_FOUND
    over = await pledge(api, base, "spring:p1", AUTH_B, backer_id="b-b")
    assert over.status_code == 201, over.text
    cancel = await api.post(
        f"/v1/campaigns/{base}/pledges/spring:p1/cancel",
        headers=write_headers(new_id("k"), AUTH_B, Prefer="wait=10"),
    )
    assert cancel.status_code == 200, cancel.text
    mine = await api.get(f"/v1/campaigns/{base}:spring/pledges/p1", headers=AUTH_A)
    assert mine.status_code == 200
    assert mine.json()["backer_id"] == "b-a" and mine.json()["status"] == "accepted"
    theirs = await api.get(f"/v1/campaigns/{base}/pledges/spring:p1", headers=AUTH_B)
    assert theirs.json()["backer_id"] == "b-b" and theirs.json()["status"] == "cancelled"


async def test_a_foreign_launch_of_an_owned_id_leaves_the_owners_stream_alone(
    stack: tuple[PledgeSettings, httpx.AsyncClient],
) -> None:
    settings, api = stack
    campaign_id = new_id("c")
    assert (await launch(api, campaign_id, AUTH_A)).status_code == 201
    theirs = await launch(api, campaign_id, AUTH_B)
    assert theirs.status_code == 201, theirs.text  # B's campaign of the same id is its own
    rejected = await events_of(settings, "PledgeRejected")
    launches = await events_of(settings, "CampaignLaunched")
    streams = {e.campaign_id for e in launches if e.campaign_id.endswith(campaign_id)}
    assert len(streams) == 2  # two streams, one per tenant
    assert not [e for e in rejected if e.campaign_id in streams]
    view = (await api.get(f"/v1/campaigns/{campaign_id}", headers=AUTH_A)).json()
    assert view["campaign_id"] == campaign_id and view["status"] == "open"


def _shape(response: httpx.Response, *ids: str) -> tuple[int, str, bytes]:
    """Status, content type and body with the request's own ids blanked."""
    body = response.content
    for value in ids:
        body = body.replace(value.encode(), b"<id>")
    return response.status_code, response.headers["content-type"], body


async def test_foreign_and_absent_campaigns_answer_alike_single_and_batch(
    api: httpx.AsyncClient,
) -> None:
    owned = new_id("c")
    assert (await launch(api, owned, AUTH_A)).status_code == 201
    absent = new_id("c")
    for verb in ("pledge", "cancel", "close", "get", "get-pledge"):
        answers = []
        for campaign_id in (owned, absent):
            if verb == "pledge":
                response = await pledge(api, campaign_id, "p1", AUTH_B, wait=False)
            elif verb == "cancel":
                response = await api.post(
                    f"/v1/campaigns/{campaign_id}/pledges/p1/cancel",
                    headers=write_headers(new_id("k"), AUTH_B),
                )
            elif verb == "close":
                response = await api.post(
                    f"/v1/campaigns/{campaign_id}/close",
                    json={"reason": "platform_suspended"},
                    headers=write_headers(new_id("k"), AUTH_B),
                )
            elif verb == "get":
                response = await api.get(f"/v1/campaigns/{campaign_id}", headers=AUTH_B)
            else:
                response = await api.get(f"/v1/campaigns/{campaign_id}/pledges/p1", headers=AUTH_B)
            answers.append(_shape(response, campaign_id))
        assert answers[0] == answers[1], verb
    items = [{**pledge_body("p9", tier_id=None), "campaign_id": c} for c in (owned, absent)]
    batch = await api.post(
        "/v1/pledges/batch", json={"pledges": items}, headers=write_headers(new_id("k"), AUTH_B)
    )
    assert batch.status_code == 202
    results = batch.json()["results"]
    first = orjson.dumps({k: v for k, v in results[0].items() if k != "index"}).replace(
        owned.encode(), b"<id>"
    )
    second = orjson.dumps({k: v for k, v in results[1].items() if k != "index"}).replace(
        absent.encode(), b"<id>"
    )
    assert first == second


async def test_two_tenants_use_the_same_ids_independently_end_to_end(
    stack: tuple[PledgeSettings, httpx.AsyncClient],
) -> None:
    settings, api = stack
    campaign_id = new_id("same")
    for auth, backer, amount in ((AUTH_A, "b-a", 2500), (AUTH_B, "b-b", 7000)):
        assert (await launch(api, campaign_id, auth)).status_code == 201
        made = await pledge(api, campaign_id, "p1", auth, backer_id=backer, amount_minor=amount)
        assert made.status_code == 201, made.text
        assert (await pledge(api, campaign_id, "p2", auth, backer_id=backer)).status_code == 201
    cancel = await api.post(
        f"/v1/campaigns/{campaign_id}/pledges/p2/cancel",
        headers=write_headers(new_id("k"), AUTH_A, Prefer="wait=10"),
    )
    assert cancel.status_code == 200, cancel.text
    close = await api.post(
        f"/v1/campaigns/{campaign_id}/close",
        json={"reason": "creator_cancelled"},
        headers=write_headers(new_id("k"), AUTH_B, Prefer="wait=10"),
    )
    assert close.status_code == 200, close.text

    async def views() -> Any:
        a = (await api.get(f"/v1/campaigns/{campaign_id}", headers=AUTH_A)).json()
        b = (await api.get(f"/v1/campaigns/{campaign_id}", headers=AUTH_B)).json()
        return (a, b) if b.get("status") == "closed" and a.get("pledge_count") == 1 else None

    a, b = await eventually(views)
    assert a["status"] == "open" and a["total"]["amount_minor"] == 2500
    assert b["pledge_count"] == 2 and b["total"]["amount_minor"] == 9500
    assert a["campaign_id"] == b["campaign_id"] == campaign_id
    for auth, backer, status in ((AUTH_A, "b-a", "cancelled"), (AUTH_B, "b-b", "accepted")):
        p2 = (await api.get(f"/v1/campaigns/{campaign_id}/pledges/p2", headers=auth)).json()
        assert p2["backer_id"] == backer and p2["status"] == status
        assert p2["campaign_id"] == campaign_id
    launches = await events_of(settings, "CampaignLaunched")
    streams = sorted(e.campaign_id for e in launches if e.campaign_id.endswith(campaign_id))
    assert len(streams) == 2
    for stream in streams:  # the auditor verifies each tenant's campaign on its own
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "services.cli", "audit", "verify", "--from-kafka",
            "--bootstrap", settings.kafka_bootstrap, "--topic-prefix", settings.topic_prefix,
            "--campaign", stream, "--json",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await process.communicate()
        assert process.returncode == 0, err.decode()
        report = orjson.loads(out)
        assert report["ok"] and report["campaigns"] == 1


async def test_no_log_problem_or_metric_contains_a_payment_token_or_an_api_key(
    api: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    # As in production (services.streams.process.configure_logging): aiokafka's DEBUG log
    # prints record keys and values, so it is never enabled (docs/security.md).
    caplog.set_level(logging.WARNING, logger="aiokafka")
    token = f"tok_secret_{uuid.uuid4().hex}"
    campaign_id = new_id("c")
    answers = [await launch(api, campaign_id, AUTH_A)]
    answers.append(await pledge(api, campaign_id, "p1", AUTH_A, payment_token=token))
    answers.append(await pledge(api, campaign_id, "p2", AUTH_A, payment_token=token * 20))
    answers.append(
        await pledge(api, campaign_id, "p3", AUTH_A, payment_token=token, amount_minor=-1)
    )
    answers.append(await pledge(api, new_id("absent"), "p4", AUTH_A, payment_token=token))
    answers.append(
        await api.post(
            f"/v1/campaigns/{campaign_id}/pledges",
            content=b'{"payment_token": "' + token.encode() + b'", ',
            headers=write_headers(new_id("k"), Prefer="wait=2"),
        )
    )
    answers.append(
        await api.get(f"/v1/campaigns/{campaign_id}", headers={"Authorization": f"Bearer {KEY_A}x"})
    )
    answers.append(await api.get(f"/v1/campaigns/{campaign_id}/pledges/p1", headers=AUTH_A))
    assert [a.status_code for a in answers] == [201, 201, 422, 422, 404, 422, 401, 200]
    metrics = (await api.get("/metrics")).text
    texts = [caplog.text, metrics] + [a.text + str(a.headers) for a in answers]
    for secret in (token, KEY_A, KEY_B):
        assert not [t for t in texts if secret in t], secret


async def test_a_payment_token_is_on_no_topic_but_its_erasable_one(
    stack: tuple[PledgeSettings, httpx.AsyncClient], redis_client: Any
) -> None:
    settings, api = stack
    token = f"tok_secret_{uuid.uuid4().hex}"
    campaign_id = new_id("c")
    assert (await launch(api, campaign_id, AUTH_A)).status_code == 201
    made = await pledge(api, campaign_id, "p1", AUTH_A, payment_token=token)
    assert made.status_code == 201
    items = [{**pledge_body("p2", tier_id=None, payment_token=token), "campaign_id": campaign_id}]
    batch = await api.post(
        "/v1/pledges/batch", json={"pledges": items}, headers=write_headers(new_id("k"))
    )
    assert batch.status_code == 202

    async def both_made() -> Any:
        made = await events_of(settings, "PledgeMade")
        return len([e for e in made if e.campaign_id == qualify("tenant-a", campaign_id)]) == 2

    await eventually(both_made)
    topics = Topics(prefix=settings.topic_prefix, partitions=settings.partitions)
    consumer = AIOKafkaConsumer(
        *[spec.name for spec in topics],
        bootstrap_servers=settings.kafka_bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    found: dict[str, list[tuple[bytes | None, bytes]]] = {}
    try:
        while batch_read := await consumer.getmany(timeout_ms=1500):
            for tp, records in batch_read.items():
                for r in records:
                    if token.encode() in (r.value or b"") + (r.key or b""):
                        found.setdefault(tp.topic, []).append((r.key, r.value or b""))
    finally:
        await consumer.stop()
    assert set(found) == {topics.payment_tokens}
    keys = sorted(key for key, _ in found[topics.payment_tokens] if key is not None)
    qualified = qualify("tenant-a", campaign_id)
    assert keys == [f"{qualified}/p1".encode(), f"{qualified}/p2".encode()]
    async for key in redis_client.scan_iter(match=f"{settings.topic_prefix}pf:*"):
        kind = await redis_client.type(key)
        if kind == b"hash":
            value: Any = await redis_client.hgetall(key)
        elif kind == b"zset":  # the listings' indexes and the events a listing shows
            value = await redis_client.zrange(key, 0, -1)
        else:
            value = await redis_client.get(key)
        assert token.encode() not in repr(value).encode(), key


async def test_another_tenant_cannot_list_or_page_a_campaign_and_same_ids_list_apart(
    stack: tuple[PledgeSettings, httpx.AsyncClient],
) -> None:
    """Listings under tenancy: tenant B, using A's very ids, neither lists A's campaign nor
    pages it with A's cursor; both tenants' same-named campaigns list their own pledges."""
    _settings, api = stack
    campaign_id = new_id("lst")
    assert (await launch(api, campaign_id, AUTH_A)).status_code == 201
    for pledge_id in ("p1", "p2", "p3"):
        assert (await pledge(api, campaign_id, pledge_id, AUTH_A)).status_code == 201
    pledges = f"/v1/campaigns/{campaign_id}/pledges"
    first = await api.get(pledges, params={"limit": 2}, headers=AUTH_A)
    assert first.status_code == 200, first.text
    page = first.json()
    assert [p["pledge_id"] for p in page["data"]] == ["p1", "p2"]
    assert {p["campaign_id"] for p in page["data"]} == {campaign_id}
    cursor = page["next_cursor"]
    # B has no campaign of that id: listing it, its events or paging with A's cursor is the
    # same 404 as a campaign that does not exist, and B's campaign list does not show it.
    absent = await api.get(f"/v1/campaigns/{new_id('none')}/pledges", headers=AUTH_B)
    for path, params in (
        (pledges, {}),
        (pledges, {"cursor": cursor}),
        (f"/v1/campaigns/{campaign_id}/events", {}),
    ):
        foreign = await api.get(path, params=params, headers=AUTH_B)
        assert foreign.status_code == 404 == absent.status_code, foreign.text
        assert foreign.json()["type"] == absent.json()["type"] == NOT_FOUND
    listed = (await api.get("/v1/campaigns", params={"limit": 500}, headers=AUTH_B)).json()
    assert campaign_id not in [c["campaign_id"] for c in listed["data"]]
    # Once B launches the same id, A's cursor is still refused on B's listing.
    assert (await launch(api, campaign_id, AUTH_B)).status_code == 201
    assert (await pledge(api, campaign_id, "p9", AUTH_B)).status_code == 201
    replayed = await api.get(pledges, params={"cursor": cursor}, headers=AUTH_B)
    assert replayed.status_code == 400, replayed.text
    assert replayed.json()["type"].endswith("/invalid-cursor")
    a_rest = (await api.get(pledges, params={"cursor": cursor}, headers=AUTH_A)).json()
    assert [p["pledge_id"] for p in a_rest["data"]] == ["p3"]
    assert a_rest["next_cursor"] is None
    b_all = (await api.get(pledges, headers=AUTH_B)).json()
    assert [p["pledge_id"] for p in b_all["data"]] == ["p9"]
    assert b_all["data"][0]["campaign_id"] == campaign_id
    for auth in (AUTH_A, AUTH_B):
        mine = (await api.get("/v1/campaigns", params={"limit": 500}, headers=auth)).json()
        assert [c["campaign_id"] for c in mine["data"]].count(campaign_id) == 1
        events = (await api.get(f"/v1/campaigns/{campaign_id}/events", headers=auth)).json()
        assert events["data"] and {e["campaign_id"] for e in events["data"]} == {campaign_id}
    a_events = await api.get(f"/v1/campaigns/{campaign_id}/events", headers=AUTH_A)
    assert b'"p3"' in a_events.content and b'"p9"' not in a_events.content
    assert b"tenant-a/" not in a_events.content  # the tenant's own ids, never qualified ones
