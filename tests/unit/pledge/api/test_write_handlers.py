"""Every rule of the write endpoints, through the app over in-memory fakes of its ports.

Given the read model and the gate's state, when a request arrives, then this answer and these
commands on the log (or none). The same rules against the real Kafka and Redis are proven by
``tests/integration/test_api.py``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable
from typing import Any

import orjson
import pytest

from schemas.commands import (
    CancelPledge,
    CloseCampaign,
    LaunchCampaign,
    MakePledge,
    decode_command,
)
from services.pledge.api.command_ids import command_id_for
from services.pledge.api.problems import PROBLEM_BASE
from tests.support.api import AUTH_A, AUTH_B, launch_body, pledge_body, write_headers
from tests.unit.pledge.api.conftest import Api

PROBLEM = "application/problem+json"
CAMPAIGN = "c-1"
#: The campaign's internal, tenant-qualified id (the Kafka key and the commands' campaign_id).
QA = "tenant-a/c-1"


def batch_body(*campaigns: str) -> dict[str, Any]:
    items = [
        {**pledge_body(f"p-{i}"), "campaign_id": campaign} for i, campaign in enumerate(campaigns)
    ]
    return {"pledges": items}


#: (name, path, body of a valid request, another valid body) per write endpoint.
WRITES: dict[str, tuple[str, Callable[[], Any], Callable[[], Any]]] = {
    "launch": ("/v1/campaigns", lambda: launch_body(CAMPAIGN), lambda: launch_body("c-2")),
    "pledge": (
        f"/v1/campaigns/{CAMPAIGN}/pledges",
        lambda: pledge_body("p-1"),
        lambda: pledge_body("p-1", amount_minor=9900),
    ),
    "batch": ("/v1/pledges/batch", lambda: batch_body(CAMPAIGN), lambda: batch_body("c-2")),
    "cancel": (
        f"/v1/campaigns/{CAMPAIGN}/pledges/p-1/cancel",
        lambda: {"reason": "backer_request"},
        lambda: {"reason": "changed_mind"},
    ),
    "close": (
        f"/v1/campaigns/{CAMPAIGN}/close",
        lambda: {"reason": "creator_cancelled"},
        lambda: {"reason": "platform_suspended"},
    ),
}
ENDPOINTS = list(WRITES)
#: Endpoints that name one campaign in their path (a foreign one refuses the request).
ONE_CAMPAIGN = ["pledge", "cancel", "close"]


async def post(api: Api, endpoint: str, key: str, *, other: bool = False, **headers: str) -> Any:
    path, body, other_body = WRITES[endpoint]
    return await api.client.post(
        path, json=(other_body if other else body)(), headers=write_headers(key, **headers)
    )


def problem_type(response: Any) -> str:
    assert response.headers["content-type"] == PROBLEM
    slug: str = response.json()["type"].removeprefix(PROBLEM_BASE)
    return slug


# --- each write endpoint ----------------------------------------------------------------------


async def test_launch_appends_launch_campaign_and_answers_202_with_the_status_url(
    api: Api,
) -> None:
    response = await post(api, "launch", "k-1")
    assert response.status_code == 202
    assert response.json() == {
        "campaign_id": CAMPAIGN,
        "status": "pending",
        "status_url": f"/v1/campaigns/{CAMPAIGN}",
    }
    assert response.headers["location"] == f"/v1/campaigns/{CAMPAIGN}"
    [(key, value)] = api.fakes.bus.sent
    command = decode_command(value)
    assert key == QA and command.campaign_id == QA and isinstance(command, LaunchCampaign)
    assert command.tenant_id == "tenant-a"
    assert command.command_id == command_id_for("tenant-a", "k-1")
    assert command.fee_schedule is not None  # the default schedule of the goal currency


async def test_pledge_appends_make_pledge_and_writes_the_pending_row(api: Api) -> None:
    response = await post(api, "pledge", "k-1")
    assert response.status_code == 202
    status_url = f"/v1/campaigns/{CAMPAIGN}/pledges/p-1"
    assert response.json() == {
        "pledge_id": "p-1",
        "campaign_id": CAMPAIGN,
        "status": "pending",
        "status_url": status_url,
    }
    assert response.headers["location"] == status_url
    [(key, value)] = api.fakes.bus.sent
    command = decode_command(value)
    assert key == QA and command.campaign_id == QA and isinstance(command, MakePledge)
    assert (command.pledge_id, command.backer_id, command.tier_id) == ("p-1", "b-1", "t1")
    assert command.amount.amount_minor == 2500 and command.payment_token is None
    # The token travels on its erasable store, keyed by the pledge, never in the command.
    assert api.fakes.tokens.tokens == {"tenant-a/c-1/p-1": "tok_visa"}
    view = await api.client.get(status_url, headers=AUTH_A)
    assert view.status_code == 200
    assert view.json() == {
        "pledge_id": "p-1",
        "campaign_id": CAMPAIGN,
        "status": "pending",
        "backer_id": "b-1",
        "amount": {"amount_minor": 2500, "currency": "EUR"},
        "tier_id": "t1",
        "seq": None,
        "reason": None,
        "detail": None,
        "last_refusal": None,
    }


async def test_a_pledge_without_pledge_id_gets_one_derived_from_the_command_id(api: Api) -> None:
    response = await api.client.post(
        f"/v1/campaigns/{CAMPAIGN}/pledges",
        json=pledge_body(None),
        headers=write_headers("k-1"),
    )
    assert response.json()["pledge_id"] == f"p-{command_id_for('tenant-a', 'k-1')}"


async def test_batch_sends_the_valid_items_and_answers_each_item(api: Api) -> None:
    api.fakes.readmodel.launched("tenant-b/c-b", "tenant-b")
    body = batch_body(CAMPAIGN, "c-b", CAMPAIGN)
    body["pledges"][2]["amount_minor"] = 0
    response = await api.client.post("/v1/pledges/batch", json=body, headers=write_headers("k-1"))
    assert response.status_code == 202
    answer = response.json()
    assert (answer["accepted"], answer["refused"]) == (1, 2)
    assert [r["status"] for r in answer["results"]] == ["pending", "not_found", "invalid"]
    assert answer["results"][2]["problem"]["errors"][0]["field"] == "pledges.2.amount_minor"
    [(key, value)] = api.fakes.bus.sent
    command = decode_command(value)
    assert (
        key == QA
        and command.campaign_id == QA
        and isinstance(command, MakePledge)
        and command.pledge_id == "p-0"
    )
    assert command.command_id == command_id_for("tenant-a", "k-1", 0)


async def test_cancel_appends_cancel_pledge(api: Api) -> None:
    response = await post(api, "cancel", "k-1")
    assert response.status_code == 202
    assert response.json()["status_url"] == f"/v1/campaigns/{CAMPAIGN}/pledges/p-1"
    assert "location" not in response.headers
    command = decode_command(api.fakes.bus.sent[0][1])
    assert isinstance(command, CancelPledge)
    assert (command.pledge_id, command.reason) == ("p-1", "backer_request")


async def test_cancel_without_a_body_cancels_for_the_backer(api: Api) -> None:
    response = await api.client.post(
        f"/v1/campaigns/{CAMPAIGN}/pledges/p-1/cancel", headers=write_headers("k-1")
    )
    assert response.status_code == 202
    command = decode_command(api.fakes.bus.sent[0][1])
    assert isinstance(command, CancelPledge) and command.reason == "backer_request"


async def test_close_appends_close_campaign(api: Api) -> None:
    response = await post(api, "close", "k-1")
    assert response.status_code == 202
    assert response.json() == {
        "campaign_id": CAMPAIGN,
        "status": "pending",
        "status_url": f"/v1/campaigns/{CAMPAIGN}",
    }
    command = decode_command(api.fakes.bus.sent[0][1])
    assert isinstance(command, CloseCampaign) and command.reason == "creator_cancelled"


# --- idempotency --------------------------------------------------------------------------------


@pytest.mark.parametrize("endpoint", ENDPOINTS)
async def test_a_retry_gets_the_first_response_replayed_and_appends_nothing(
    api: Api, endpoint: str
) -> None:
    first = await post(api, endpoint, "k-1")
    again = await post(api, endpoint, "k-1")
    assert first.status_code == again.status_code
    assert again.content == first.content
    assert again.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert len(api.fakes.bus.sent) == 1


@pytest.mark.parametrize("endpoint", ENDPOINTS)
async def test_the_same_key_with_another_body_is_422_and_appends_nothing(
    api: Api, endpoint: str
) -> None:
    await post(api, endpoint, "k-1")
    reused = await post(api, endpoint, "k-1", other=True)
    assert reused.status_code == 422
    assert problem_type(reused) == "idempotency-key-reused"
    assert reused.json()["errors"] == [
        {"field": "Idempotency-Key", "message": "already used for another request"}
    ]
    assert len(api.fakes.bus.sent) == 1


async def test_idempotency_keys_are_per_tenant(api: Api) -> None:
    await post(api, "launch", "k-1")
    other = await api.client.post(
        "/v1/campaigns", json=launch_body("c-9"), headers=write_headers("k-1", AUTH_B)
    )
    assert other.status_code == 202
    assert len(api.fakes.bus.sent) == 2


@pytest.mark.parametrize("endpoint", ENDPOINTS)
async def test_the_same_key_while_the_first_request_is_in_flight_is_409_with_retry_after(
    api: Api, endpoint: str
) -> None:
    hold = api.fakes.bus.hold = asyncio.Event()
    first = asyncio.create_task(post(api, endpoint, "k-1"))
    await api.fakes.bus.holding.wait()  # the first request holds its reservation
    second = await post(api, endpoint, "k-1")
    assert second.status_code == 409
    assert problem_type(second) == "request-in-progress"
    assert second.headers["retry-after"] == "1"
    hold.set()
    assert (await first).status_code == 202
    assert len(api.fakes.bus.sent) == 1


@pytest.mark.parametrize("endpoint", ENDPOINTS)
async def test_a_write_without_idempotency_key_is_400(api: Api, endpoint: str) -> None:
    path, body, _ = WRITES[endpoint]
    response = await api.client.post(path, json=body(), headers=AUTH_A)
    assert response.status_code == 400
    assert problem_type(response) == "idempotency-key-required"
    assert response.json()["errors"][0]["field"] == "Idempotency-Key"
    assert api.fakes.bus.sent == []


# --- tenancy ------------------------------------------------------------------------------------


@pytest.mark.parametrize("endpoint", ONE_CAMPAIGN)
async def test_a_write_on_another_tenants_campaign_is_404_and_appends_nothing(
    api: Api, endpoint: str
) -> None:
    # CAMPAIGN is tenant A's (conftest): tenant B naming it names its own, absent campaign.
    response = await post(api, endpoint, "k-1", Authorization=AUTH_B["Authorization"])
    assert response.status_code == 404
    assert problem_type(response) == "not-found"
    assert api.fakes.bus.sent == []
    assert api.fakes.gate.keys == {}  # nothing reserved: the key stays usable


async def test_a_campaign_of_the_callers_tenant_is_written_to(api: Api) -> None:
    api.fakes.readmodel.launched(QA, "tenant-a")
    assert (await post(api, "pledge", "k-1")).status_code == 202


async def test_another_tenants_campaign_and_pledges_are_not_found_on_reads(api: Api) -> None:
    await post(api, "pledge", "k-1")
    api.fakes.readmodel.launched(QA, "tenant-a")
    assert (await api.client.get(f"/v1/campaigns/{CAMPAIGN}", headers=AUTH_A)).status_code == 200
    for path in (f"/v1/campaigns/{CAMPAIGN}", f"/v1/campaigns/{CAMPAIGN}/pledges/p-1"):
        response = await api.client.get(path, headers=AUTH_B)
        assert response.status_code == 404
        assert problem_type(response) == "not-found"


# --- rate limit and unreachable dependencies ------------------------------------------------------


@pytest.mark.parametrize("endpoint", ENDPOINTS)
async def test_past_the_burst_a_key_gets_429_with_retry_after(api: Api, endpoint: str) -> None:
    api.fakes.gate.burst, api.fakes.gate.rate = 1, 0.25
    assert (await post(api, endpoint, "k-1")).status_code == 202
    limited = await post(api, endpoint, "k-2", other=True)
    assert limited.status_code == 429
    assert problem_type(limited) == "rate-limited"
    assert limited.headers["retry-after"] == "4"
    assert len(api.fakes.bus.sent) == 1
    other_key = await api.client.post(
        "/v1/campaigns", json=launch_body("c-9"), headers=write_headers("k-3", AUTH_B)
    )
    assert other_key.status_code == 202  # the bucket is per API key


@pytest.mark.parametrize("endpoint", ENDPOINTS)
async def test_redis_down_is_a_503_problem_with_retry_after(api: Api, endpoint: str) -> None:
    api.fakes.readmodel.down = True
    response = await post(api, endpoint, "k-1")
    assert response.status_code == 503
    assert problem_type(response) == "unavailable"
    assert response.json()["detail"] == "Redis is unavailable; retry"
    assert response.headers["retry-after"] == "1"
    assert api.fakes.bus.sent == []


async def test_redis_down_on_a_read_is_a_503_problem(api: Api) -> None:
    api.fakes.readmodel.down = True
    response = await api.client.get(f"/v1/campaigns/{CAMPAIGN}", headers=AUTH_A)
    assert response.status_code == 503
    assert problem_type(response) == "unavailable"


@pytest.mark.parametrize("endpoint", ENDPOINTS)
async def test_log_down_is_a_503_and_a_retry_of_the_same_request_resends_at_once(
    api: Api, endpoint: str
) -> None:
    api.fakes.bus.failure = ConnectionError("broker unreachable")
    response = await post(api, endpoint, "k-1")
    assert response.status_code == 503
    assert problem_type(response) == "unavailable"
    assert response.headers["retry-after"] == "1"
    api.fakes.bus.failure = None
    assert (await post(api, endpoint, "k-1")).status_code == 202
    assert len(api.fakes.bus.sent) >= 1


@pytest.mark.parametrize("endpoint", ["pledge", "batch"])
async def test_token_store_down_is_a_503_sends_nothing_and_keeps_the_key_for_a_retry(
    api: Api, endpoint: str
) -> None:
    api.fakes.tokens.down = True
    response = await post(api, endpoint, "k-1")
    assert response.status_code == 503
    assert problem_type(response) == "unavailable"
    assert response.headers["retry-after"] == "1"
    assert api.fakes.bus.sent == []
    api.fakes.tokens.down = False
    other = await post(api, endpoint, "k-1", other=True)
    assert (other.status_code, problem_type(other)) == (422, "idempotency-key-reused")
    assert (await post(api, endpoint, "k-1")).status_code == 202
    assert list(api.fakes.tokens.tokens.values()) == ["tok_visa"]
    assert all(decode_command(value).payment_token is None for _, value in api.fakes.bus.sent)


@pytest.mark.parametrize("endpoint", ["pledge", "batch"])
async def test_the_token_and_the_command_are_sent_in_the_same_round(
    api: Api, endpoint: str
) -> None:
    # The token's acknowledgement is held: the command must already be on the log (one
    # Kafka round trip for both), and the answer must still wait for the token.
    api.fakes.tokens.hold = asyncio.Event()
    request = asyncio.ensure_future(post(api, endpoint, "k-1"))
    for _ in range(200):
        if api.fakes.bus.sent or request.done():
            break
        await asyncio.sleep(0.005)
    assert not request.done()
    assert len(api.fakes.bus.sent) == 1
    assert api.fakes.tokens.appends == [[("tenant-a/c-1/p-0" if endpoint == "batch" else
                                          "tenant-a/c-1/p-1", "tok_visa")]]  # fmt: skip
    await asyncio.sleep(0.01)
    assert not request.done()  # no 202 before the token is acknowledged
    api.fakes.tokens.hold.set()
    assert (await request).status_code == 202
    assert list(api.fakes.tokens.tokens.values()) == ["tok_visa"]


@pytest.mark.parametrize("endpoint", ["pledge", "batch"])
async def test_a_token_lost_while_its_command_was_acked_is_appended_again_within_the_request(
    api: Api, endpoint: str
) -> None:
    api.fakes.tokens.lost = 1
    response = await post(api, endpoint, "k-1")
    assert response.status_code == 202
    assert len(api.fakes.bus.sent) == 1
    assert len(api.fakes.tokens.appends) == 2  # the lost one, then the same pair again
    assert api.fakes.tokens.appends[0] == api.fakes.tokens.appends[1]
    assert list(api.fakes.tokens.tokens.values()) == ["tok_visa"]
    assert api.registry.get_sample_value("pledgeflow_api_payment_token_retries_total") == 1


@pytest.mark.parametrize("endpoint", ["pledge", "batch"])
async def test_a_token_still_lost_is_a_503_and_the_retry_appends_it_again(
    api: Api, endpoint: str
) -> None:
    api.fakes.tokens.lost = 2  # the shared round and the retry within the request
    response = await post(api, endpoint, "k-1")
    assert response.status_code == 503
    assert problem_type(response) == "unavailable"
    assert response.json()["detail"] == "the payment token store is unavailable"
    assert response.headers["retry-after"] == "1"
    assert len(api.fakes.bus.sent) == 1  # the command was acknowledged
    assert api.fakes.tokens.tokens == {}
    # Another body under the key is still refused; the same request goes through again and
    # appends the token again (its command is sent again: the processor ignores the copy).
    other = await post(api, endpoint, "k-1", other=True)
    assert (other.status_code, problem_type(other)) == (422, "idempotency-key-reused")
    assert (await post(api, endpoint, "k-1")).status_code == 202
    assert list(api.fakes.tokens.tokens.values()) == ["tok_visa"]
    assert len(api.fakes.tokens.appends) == 3
    assert len({decode_command(value).command_id for _, value in api.fakes.bus.sent}) == 1


@pytest.mark.parametrize("endpoint", ["pledge", "batch"])
async def test_a_command_not_acked_is_a_503_whatever_became_of_its_token(
    api: Api, endpoint: str
) -> None:
    api.fakes.bus.failure = TimeoutError("the broker did not acknowledge the command in time")
    api.fakes.tokens.lost = 1
    response = await post(api, endpoint, "k-1")
    assert response.status_code == 503
    assert response.json()["detail"].startswith("the command log is unavailable")
    api.fakes.bus.failure = None
    assert (await post(api, endpoint, "k-1")).status_code == 202
    assert list(api.fakes.tokens.tokens.values()) == ["tok_visa"]
    assert len(api.fakes.bus.sent) == 1


@pytest.mark.parametrize("endpoint", ENDPOINTS)
async def test_a_key_whose_command_was_not_acknowledged_still_refuses_another_body(
    api: Api, endpoint: str
) -> None:
    api.fakes.bus.failure = TimeoutError("the broker did not acknowledge the command in time")
    assert (await post(api, endpoint, "k-1")).status_code == 503
    api.fakes.bus.failure = None
    other = await post(api, endpoint, "k-1", other=True)
    assert other.status_code == 422
    assert problem_type(other) == "idempotency-key-reused"
    assert api.fakes.bus.sent == []


async def test_the_request_fingerprint_travels_in_every_command(api: Api) -> None:
    for endpoint in ENDPOINTS:
        assert (await post(api, endpoint, f"k-{endpoint}")).status_code == 202
    fingerprints = {decode_command(value).fingerprint for _, value in api.fakes.bus.sent}
    assert None not in fingerprints
    assert len(fingerprints) == len(ENDPOINTS)  # one per request


async def test_a_pledge_left_pending_past_the_expiry_shows_expired(api: Api) -> None:
    assert (await post(api, "pledge", "k-1")).status_code == 202
    rows = api.fakes.readmodel.pledges
    rows[(QA, "p-1")] = dataclasses.replace(
        rows[(QA, "p-1")], pending_since=int(time.time() * 1000) - 3601 * 1000
    )
    view = await api.client.get(f"/v1/campaigns/{CAMPAIGN}/pledges/p-1", headers=AUTH_A)
    assert view.status_code == 200
    assert (view.json()["status"], view.json()["reason"]) == ("expired", "no_decision")


async def test_a_pledge_pending_for_less_than_the_expiry_shows_pending(api: Api) -> None:
    assert (await post(api, "pledge", "k-1")).status_code == 202
    rows = api.fakes.readmodel.pledges
    rows[(QA, "p-1")] = dataclasses.replace(
        rows[(QA, "p-1")], pending_since=int(time.time() * 1000) - 3500 * 1000
    )
    view = await api.client.get(f"/v1/campaigns/{CAMPAIGN}/pledges/p-1", headers=AUTH_A)
    assert view.json()["status"] == "pending"


# --- Prefer: wait (through the decision reader) ---------------------------------------------------


async def test_prefer_wait_answers_the_accepted_decision(api: Api) -> None:
    api.fakes.readmodel.decisions[command_id_for("tenant-a", "k-1")] = {
        "outcome": "accepted",
        "seq": 7,
        "event_type": "PledgeMade",
    }
    response = await post(api, "pledge", "k-1", Prefer="wait=5")
    assert response.status_code == 201
    assert response.json() == {
        "pledge_id": "p-1",
        "campaign_id": CAMPAIGN,
        "status": "accepted",
        "seq": 7,
    }
    assert response.headers["preference-applied"] == "wait=5"
    replay = await post(api, "pledge", "k-1", Prefer="wait=5")
    assert (replay.status_code, replay.content) == (201, response.content)


async def test_prefer_wait_answers_a_refusal_as_409_with_its_reason(api: Api) -> None:
    api.fakes.readmodel.decisions[command_id_for("tenant-a", "k-1")] = {
        "outcome": "refused",
        "seq": 3,
        "reason": "tier_sold_out",
        "detail": "tier t1 is sold out",
    }
    response = await post(api, "close", "k-1", Prefer="wait=5")
    assert response.status_code == 409
    assert problem_type(response) == "refused"
    assert response.json()["reason"] == "tier_sold_out"


async def test_prefer_wait_answers_202_when_no_decision_came_in_time(api: Api) -> None:
    response = await post(api, "launch", "k-1", Prefer="wait=1")
    assert response.status_code == 202
    assert response.headers["preference-applied"] == "wait=1"
    assert orjson.loads(response.content)["status"] == "pending"


# --- readiness ------------------------------------------------------------------------------------


async def test_ready_only_while_the_log_and_the_store_answer(api: Api) -> None:
    assert (await api.client.get("/readyz")).status_code == 200
    api.fakes.readmodel.down = True
    down = await api.client.get("/readyz")
    assert down.status_code == 503
    assert down.json()["detail"] == "not reachable: redis"
    assert down.headers["retry-after"] == "1"
    api.fakes.readmodel.down = False
    api.fakes.bus.failure = ConnectionError("broker unreachable")
    assert (await api.client.get("/readyz")).json()["detail"] == "not reachable: kafka"


# --- metrics ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("endpoint", "route"),
    [
        ("launch", "/v1/campaigns"),  # served by FastAPI's route
        ("pledge", "/v1/campaigns/{campaign_id}/pledges"),  # served by the ASGI front
        ("batch", "/v1/pledges/batch"),  # served by the ASGI front
    ],
)
async def test_requests_and_replays_are_counted_by_route_template(
    api: Api, endpoint: str, route: str
) -> None:
    await post(api, endpoint, "k-1")
    await post(api, endpoint, "k-1")
    api.fakes.readmodel.down = True
    await post(api, endpoint, "k-2")

    def value(name: str, **labels: str) -> float | None:
        return api.registry.get_sample_value(name, labels)

    requests = "pledgeflow_api_requests_total"
    assert value(requests, route=route, method="POST", status="202") == 2
    assert value(requests, route=route, method="POST", status="503") == 1
    assert value("pledgeflow_api_idempotent_replays_total", route=route) == 1
    assert value("pledgeflow_api_request_duration_seconds_count", route=route, method="POST") == 3
