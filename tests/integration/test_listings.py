"""The listings, cursors and conditional GETs against the real Kafka, Redis, processor and
projector, through the typed client (``services.client``).

Each listing: tenant isolation, cursor tampering (another tenant's, another listing's, an
altered one), consistent paging while pledges arrive, and 304s on the single resources.
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry

from schemas.codec import verify_hash
from schemas.tenancy import qualify
from services.client import InvalidCursor, NotFound, PledgeflowClient
from services.pledge.adapters.redis_ingest import IngestStore
from services.pledge.adapters.redis_pipeline import AutoPipeline
from services.pledge.adapters.redis_readmodel import APPLY_SCRIPT, Keys, ReadModelStore
from services.pledge.api import create_app
from services.pledge.config import PledgeSettings
from tests.support.api import (
    KEY_A,
    KEY_B,
    api_settings,
    create_topics,
    eventually,
    launch_body,
    new_id,
    pledge_body,
    processor,
    projector,
)
from tests.support.infra import kafka_bootstrap, redis_url, unique_name

pytestmark = pytest.mark.integration


@dataclass
class Stack:
    settings: PledgeSettings
    a: PledgeflowClient
    b: PledgeflowClient


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def stack(broker: Any, redis_server: str) -> AsyncIterator[Stack]:
    """API in-process + real processor + projector, on this module's own topics; tenant A's
    and tenant B's clients. The module's Redis namespace is deleted afterwards."""
    settings = api_settings(kafka_bootstrap(), redis_url(), unique_name("list"))
    await create_topics(settings)
    app = create_app(settings, registry=CollectorRegistry())
    async with processor(settings), projector(settings), app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with (
            PledgeflowClient("http://api", KEY_A, transport=transport) as a,
            PledgeflowClient("http://api", KEY_B, transport=transport) as b,
        ):
            yield Stack(settings, a, b)
    client = aioredis.Redis.from_url(settings.redis_url)
    try:
        keys = [k async for k in client.scan_iter(match=f"{settings.topic_prefix}pf:*")]
        for start in range(0, len(keys), 1000):
            await client.unlink(*keys[start : start + 1000])
    finally:
        await client.aclose()


def _untiered(pledge_id: str) -> dict[str, Any]:
    return pledge_body(pledge_id, tier_id=None)


def _batched(campaign_id: str, pledge_id: str) -> dict[str, Any]:
    return {**_untiered(pledge_id), "campaign_id": campaign_id}


async def _launch(client: PledgeflowClient) -> str:
    campaign_id = new_id("c")
    decided = await client.launch_campaign(launch_body(campaign_id), wait=10)
    assert decided.status == "open"
    return campaign_id


async def _accepted(client: PledgeflowClient, campaign_id: str, count: int) -> None:
    async def all_in() -> bool:
        seen = [p async for p in client.pledges(campaign_id, status="accepted")]
        return len(seen) >= count

    await eventually(all_in, within=60)


# --- campaigns -----------------------------------------------------------------------------


async def test_campaigns_are_listed_per_tenant_by_status_and_a_foreign_cursor_refused(
    stack: Stack,
) -> None:
    mine = sorted([await _launch(stack.a) for _ in range(3)])
    theirs = await _launch(stack.b)
    await stack.a.close_campaign(mine[1], {"reason": "creator_cancelled"}, wait=10)

    listed = [c.campaign_id async for c in stack.a.campaigns(limit=1)]
    closed = [c.campaign_id async for c in stack.a.campaigns(status="closed", limit=1)]
    opened = [c.campaign_id async for c in stack.a.campaigns(status="open")]
    first = await stack.a.campaign_page(limit=1)
    assert first.next_cursor is not None

    assert [c for c in listed if c in mine] == mine and listed == sorted(listed)
    assert theirs not in listed and mine[1] in closed and mine[1] not in opened
    assert [c.campaign_id async for c in stack.b.campaigns()] == [theirs]
    with pytest.raises(InvalidCursor):  # tenant B replays tenant A's cursor
        await stack.b.campaign_page(cursor=first.next_cursor)
    with pytest.raises(InvalidCursor):  # same tenant, another status filter
        await stack.a.campaign_page(status="open", cursor=first.next_cursor)


# --- pledges -------------------------------------------------------------------------------


async def test_pledge_pages_stay_consistent_while_pledges_arrive(stack: Stack) -> None:
    campaign_id = await _launch(stack.a)
    before = [f"p-{uuid.uuid4().hex[:12]}" for _ in range(40)]
    await stack.a.batch_pledges(
        {"pledges": [{**_untiered(p), "campaign_id": campaign_id} for p in before]}
    )
    await _accepted(stack.a, campaign_id, len(before))

    seen: list[str] = []
    arriving: list[str] = []
    cursor: str | None = None
    while True:
        page = await stack.a.pledge_page(campaign_id, cursor=cursor, limit=6)
        seen.extend(p.pledge_id for p in page.data)
        # New pledges land anywhere in id order while we page: before and after the cursor.
        more = [f"p-{uuid.uuid4().hex[:12]}" for _ in range(3)]
        arriving.extend(more)
        await asyncio.gather(*(stack.a.make_pledge(campaign_id, _untiered(p)) for p in more))
        if page.next_cursor is None:
            break
        cursor = page.next_cursor

    assert len(seen) == len(set(seen)), "an item was shown twice"
    assert set(before) <= set(seen), "an item that existed when paging began was skipped"
    assert seen == sorted(seen)
    assert set(seen) <= set(before) | set(arriving)


async def test_pledge_listing_is_tenant_bound_and_cursors_are_listing_bound(
    stack: Stack,
) -> None:
    campaign_id = await _launch(stack.a)
    other_id = await _launch(stack.a)
    ids = [f"p-{i:02d}" for i in range(5)]
    for cid in (campaign_id, other_id):
        await stack.a.batch_pledges(
            {"pledges": [{**_untiered(p), "campaign_id": cid} for p in ids]}
        )
        await _accepted(stack.a, cid, len(ids))
    page = await stack.a.pledge_page(campaign_id, limit=2)
    assert page.next_cursor is not None
    head, _, mac = page.next_cursor.partition(".")
    altered = f"{head[:-1]}{'A' if head[-1] != 'A' else 'B'}.{mac}"

    with pytest.raises(NotFound):
        await stack.b.pledge_page(campaign_id)
    with pytest.raises(InvalidCursor):
        await stack.a.pledge_page(other_id, cursor=page.next_cursor)
    with pytest.raises(InvalidCursor):
        await stack.a.pledge_page(campaign_id, status="accepted", cursor=page.next_cursor)
    with pytest.raises(InvalidCursor):
        await stack.a.pledge_page(campaign_id, cursor=altered)
    rest = await stack.a.pledge_page(campaign_id, cursor=page.next_cursor, limit=10)
    assert [p.pledge_id for p in page.data + rest.data] == ids


async def test_a_pending_row_is_listed_as_pending_until_the_projector_decides(
    stack: Stack,
) -> None:
    """The two writers of a pledge row keep its index set in step: the API's pending row
    (after Kafka acked) and the projector's decision."""
    settings = stack.settings
    keys = Keys(settings.topic_prefix)
    client = aioredis.Redis.from_url(settings.redis_url)
    pipeline = AutoPipeline(client)
    store = IngestStore(
        pipeline, keys, rate_per_second=1e6, burst=10**6, lock_seconds=30, ttl_seconds=60
    )
    reads = ReadModelStore(client, keys)
    campaign_id = new_id("c-direct")
    try:
        await store.load_scripts()
        await reads.load_scripts()
        store.complete(
            tenant_id="tenant-a",
            idempotency_key=new_id("k"),
            fingerprint="0" * 64,
            status=202,
            body=b"{}",
            pending_pledges=[(campaign_id, "p-1", b'{"pledge_id":"p-1"}')],
        )
        await pipeline.execute("PING")
        pending, _ = await reads.pledge_page(campaign_id, "pending", "", 10)
        await client.evalsha(
            APPLY_SCRIPT.sha,
            3,
            keys.campaign(campaign_id),
            keys.pledge(campaign_id, "p-1"),
            keys.pledge_index(campaign_id, ""),
            0,
            1,
            "tenant-a",
            b"{}",
            60,
            "set:accepted",
            b'{"pledge_id":"p-1","status":"accepted"}',
            "ix:p-1",
            b"",
        )
        after_pending, _ = await reads.pledge_page(campaign_id, "pending", "", 10)
        accepted, _ = await reads.pledge_page(campaign_id, "accepted", "", 10)
        every, _ = await reads.pledge_page(campaign_id, "all", "", 10)

        assert [r.status for r in pending] == ["pending"]
        assert after_pending == []
        assert [r.doc["pledge_id"] for r in accepted] == ["p-1"]
        assert [r.status for r in every] == ["accepted"]
    finally:
        await pipeline.aclose()
        await client.aclose()


# --- events --------------------------------------------------------------------------------


async def test_events_come_in_seq_order_with_their_chain_and_are_tenant_bound(
    stack: Stack,
) -> None:
    campaign_id = await _launch(stack.a)
    for i in range(4):
        await stack.a.make_pledge(campaign_id, _untiered(f"p-{i}"), wait=10)

    events = [e async for e in stack.a.events(campaign_id, limit=2)]
    later = [e.seq async for e in stack.a.events(campaign_id, after_seq=3)]
    page = await stack.a.event_page(campaign_id, limit=2)

    assert [e.seq for e in events] == [1, 2, 3, 4, 5]
    assert [e.event_type for e in events] == ["CampaignLaunched"] + ["PledgeMade"] * 4
    assert all(e.prev_hash == p.hash for p, e in itertools.pairwise(events))
    assert {e.campaign_id for e in events} == {campaign_id}  # the tenant's own id
    # Each as the processor hashed it, under the tenant-qualified id.
    hashed = [{**e.model_dump(), "campaign_id": qualify("tenant-a", campaign_id)} for e in events]
    assert all(verify_hash(event) for event in hashed)
    assert later == [4, 5]
    with pytest.raises(NotFound):
        await stack.b.event_page(campaign_id)
    with pytest.raises(InvalidCursor):
        await stack.a.pledge_page(campaign_id, cursor=page.next_cursor)


# --- conditional GETs ----------------------------------------------------------------------


async def test_single_resources_answer_304_until_they_change(stack: Stack) -> None:
    campaign_id = await _launch(stack.a)
    await stack.a.make_pledge(campaign_id, _untiered("p-1"), wait=10)
    path = f"/v1/campaigns/{campaign_id}"
    first = await stack.a.request("GET", path)
    pledge = await stack.a.request("GET", f"{path}/pledges/p-1")

    same = await stack.a.request("GET", path, headers={"If-None-Match": first.headers["etag"]})
    same_pledge = await stack.a.request(
        "GET", f"{path}/pledges/p-1", headers={"If-None-Match": pledge.headers["etag"]}
    )
    await stack.a.cancel_pledge(campaign_id, "p-1", wait=10)
    changed = await stack.a.request("GET", path, headers={"If-None-Match": first.headers["etag"]})
    changed_pledge = await stack.a.request(
        "GET", f"{path}/pledges/p-1", headers={"If-None-Match": pledge.headers["etag"]}
    )

    assert first.headers["etag"] == '"2"'
    assert (same.status_code, same_pledge.status_code) == (304, 304)
    assert changed.status_code == 200 and changed.headers["etag"] == '"3"'
    assert changed_pledge.status_code == 200 and changed_pledge.json()["status"] == "cancelled"
    with pytest.raises(NotFound):
        await stack.b.request("GET", path, headers={"If-None-Match": first.headers["etag"]})
