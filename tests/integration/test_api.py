"""The ingest API through HTTP, against the real broker, Redis, processor and projector."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio

from schemas.tenancy import qualify
from services.pledge.config import PledgeSettings
from tests.support.api import (
    AUTH_A,
    AUTH_B,
    api_client,
    api_settings,
    create_topics,
    events_of,
    eventually,
    launch_body,
    launched,
    new_id,
    pledge_body,
    processor,
    projector,
    read_model_whole,
    uvicorn_server,
    write_headers,
)
from tests.support.infra import kafka_bootstrap, redis_url, unique_name

pytestmark = pytest.mark.integration

PROBLEM = "application/problem+json"


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def stack(
    broker: Any, redis_server: str
) -> AsyncIterator[tuple[PledgeSettings, httpx.AsyncClient]]:
    """API in-process + real processor + projector, on this module's own topics."""
    settings = api_settings(kafka_bootstrap(), redis_url(), unique_name("api"))
    await create_topics(settings)
    async with processor(settings), projector(settings), api_client(settings) as client:
        yield settings, client


@pytest.fixture
def api(stack: tuple[PledgeSettings, httpx.AsyncClient]) -> httpx.AsyncClient:
    return stack[1]


# --- happy paths ---------------------------------------------------------------------------


async def test_launch_answers_202_and_the_campaign_appears_in_the_read_model(
    api: httpx.AsyncClient,
) -> None:
    campaign_id = new_id("c")
    response = await api.post(
        "/v1/campaigns", json=launch_body(campaign_id), headers=write_headers(new_id("k"))
    )
    assert response.status_code == 202
    assert response.json() == {
        "campaign_id": campaign_id,
        "status": "pending",
        "status_url": f"/v1/campaigns/{campaign_id}",
    }

    async def summary() -> Any:
        got = await api.get(f"/v1/campaigns/{campaign_id}", headers=AUTH_A)
        return got.json() if got.status_code == 200 else None

    view = await eventually(summary)
    assert view["status"] == "open" and view["outcome"] is None
    assert view["goal"] == {"amount_minor": 500000, "currency": "EUR"}
    assert view["total"] == {"amount_minor": 0, "currency": "EUR"}
    assert view["pledge_count"] == 0 and view["goal_reached_at"] is None
    assert view["tiers"][0]["tier_id"] == "t1" and view["tiers"][0]["remaining"] == 1
    assert view["seq"] == 1


async def test_launch_without_campaign_id_generates_one_stable_per_idempotency_key(
    api: httpx.AsyncClient,
) -> None:
    body = launch_body("x")
    del body["campaign_id"]
    key = new_id("k")
    first = await api.post("/v1/campaigns", json=body, headers=write_headers(key))
    again = await api.post("/v1/campaigns", json=body, headers=write_headers(key))
    assert first.status_code == 202
    assert first.json()["campaign_id"].startswith("c-")
    assert again.json() == first.json()


async def test_pledge_answers_202_with_a_status_url_that_reports_the_decision(
    api: httpx.AsyncClient,
) -> None:
    campaign_id = await launched(api)
    response = await api.post(
        f"/v1/campaigns/{campaign_id}/pledges",
        json=pledge_body("p-1"),
        headers=write_headers(new_id("k")),
    )
    assert response.status_code == 202
    body = response.json()
    assert body == {
        "pledge_id": "p-1",
        "campaign_id": campaign_id,
        "status": "pending",
        "status_url": f"/v1/campaigns/{campaign_id}/pledges/p-1",
    }

    async def accepted() -> Any:
        got = (await api.get(body["status_url"], headers=AUTH_A)).json()
        return got if got["status"] == "accepted" else None

    view = await eventually(accepted)
    assert view["amount"] == {"amount_minor": 2500, "currency": "EUR"}
    assert view["tier_id"] == "t1" and view["seq"] == 2 and view["reason"] is None


async def test_prefer_wait_returns_201_when_the_processor_accepts(api: httpx.AsyncClient) -> None:
    campaign_id = await launched(api)
    response = await api.post(
        f"/v1/campaigns/{campaign_id}/pledges",
        json=pledge_body("p-1"),
        headers=write_headers(new_id("k"), Prefer="wait=10"),
    )
    assert response.status_code == 201
    assert response.json() == {
        "pledge_id": "p-1",
        "campaign_id": campaign_id,
        "status": "accepted",
        "seq": 2,
    }
    assert response.headers["preference-applied"] == "wait=10"


async def test_prefer_wait_returns_409_with_the_reason_when_the_processor_refuses(
    api: httpx.AsyncClient,
) -> None:
    campaign_id = await launched(api)  # tier t1 has one slot
    for pledge_id, expected in (("p-1", 201), ("p-2", 409)):
        response = await api.post(
            f"/v1/campaigns/{campaign_id}/pledges",
            json=pledge_body(pledge_id),
            headers=write_headers(new_id("k"), Prefer="wait=10"),
        )
        assert response.status_code == expected
    assert response.headers["content-type"] == PROBLEM
    problem = response.json()
    assert problem["type"] == "https://pledgeflow.dev/problems/refused"
    assert problem["reason"] == "tier_sold_out" and problem["status"] == 409
    view = (await api.get(f"/v1/campaigns/{campaign_id}/pledges/p-2", headers=AUTH_A)).json()
    assert view["status"] == "rejected" and view["reason"] == "tier_sold_out"


async def test_prefer_wait_reports_a_currency_mismatch(api: httpx.AsyncClient) -> None:
    campaign_id = await launched(api)
    response = await api.post(
        f"/v1/campaigns/{campaign_id}/pledges",
        json=pledge_body("p-1", currency="USD", tier_id=None),
        headers=write_headers(new_id("k"), Prefer="wait=10"),
    )
    assert response.status_code == 409
    assert response.json()["reason"] == "currency_mismatch"


async def test_cancel_with_prefer_wait_cancels_and_the_summary_gives_the_slot_back(
    api: httpx.AsyncClient,
) -> None:
    campaign_id = await launched(api)
    await api.post(
        f"/v1/campaigns/{campaign_id}/pledges",
        json=pledge_body("p-1"),
        headers=write_headers(new_id("k"), Prefer="wait=10"),
    )
    response = await api.post(
        f"/v1/campaigns/{campaign_id}/pledges/p-1/cancel",
        json={"reason": "backer_request"},
        headers=write_headers(new_id("k"), Prefer="wait=10"),
    )
    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"
    pledge = (await api.get(f"/v1/campaigns/{campaign_id}/pledges/p-1", headers=AUTH_A)).json()
    assert pledge["status"] == "cancelled" and pledge["reason"] == "backer_request"
    view = (await api.get(f"/v1/campaigns/{campaign_id}", headers=AUTH_A)).json()
    assert view["pledge_count"] == 0 and view["tiers"][0]["remaining"] == 1


async def test_cancel_without_body_answers_202(api: httpx.AsyncClient) -> None:
    campaign_id = await launched(api)
    response = await api.post(
        f"/v1/campaigns/{campaign_id}/pledges/p-9/cancel", headers=write_headers(new_id("k"))
    )
    assert response.status_code == 202
    assert response.json()["status"] == "pending"


async def test_close_by_the_creator_closes_the_campaign_as_cancelled(
    api: httpx.AsyncClient,
) -> None:
    campaign_id = await launched(api)
    response = await api.post(
        f"/v1/campaigns/{campaign_id}/close",
        json={"reason": "creator_cancelled"},
        headers=write_headers(new_id("k"), Prefer="wait=10"),
    )
    assert response.status_code == 200
    assert response.json() == {
        "campaign_id": campaign_id,
        "status": "closed",
        "outcome": "cancelled",
        "seq": 2,
    }
    view = (await api.get(f"/v1/campaigns/{campaign_id}", headers=AUTH_A)).json()
    assert view["status"] == "closed" and view["outcome"] == "cancelled"
    late = await api.post(
        f"/v1/campaigns/{campaign_id}/pledges",
        json=pledge_body("p-1"),
        headers=write_headers(new_id("k"), Prefer="wait=10"),
    )
    assert late.status_code == 409 and late.json()["reason"] == "campaign_closed"


async def test_goal_reached_is_shown_with_its_time(api: httpx.AsyncClient) -> None:
    campaign_id = await launched(api, goal={"amount_minor": 5000, "currency": "EUR"})
    response = await api.post(
        f"/v1/campaigns/{campaign_id}/pledges",
        json=pledge_body("p-1", amount_minor=6000, tier_id=None),
        headers=write_headers(new_id("k"), Prefer="wait=10"),
    )
    assert response.status_code == 201

    async def reached() -> Any:
        view = (await api.get(f"/v1/campaigns/{campaign_id}", headers=AUTH_A)).json()
        return view if view["goal_reached_at"] else None

    view = await eventually(reached)
    assert view["total"]["amount_minor"] == 6000 and view["pledge_count"] == 1


async def test_batch_answers_per_item_and_sends_only_valid_items(api: httpx.AsyncClient) -> None:
    campaign_id = await launched(api, tiers=[])
    items: list[dict[str, Any]] = [
        {**pledge_body(f"p-{i}", tier_id=None), "campaign_id": campaign_id} for i in range(5)
    ]
    items.insert(2, {**pledge_body("p-bad", amount_minor=12.5), "campaign_id": campaign_id})
    items.append({**pledge_body("p-zero", amount_minor=0), "campaign_id": campaign_id})
    response = await api.post(
        "/v1/pledges/batch", json={"pledges": items}, headers=write_headers(new_id("k"))
    )
    assert response.status_code == 202
    body = response.json()
    assert body["accepted"] == 5 and body["refused"] == 2
    statuses = [r["status"] for r in body["results"]]
    assert statuses == ["pending", "pending", "invalid", "pending", "pending", "pending", "invalid"]
    assert body["results"][2]["problem"]["errors"] == [
        {"field": "pledges.2.amount_minor", "message": "Input should be a valid integer"}
    ]
    assert body["results"][6]["problem"]["errors"][0]["field"] == "pledges.6.amount_minor"

    async def five() -> Any:
        view = (await api.get(f"/v1/campaigns/{campaign_id}", headers=AUTH_A)).json()
        return view["pledge_count"] == 5

    await eventually(five)
    bad = await api.get(f"/v1/campaigns/{campaign_id}/pledges/p-bad", headers=AUTH_A)
    assert bad.status_code == 404


async def test_batch_refuses_items_on_another_tenants_campaign_per_item(
    api: httpx.AsyncClient,
) -> None:
    mine = await launched(api, tiers=[])
    items = [
        {**pledge_body("p-1", tier_id=None), "campaign_id": mine},
        {**pledge_body("p-2", tier_id=None), "campaign_id": mine},
    ]
    response = await api.post(
        "/v1/pledges/batch", json={"pledges": items}, headers=write_headers(new_id("k"), AUTH_B)
    )
    assert response.status_code == 202
    assert [r["status"] for r in response.json()["results"]] == ["not_found", "not_found"]


# --- idempotency ---------------------------------------------------------------------------


async def test_a_retry_returns_the_identical_response_and_makes_one_pledge(
    stack: tuple[PledgeSettings, httpx.AsyncClient],
) -> None:
    settings, api = stack
    campaign_id = await launched(api)
    key = new_id("k")
    url = f"/v1/campaigns/{campaign_id}/pledges"
    body = pledge_body(None, tier_id=None)
    first = await api.post(url, json=body, headers=write_headers(key))
    again = await api.post(url, json=body, headers=write_headers(key))
    assert first.status_code == again.status_code == 202
    assert again.content == first.content
    assert again.headers["idempotent-replayed"] == "true"
    # Concurrent duplicates of another request: exactly one of them is executed.
    key2 = new_id("k")
    racing = await asyncio.gather(
        *(api.post(url, json=body, headers=write_headers(key2)) for _ in range(5))
    )
    assert {r.status_code for r in racing} <= {202, 409}
    assert sum(r.status_code == 202 for r in racing) >= 1
    for r in racing:
        if r.status_code == 409:
            assert r.json()["type"].endswith("/request-in-progress")
            assert r.headers["retry-after"] == "1"
    pledge_ids = {
        first.json()["pledge_id"],
        *(r.json()["pledge_id"] for r in racing if r.status_code == 202),
    }
    assert len(pledge_ids) == 2

    async def both_decided() -> Any:
        made = [e for e in await events_of(settings, "PledgeMade") if e.campaign_id == internal]
        return made if len(made) >= 2 else None

    internal = qualify("tenant-a", campaign_id)  # the events' campaign id is tenant-qualified
    made = await eventually(both_decided)
    await asyncio.sleep(0.5)  # a second copy, if any, would have been written by now
    made = [e for e in await events_of(settings, "PledgeMade") if e.campaign_id == internal]
    assert sorted(e.payload.pledge_id for e in made) == sorted(pledge_ids)


async def test_a_response_is_kept_for_replay_after_redis_lost_its_scripts(
    api: httpx.AsyncClient, redis_client: Any
) -> None:
    """The response is stored after the answer is sent; when Redis forgot the script (as
    after a restart) it is loaded and the store retried, so a retry still gets a replay. The
    projector reloads its script too and goes on projecting decisions."""
    campaign_id = await launched(api)
    url = f"/v1/campaigns/{campaign_id}/pledges"
    body = pledge_body(None, tier_id=None)
    key = new_id("k")
    await redis_client.script_flush()
    first = await api.post(url, json=body, headers=write_headers(key))
    assert first.status_code == 202, first.text

    async def replayed() -> httpx.Response | None:
        again = await api.post(url, json=body, headers=write_headers(key))
        return None if again.status_code == 409 else again  # 409: not stored yet

    again = await eventually(replayed, within=5)
    assert again.status_code == 202
    assert again.content == first.content
    assert again.headers["idempotent-replayed"] == "true"

    async def decided() -> Any:
        status = (await api.get(first.json()["status_url"], headers=write_headers(key))).json()
        return status if status["status"] != "pending" else None

    assert (await eventually(decided))["status"] == "accepted"


async def test_a_retry_after_prefer_wait_replays_the_decision(api: httpx.AsyncClient) -> None:
    campaign_id = await launched(api)
    key = new_id("k")
    url = f"/v1/campaigns/{campaign_id}/pledges"
    first = await api.post(
        url, json=pledge_body("p-1"), headers=write_headers(key, Prefer="wait=10")
    )
    again = await api.post(url, json=pledge_body("p-1"), headers=write_headers(key))
    assert first.status_code == again.status_code == 201
    assert again.content == first.content


async def test_the_same_key_with_another_body_is_422(api: httpx.AsyncClient) -> None:
    campaign_id = await launched(api)
    key = new_id("k")
    url = f"/v1/campaigns/{campaign_id}/pledges"
    await api.post(url, json=pledge_body("p-1"), headers=write_headers(key))
    response = await api.post(url, json=pledge_body("p-2"), headers=write_headers(key))
    assert response.status_code == 422
    assert response.headers["content-type"] == PROBLEM
    assert response.json()["type"] == "https://pledgeflow.dev/problems/idempotency-key-reused"
    assert response.json()["errors"][0]["field"] == "Idempotency-Key"


async def test_idempotency_keys_are_per_tenant(api: httpx.AsyncClient) -> None:
    campaign_id = await launched(api)
    key = new_id("k")
    body = launch_body(new_id("c"))
    a = await api.post("/v1/campaigns", json=body, headers=write_headers(key, AUTH_A))
    b = await api.post(
        "/v1/campaigns",
        json={**body, "campaign_id": new_id("c")},
        headers=write_headers(key, AUTH_B),
    )
    assert a.status_code == b.status_code == 202
    assert campaign_id


# --- tenancy and auth ----------------------------------------------------------------------


async def test_another_tenant_gets_404_for_a_campaign_and_its_pledges(
    api: httpx.AsyncClient,
) -> None:
    campaign_id = await launched(api)
    await api.post(
        f"/v1/campaigns/{campaign_id}/pledges",
        json=pledge_body("p-1"),
        headers=write_headers(new_id("k"), Prefer="wait=10"),
    )
    reads = [
        await api.get(f"/v1/campaigns/{campaign_id}", headers=AUTH_B),
        await api.get(f"/v1/campaigns/{campaign_id}/pledges/p-1", headers=AUTH_B),
    ]
    writes = [
        await api.post(
            f"/v1/campaigns/{campaign_id}/pledges",
            json=pledge_body("p-2"),
            headers=write_headers(new_id("k"), AUTH_B),
        ),
        await api.post(
            f"/v1/campaigns/{campaign_id}/pledges/p-1/cancel",
            headers=write_headers(new_id("k"), AUTH_B),
        ),
        await api.post(
            f"/v1/campaigns/{campaign_id}/close",
            json={"reason": "platform_suspended"},
            headers=write_headers(new_id("k"), AUTH_B),
        ),
    ]
    for response in reads + writes:
        assert response.status_code == 404, response.text
        assert response.json()["type"] == "https://pledgeflow.dev/problems/not-found"
    mine = (await api.get(f"/v1/campaigns/{campaign_id}", headers=AUTH_A)).json()
    assert mine["pledge_count"] == 1 and mine["status"] == "open"


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic a2V5LWE="}],
    ids=["missing", "unknown", "not-bearer"],
)
async def test_requests_without_a_valid_key_get_401(
    api: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    response = await api.post(
        "/v1/campaigns/c-1/pledges", json=pledge_body(), headers={**headers, "Idempotency-Key": "k"}
    )
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert response.json()["type"] == "https://pledgeflow.dev/problems/unauthorized"
    assert (await api.get("/v1/campaigns/c-1", headers=headers)).status_code == 401


# --- bad input -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"amount_minor": 25.0}, "amount_minor"),
        ({"amount_minor": 0}, "amount_minor"),
        ({"amount_minor": -5}, "amount_minor"),
        ({"amount_minor": "2500"}, "amount_minor"),
        ({"amount_minor": True}, "amount_minor"),
        ({"currency": "XXX"}, "currency"),
        ({"currency": "eur"}, "currency"),
        ({"pledge_id": "p 1/../x"}, "pledge_id"),
        ({"backer_id": ""}, "backer_id"),
        ({"tier_id": "t" * 200}, "tier_id"),
        ({"surprise": 1}, "surprise"),
    ],
)
async def test_a_bad_pledge_field_is_a_422_naming_the_field(
    api: httpx.AsyncClient, change: dict[str, Any], field: str
) -> None:
    response = await api.post(
        "/v1/campaigns/c-1/pledges",
        json=pledge_body(**change),
        headers=write_headers(new_id("k")),
    )
    assert response.status_code == 422
    assert response.headers["content-type"] == PROBLEM
    problem = response.json()
    assert problem["type"] == "https://pledgeflow.dev/problems/validation-error"
    assert problem["status"] == 422 and problem["instance"] == "/v1/campaigns/c-1/pledges"
    assert field in {e["field"] for e in problem["errors"]}


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"deadline": "2001-01-01T00:00:00Z"}, "deadline"),
        ({"deadline": "2099-01-01T00:00:00"}, "deadline"),
        ({"deadline": 4102444800}, "deadline"),
        ({"goal": {"amount_minor": 1.5, "currency": "EUR"}}, "goal.amount_minor"),
        ({"goal": {"amount_minor": 100, "currency": "ZZZ"}}, "goal.currency"),
        ({"campaign_id": "-bad"}, "campaign_id"),
        ({"funding_model": "whatever"}, "funding_model"),
        ({"commission_bps": 10_001}, "commission_bps"),
        ({"kind": "coproduction"}, "body"),
    ],
)
async def test_a_bad_launch_field_is_a_422_naming_the_field(
    api: httpx.AsyncClient, change: dict[str, Any], field: str
) -> None:
    response = await api.post(
        "/v1/campaigns", json={**launch_body("c-x"), **change}, headers=write_headers(new_id("k"))
    )
    assert response.status_code == 422, response.text
    fields = {e["field"] for e in response.json()["errors"]}
    assert field in fields


async def test_malformed_json_and_a_malformed_path_id_are_422(api: httpx.AsyncClient) -> None:
    broken = await api.post(
        "/v1/campaigns/c-1/pledges",
        content=b'{"backer_id": ',
        headers={**write_headers(new_id("k")), "Content-Type": "application/json"},
    )
    assert broken.status_code == 422 and broken.json()["errors"][0]["field"] == "body"
    bad_path = await api.get("/v1/campaigns/bad%20id", headers=AUTH_A)
    assert bad_path.status_code == 422
    assert bad_path.headers["content-type"] == PROBLEM
    assert bad_path.json()["errors"][0]["field"] == "campaign_id"


async def test_a_write_without_idempotency_key_is_400(api: httpx.AsyncClient) -> None:
    response = await api.post("/v1/campaigns/c-1/pledges", json=pledge_body(), headers=AUTH_A)
    assert response.status_code == 400
    assert response.json()["type"] == "https://pledgeflow.dev/problems/idempotency-key-required"


async def test_a_body_over_one_mebibyte_is_413(api: httpx.AsyncClient) -> None:
    big = {"pledges": [{**pledge_body(f"p-{i}"), "campaign_id": "c-1", "payment_token": "x" * 400}
                       for i in range(2500)]}  # fmt: skip
    response = await api.post("/v1/pledges/batch", json=big, headers=write_headers(new_id("k")))
    assert response.status_code == 413
    assert response.headers["content-type"] == PROBLEM
    assert response.json()["type"] == "https://pledgeflow.dev/problems/payload-too-large"


async def test_a_non_json_body_is_415(api: httpx.AsyncClient) -> None:
    response = await api.post(
        "/v1/campaigns/c-1/pledges",
        content=b"backer_id=b-1",
        headers={**write_headers(new_id("k")), "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 415


async def test_unknown_routes_and_methods_answer_problem_documents(api: httpx.AsyncClient) -> None:
    missing = await api.get("/v1/nothing", headers=AUTH_A)
    assert missing.status_code == 404 and missing.headers["content-type"] == PROBLEM
    wrong = await api.delete("/v1/campaigns/c-1", headers=AUTH_A)
    assert wrong.status_code == 405 and wrong.headers["content-type"] == PROBLEM


async def test_a_batch_of_more_than_1000_items_is_422(api: httpx.AsyncClient) -> None:
    items = [{**pledge_body(f"p-{i}"), "campaign_id": "c-1"} for i in range(1001)]
    response = await api.post(
        "/v1/pledges/batch", json={"pledges": items}, headers=write_headers(new_id("k"))
    )
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "pledges"


async def test_a_missing_campaign_is_a_503_until_the_read_model_is_whole(
    broker: Any, redis_server: str
) -> None:
    # Without the projector's epoch marker (Redis lost its data, or no projector has built the
    # read model yet) existing campaigns are missing too: a 404 would be a lie a client may act on.
    settings = api_settings(kafka_bootstrap(), redis_url(), unique_name("rb"))
    await create_topics(settings)
    async with api_client(settings) as api:
        before = await api.post(
            "/v1/campaigns/c-1/pledges", json=pledge_body(), headers=write_headers(new_id("k"))
        )
        assert before.status_code == 503, before.text
        assert before.headers["retry-after"] == "1"
        assert before.json()["type"] == "https://pledgeflow.dev/problems/unavailable"
        await read_model_whole(settings)
        after = await api.post(
            "/v1/campaigns/c-1/pledges", json=pledge_body(), headers=write_headers(new_id("k"))
        )
        assert after.status_code == 404, after.text


# --- rate limit, ops, real server ----------------------------------------------------------


async def test_the_token_bucket_answers_429_with_retry_after(
    broker: Any, redis_server: str
) -> None:
    settings = api_settings(
        kafka_bootstrap(), redis_url(), unique_name("rl"), api_rate_per_second=0.5, api_rate_burst=2
    )
    await create_topics(settings)
    await read_model_whole(settings)
    async with api_client(settings) as api:
        codes = []
        for _ in range(3):
            response = await api.post(
                "/v1/campaigns/c-1/pledges", json=pledge_body(), headers=write_headers(new_id("k"))
            )
            codes.append(response.status_code)
        assert codes == [404, 404, 429]  # c-1 does not exist: refused, and still charged
        assert response.headers["content-type"] == PROBLEM
        assert response.json()["type"] == "https://pledgeflow.dev/problems/rate-limited"
        assert 1 <= int(response.headers["retry-after"]) <= 2
        other = await api.post(
            "/v1/campaigns/c-1/pledges",
            json=pledge_body(),
            headers=write_headers(new_id("k"), AUTH_B),
        )
        assert other.status_code == 404  # buckets are per key
        metrics = (await api.get("/metrics")).text
        assert (
            'pledgeflow_api_rate_limited_total{route="/v1/campaigns/{campaign_id}/pledges"} 1.0'
            in metrics
        )


async def test_metrics_count_requests_replays_and_produce_latency(api: httpx.AsyncClient) -> None:
    campaign_id = await launched(api)
    key = new_id("k")
    for _ in range(2):
        await api.post(
            f"/v1/campaigns/{campaign_id}/pledges",
            json=pledge_body("p-1"),
            headers=write_headers(key),
        )
    text = (await api.get("/metrics")).text
    assert (
        'pledgeflow_api_requests_total{method="POST",route="/v1/campaigns/{campaign_id}/pledges",status="202"}'
        in text
    )
    assert (
        'pledgeflow_api_idempotent_replays_total{route="/v1/campaigns/{campaign_id}/pledges"}'
        in text
    )
    assert "pledgeflow_api_request_duration_seconds_bucket" in text
    assert 'pledgeflow_api_kafka_produce_duration_seconds_count{kind="command"}' in text


async def test_a_real_uvicorn_server_serves_docs_health_and_a_pledge(
    stack: tuple[PledgeSettings, httpx.AsyncClient],
) -> None:
    settings, api = stack
    campaign_id = await launched(api)
    async with uvicorn_server(settings) as base, httpx.AsyncClient(base_url=base) as http:
        assert (await http.get("/healthz")).status_code == 200
        ready = await http.get("/readyz")
        assert ready.status_code == 200 and ready.json() == {"kafka": "ok", "redis": "ok"}
        assert (await http.get("/docs")).status_code == 200
        schema = (await http.get("/openapi.json")).json()
        assert "/v1/campaigns/{campaign_id}/pledges" in schema["paths"]
        response = await http.post(
            f"/v1/campaigns/{campaign_id}/pledges",
            json=pledge_body("p-1"),
            headers=write_headers(new_id("k"), Prefer="wait=10"),
        )
        assert response.status_code == 201 and response.json()["seq"] == 2
        chunked = await http.post(
            f"/v1/campaigns/{campaign_id}/pledges",
            content=_chunks(b'{"backer_id": "b-1", "amount_minor": 2500, ', b'"currency": "EUR"}'),
            headers={**write_headers(new_id("k")), "Content-Type": "application/json"},
        )
        assert chunked.status_code == 202


async def _chunks(*parts: bytes) -> AsyncIterator[bytes]:
    """A body sent with Transfer-Encoding: chunked (no Content-Length)."""
    for part in parts:
        yield part


# --- hot-path equivalences -----------------------------------------------------------------


def test_command_ids_equal_uuid5_of_tenant_key_and_index() -> None:
    from services.pledge.api.command_ids import (
        COMMAND_NAMESPACE,
        batch_command_ids,
        command_id_for,
    )

    for tenant, key in (("t-a", "k-1"), ("tenant é", "~!\"key'"), ("x", "y" * 255)):
        assert command_id_for(tenant, key) == str(uuid.uuid5(COMMAND_NAMESPACE, f"{tenant}\n{key}"))
        expected = [
            str(uuid.uuid5(COMMAND_NAMESPACE, f"{tenant}\n{key}\n{i}")) for i in (0, 7, 999)
        ]
        assert batch_command_ids(tenant, key, [0, 7, 999]) == expected
        assert [command_id_for(tenant, key, i) for i in (0, 7, 999)] == expected


async def test_the_auto_pipeline_answers_each_caller_with_its_own_reply_and_error(
    redis_server: str,
) -> None:
    import redis.asyncio as aioredis
    from redis.exceptions import ResponseError

    from services.pledge.adapters.redis_pipeline import AutoPipeline, LuaScript

    client = aioredis.Redis.from_url(redis_url())
    pipeline = AutoPipeline(client)
    prefix = new_id("pipe")
    try:
        await asyncio.gather(*(pipeline.execute("SET", f"{prefix}:{i}", i) for i in range(300)))
        values = await asyncio.gather(
            *(pipeline.execute("GET", f"{prefix}:{i}") for i in range(300))
        )
        assert values == [str(i).encode() for i in range(300)]
        ok, bad, missing = await asyncio.gather(
            pipeline.execute("INCR", f"{prefix}:1"),
            pipeline.execute("LPUSH", f"{prefix}:2", "x"),  # a string key: WRONGTYPE
            pipeline.execute("GET", f"{prefix}:absent"),
            return_exceptions=True,
        )
        assert ok == 2 and missing is None
        assert isinstance(bad, ResponseError) and "WRONGTYPE" in str(bad)
        # A script the server does not know yet is loaded on NOSCRIPT and run.
        script = LuaScript(f"return '{prefix}'")
        assert await pipeline.evalsha(script, [], []) == prefix.encode()
    finally:
        await pipeline.aclose()
        await client.delete(*[f"{prefix}:{i}" for i in range(300)])
        await client.aclose()


async def test_a_pledge_path_whose_campaign_id_ends_in_a_newline_is_422(
    api: httpx.AsyncClient,
) -> None:
    response = await api.post(
        "/v1/campaigns/c-1%0A/pledges", json=pledge_body(), headers=write_headers(new_id("k"))
    )
    assert response.status_code == 422
    assert response.headers["content-type"] == PROBLEM
    assert response.json()["errors"][0]["field"] == "campaign_id"
