"""Listings, cursors and conditional GETs through the app over in-memory fakes.

The same rules against the real Redis (with the projector's index sets) are proven by
``tests/integration/test_listings.py``.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import orjson
import pytest

from schemas.tenancy import qualify
from services.pledge.adapters.redis_readmodel import CampaignRow, PledgeRow
from services.pledge.api.problems import PROBLEM_BASE
from tests.support.api import AUTH_A, AUTH_B
from tests.unit.pledge.api.conftest import Api


def _campaign(api: Api, campaign_id: str, tenant: str, status: str = "open", seq: int = 1) -> None:
    """A projected campaign, stored (as the projector does) under its tenant-qualified id."""
    qualified = qualify(tenant, campaign_id)
    api.fakes.readmodel.campaigns[qualified] = CampaignRow(
        seq=seq, tenant_id=tenant, doc={"campaign_id": qualified, "status": status, "seq": seq}
    )


def _pledge(
    api: Api, campaign_id: str, pledge_id: str, status: str = "accepted", tenant: str = "tenant-a"
) -> None:
    qualified = qualify(tenant, campaign_id)
    doc: dict[str, Any] = {"pledge_id": pledge_id, "campaign_id": qualified, "status": status}
    api.fakes.readmodel.pledges[(qualified, pledge_id)] = PledgeRow(status, doc, None)


def _events(api: Api, campaign_id: str, events: dict[int, bytes], tenant: str = "tenant-a") -> None:
    api.fakes.readmodel.events[qualify(tenant, campaign_id)] = events


def _with_cursor(url: str, cursor: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}cursor={cursor}"


async def _all(api: Api, url: str, auth: dict[str, str], **params: Any) -> list[Any]:
    items: list[Any] = []
    cursor = None
    while True:
        query = {**params, **({"cursor": cursor} if cursor else {})}
        response = await api.client.get(url, params=query, headers=auth)
        assert response.status_code == 200, response.text
        page = response.json()
        items.extend(page["data"])
        cursor = page["next_cursor"]
        if cursor is None:
            return items


async def test_campaigns_are_listed_per_tenant_in_id_order_by_status(api: Api) -> None:
    for i in range(7):
        _campaign(api, f"c-{i}", "tenant-a", "closed" if i % 3 == 0 else "open")
    _campaign(api, "c-other", "tenant-b")

    every = await _all(api, "/v1/campaigns", AUTH_A, limit=2)
    opened = await _all(api, "/v1/campaigns", AUTH_A, limit=2, status="open")

    assert [c["campaign_id"] for c in every] == [f"c-{i}" for i in range(7)]
    assert [c["campaign_id"] for c in opened] == ["c-1", "c-2", "c-4", "c-5"]
    assert [c["campaign_id"] for c in await _all(api, "/v1/campaigns", AUTH_B)] == ["c-other"]


async def test_pledges_page_by_status_and_another_tenant_gets_404(api: Api) -> None:
    _campaign(api, "c-1", "tenant-a")
    for i in range(5):
        _pledge(api, "c-1", f"p-{i}", "rejected" if i == 3 else "accepted")

    accepted = await _all(api, "/v1/campaigns/c-1/pledges", AUTH_A, limit=2, status="accepted")
    foreign = await api.client.get("/v1/campaigns/c-1/pledges", headers=AUTH_B)

    assert [p["pledge_id"] for p in accepted] == ["p-0", "p-1", "p-2", "p-4"]
    assert foreign.status_code == 404
    assert foreign.json()["type"] == PROBLEM_BASE + "not-found"


async def test_events_page_by_seq_after_after_seq(api: Api) -> None:
    _campaign(api, "c-1", "tenant-a", seq=5)
    _events(
        api,
        "c-1",
        {
            seq: orjson.dumps({"seq": seq, "campaign_id": "tenant-a/c-1", "event_type": "x"})
            for seq in range(1, 6)
        },
    )

    events = await _all(api, "/v1/campaigns/c-1/events", AUTH_A, limit=2, after_seq=1)

    assert [e["seq"] for e in events] == [2, 3, 4, 5]
    assert {e["campaign_id"] for e in events} == {"c-1"}  # the tenant's own id


async def test_same_ids_in_two_tenants_list_apart(api: Api) -> None:
    _campaign(api, "c-1", "tenant-a")
    _campaign(api, "c-1", "tenant-b", "closed")
    _pledge(api, "c-1", "p-a")
    _pledge(api, "c-1", "p-b", tenant="tenant-b")

    a = await _all(api, "/v1/campaigns/c-1/pledges", AUTH_A)
    b = await _all(api, "/v1/campaigns/c-1/pledges", AUTH_B)
    campaigns_b = await _all(api, "/v1/campaigns", AUTH_B)

    assert [(p["pledge_id"], p["campaign_id"]) for p in a] == [("p-a", "c-1")]
    assert [(p["pledge_id"], p["campaign_id"]) for p in b] == [("p-b", "c-1")]
    assert [(c["campaign_id"], c["status"]) for c in campaigns_b] == [("c-1", "closed")]


@pytest.mark.parametrize(
    ("url", "other"),
    [
        ("/v1/campaigns", "/v1/campaigns?status=open"),
        ("/v1/campaigns/c-1/pledges", "/v1/campaigns/c-2/pledges"),
        ("/v1/campaigns/c-1/events", "/v1/campaigns/c-2/events"),
    ],
)
async def test_a_cursor_of_another_listing_tenant_or_altered_is_refused(
    api: Api, url: str, other: str
) -> None:
    for campaign_id in ("c-1", "c-2"):
        _campaign(api, campaign_id, "tenant-a", seq=3)
        _pledge(api, campaign_id, "p-1")
        _pledge(api, campaign_id, "p-2")
        _events(api, campaign_id, {s: b'{"seq":%d}' % s for s in (1, 2, 3)})
    _campaign(api, "c-3", "tenant-a")
    _campaign(api, "c-b", "tenant-b")
    first = await api.client.get(url, params={"limit": 1}, headers=AUTH_A)
    cursor = first.json()["next_cursor"]
    assert cursor is not None
    head, _, mac = cursor.partition(".")
    altered = ("eA" if head[:2] != "eA" else "eB") + head[2:] + "." + mac

    answers = [
        await api.client.get(_with_cursor(other, cursor), headers=AUTH_A),
        await api.client.get(url, params={"cursor": cursor}, headers=AUTH_B),
        await api.client.get(url, params={"cursor": altered}, headers=AUTH_A),
        await api.client.get(url, params={"cursor": "garbage"}, headers=AUTH_A),
    ]

    assert (await api.client.get(url, params={"cursor": cursor}, headers=AUTH_A)).is_success
    for answer in answers:
        if answer.status_code == 404:  # tenant-b does not see c-1 at all
            continue
        assert answer.status_code == 400, answer.text
        assert answer.headers["content-type"] == "application/problem+json"
        assert answer.json()["type"] == PROBLEM_BASE + "invalid-cursor"
    assert answers[0].status_code == answers[2].status_code == answers[3].status_code == 400


@pytest.mark.parametrize("limit", ["0", "501", "x"])
async def test_a_limit_out_of_range_is_a_problem_naming_it(api: Api, limit: str) -> None:
    response = await api.client.get("/v1/campaigns", params={"limit": limit}, headers=AUTH_A)

    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "limit"


async def test_unknown_status_filter_is_a_problem_naming_it(api: Api) -> None:
    response = await api.client.get("/v1/campaigns", params={"status": "x"}, headers=AUTH_A)

    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "status"


async def test_campaign_etag_is_its_seq_and_if_none_match_answers_304(api: Api) -> None:
    _campaign(api, "c-1", "tenant-a", seq=4)
    first = await api.client.get("/v1/campaigns/c-1", headers=AUTH_A)
    etag = first.headers["etag"]

    same = await api.client.get("/v1/campaigns/c-1", headers={**AUTH_A, "If-None-Match": etag})
    _campaign(api, "c-1", "tenant-a", seq=5)
    changed = await api.client.get("/v1/campaigns/c-1", headers={**AUTH_A, "If-None-Match": etag})

    assert etag == '"4"'
    assert same.status_code == 304 and same.content == b""
    assert changed.status_code == 200 and changed.headers["etag"] == '"5"'


async def test_pledge_etag_changes_with_its_row(api: Api) -> None:
    _campaign(api, "c-1", "tenant-a")
    _pledge(api, "c-1", "p-1", "pending")
    etag = (await api.client.get("/v1/campaigns/c-1/pledges/p-1", headers=AUTH_A)).headers["etag"]
    conditional = {**AUTH_A, "If-None-Match": f'W/{etag}, "other"'}

    same = await api.client.get("/v1/campaigns/c-1/pledges/p-1", headers=conditional)
    _pledge(api, "c-1", "p-1", "accepted")
    changed = await api.client.get("/v1/campaigns/c-1/pledges/p-1", headers=conditional)

    assert same.status_code == 304
    assert changed.status_code == 200 and changed.headers["etag"] != etag


@pytest.mark.parametrize(
    "url", ["/v1/campaigns", "/v1/campaigns/c-1/pledges", "/v1/campaigns/c-1/events"]
)
async def test_a_listing_costs_a_rate_limit_token_like_any_get(api: Api, url: str) -> None:
    _campaign(api, "c-1", "tenant-a")
    api.fakes.gate.burst, api.fakes.gate.rate = 1, 0.25

    first = await api.client.get(url, headers=AUTH_A)
    limited = await api.client.get(url, headers=AUTH_A)

    assert first.status_code == 200, first.text
    assert limited.status_code == 429
    assert limited.json()["type"] == PROBLEM_BASE + "rate-limited"
    assert (await api.client.get(url, headers=AUTH_B)).status_code != 429  # per API key


async def test_a_listed_pledge_is_its_own_urls_body_expired_ones_included(api: Api) -> None:
    _campaign(api, "c-1", "tenant-a")
    _pledge(api, "c-1", "p-1", "pending")
    _pledge(api, "c-1", "p-2", "pending")
    stale = api.fakes.readmodel.pledges[("tenant-a/c-1", "p-1")]
    api.fakes.readmodel.pledges[("tenant-a/c-1", "p-1")] = dataclasses.replace(
        stale, pending_since=int(time.time() * 1000) - 10 * 24 * 3600 * 1000
    )

    listed = await _all(api, "/v1/campaigns/c-1/pledges", AUTH_A)
    single = [
        (await api.client.get(f"/v1/campaigns/c-1/pledges/{p}", headers=AUTH_A)).json()
        for p in ("p-1", "p-2")
    ]

    assert listed == single
    assert [p["status"] for p in listed] == ["expired", "pending"]


async def test_status_pending_leaves_out_pledges_whose_pending_state_expired(api: Api) -> None:
    _campaign(api, "c-1", "tenant-a")
    for i in range(6):
        _pledge(api, "c-1", f"p-{i}", "pending")
    rows = api.fakes.readmodel.pledges
    for i in (0, 2, 3):  # expired, between and around the live ones
        rows[("tenant-a/c-1", f"p-{i}")] = dataclasses.replace(
            rows[("tenant-a/c-1", f"p-{i}")], pending_since=int(time.time() * 1000) - 3601 * 1000
        )

    pending = await _all(api, "/v1/campaigns/c-1/pledges", AUTH_A, limit=2, status="pending")
    single = [
        (await api.client.get(f"/v1/campaigns/c-1/pledges/{p['pledge_id']}", headers=AUTH_A)).json()
        for p in pending
    ]

    assert [p["pledge_id"] for p in pending] == ["p-1", "p-4", "p-5"]
    assert pending == single and {p["status"] for p in single} == {"pending"}
    every = await _all(api, "/v1/campaigns/c-1/pledges", AUTH_A, limit=2)
    assert [p["status"] for p in every] == ["expired", "pending", "expired", "expired"] + [
        "pending"
    ] * 2
