"""The settlement routes through the app over in-memory fakes: GET settlement from the
settlement read model, the payment status on GET pledge, and the three settlement commands
(payment-method fix, refund, revenue report) with every write rule: 422 naming the field,
another tenant's campaign 404, Idempotency-Key replays and reuse, ``Prefer: wait`` (accepted
and refused as 409), the token kept off the command."""

from __future__ import annotations

from typing import Any

import pytest

from schemas.settlement_commands import (
    RefundPledge,
    ReportRevenue,
    UpdatePaymentMethod,
    decode_settlement_command,
)
from services.pledge.adapters.redis_readmodel import CampaignRow, PledgeRow
from services.pledge.api.command_ids import command_id_for
from services.pledge.api.problems import PROBLEM_BASE
from services.settlement.api_models import SettlementView
from services.settlement.projection import initial_summary
from tests.support.api import AUTH_A, AUTH_B, write_headers
from tests.unit.pledge.api.conftest import Api

QA = "tenant-a/c-1"
FIX = "/v1/campaigns/c-1/pledges/p-1/payment-method"
REFUND = "/v1/campaigns/c-1/pledges/p-1/refund"
REVENUE = "/v1/campaigns/c-1/revenue"
SETTLEMENT = "/v1/campaigns/c-1/settlement"

#: endpoint -> (path, valid body, another valid body)
WRITES: dict[str, tuple[str, dict[str, Any], dict[str, Any]]] = {
    "fix": (FIX, {"payment_token": "tok_ok"}, {"payment_token": "tok_other"}),
    "refund": (REFUND, {"amount_minor": 1000}, {"amount_minor": 900}),
    "revenue": (
        REVENUE,
        {"period": "2027-Q1", "amount_minor": 100_000, "currency": "EUR"},
        {"period": "2027-Q2", "amount_minor": 100_000, "currency": "EUR"},
    ),
}


def problem_type(response: Any) -> str:
    assert response.headers["content-type"] == "application/problem+json"
    slug: str = response.json()["type"].removeprefix(PROBLEM_BASE)
    return slug


def campaign(api: Api, *, status: str = "open", outcome: str | None = None) -> None:
    api.fakes.readmodel.campaigns[QA] = CampaignRow(
        seq=5,
        tenant_id="tenant-a",
        doc={
            "campaign_id": QA,
            "status": status,
            "outcome": outcome,
            "goal": {"amount_minor": 100_000, "currency": "EUR"},
            "seq": 5,
        },
    )


def capture_failed(api: Api) -> None:
    api.fakes.settlement.payments[(QA, "p-1")] = {
        "status": "capture_failed",
        "attempts": 1,
        "retry_until": "2027-01-08T00:00:00Z",
    }


async def post(api: Api, endpoint: str, key: str, *, other: bool = False, **h: str) -> Any:
    path, body, other_body = WRITES[endpoint]
    if endpoint == "fix":
        capture_failed(api)
    return await api.client.post(
        path, json=other_body if other else body, headers=write_headers(key, **h)
    )


# --- GET settlement -------------------------------------------------------------------------


async def test_settlement_of_an_open_campaign_is_open_with_zero_balances(api: Api) -> None:
    campaign(api)
    response = await api.client.get(SETTLEMENT, headers=AUTH_A)
    assert response.status_code == 200
    view = SettlementView.model_validate_json(response.content)
    assert (view.campaign_id, view.status, view.outcome, view.seq) == ("c-1", "open", None, 0)
    assert view.gross.model_dump() == {"amount_minor": 0, "currency": "EUR"}
    assert {line.account for line in view.ledger} == {
        "backer_funds",
        "payment_fees",
        "platform_revenue",
        "creator_payable",
    }


async def test_a_closed_campaign_not_settled_yet_is_settling_with_its_outcome(api: Api) -> None:
    campaign(api, status="closed", outcome="funded")
    response = await api.client.get(SETTLEMENT, headers=AUTH_A)
    assert (response.json()["status"], response.json()["outcome"]) == ("settling", "funded")


async def test_a_settled_campaign_shows_the_ledger_balances(api: Api) -> None:
    campaign(api, status="closed", outcome="funded")
    summary = initial_summary(QA)
    summary.update(
        seq=9,
        currency="EUR",
        captured_count=2,
        settled={"outcome": "funded", "seq": 9},
        ledger={
            "backer_funds": [5000, 0],
            "payment_fees": [0, 300],
            "platform_revenue": [0, 250],
            "creator_payable": [250, 4700],
        },
    )
    api.fakes.settlement.summaries[QA] = summary
    view = SettlementView.model_validate_json(
        (await api.client.get(SETTLEMENT, headers=AUTH_A)).content
    )
    assert (view.status, view.outcome, view.seq, view.captured_count) == (
        "settled",
        "funded",
        9,
        2,
    )
    money = [m.amount_minor for m in (view.gross, view.commission, view.fees, view.payout)]
    assert money == [5000, 250, 300, 4450]
    assert money[0] == money[1] + money[2] + money[3]


async def test_the_settlement_is_revalidated_with_its_etag(api: Api) -> None:
    campaign(api)
    first = await api.client.get(SETTLEMENT, headers=AUTH_A)
    etag = first.headers["etag"]
    same = await api.client.get(SETTLEMENT, headers={**AUTH_A, "If-None-Match": etag})
    assert same.status_code == 304
    campaign(api, status="closed", outcome="funded")
    changed = await api.client.get(SETTLEMENT, headers={**AUTH_A, "If-None-Match": etag})
    assert changed.status_code == 200 and changed.json()["status"] == "settling"


async def test_a_settlement_not_projected_while_the_read_model_is_rebuilt_is_503(
    api: Api,
) -> None:
    campaign(api)
    api.fakes.settlement.is_whole = False
    response = await api.client.get(SETTLEMENT, headers=AUTH_A)
    assert (response.status_code, problem_type(response)) == (503, "unavailable")
    assert response.headers["retry-after"] == "1"


async def test_another_tenants_settlement_is_404(api: Api) -> None:
    campaign(api)
    response = await api.client.get(SETTLEMENT, headers=AUTH_B)
    assert (response.status_code, problem_type(response)) == (404, "not-found")


async def test_an_unknown_campaigns_settlement_is_404(api: Api) -> None:
    response = await api.client.get("/v1/campaigns/nope/settlement", headers=AUTH_A)
    assert response.status_code == 404


# --- payment status on GET pledge -------------------------------------------------------------


def accepted_pledge(api: Api) -> None:
    api.fakes.readmodel.pledges[(QA, "p-1")] = PledgeRow(
        status="accepted",
        doc={
            "pledge_id": "p-1",
            "campaign_id": QA,
            "tenant_id": "tenant-a",
            "backer_id": "b-1",
            "amount": {"amount_minor": 2500, "currency": "EUR"},
            "tier_id": None,
            "seq": 3,
            "reason": None,
            "detail": None,
        },
        refusal=None,
    )


async def test_an_accepted_pledge_without_settlement_record_is_pending_payment(api: Api) -> None:
    accepted_pledge(api)
    response = await api.client.get("/v1/campaigns/c-1/pledges/p-1", headers=AUTH_A)
    assert response.status_code == 200
    assert response.json()["payment"]["status"] == "pending"


async def test_a_failed_capture_shows_with_its_retry_deadline(api: Api) -> None:
    accepted_pledge(api)
    capture_failed(api)
    payment = (await api.client.get("/v1/campaigns/c-1/pledges/p-1", headers=AUTH_A)).json()[
        "payment"
    ]
    assert (payment["status"], payment["retry_until"]) == (
        "capture_failed",
        "2027-01-08T00:00:00Z",
    )


async def test_listed_pledges_show_their_payment_as_their_own_get_does(api: Api) -> None:
    accepted_pledge(api)
    capture_failed(api)
    doc = api.fakes.readmodel.pledges[(QA, "p-1")].doc
    # p-2: nothing recorded by settlement yet (pending); p-3: no money moved (no payment).
    api.fakes.readmodel.pledges[(QA, "p-2")] = PledgeRow(
        "cancelled", {**doc, "pledge_id": "p-2"}, None
    )
    api.fakes.readmodel.pledges[(QA, "p-3")] = PledgeRow(
        "rejected", {**doc, "pledge_id": "p-3"}, None
    )
    response = await api.client.get("/v1/campaigns/c-1/pledges", headers=AUTH_A)
    assert response.status_code == 200
    listed = {item["pledge_id"]: item for item in response.json()["data"]}
    assert listed["p-1"]["payment"]["status"] == "capture_failed"
    assert listed["p-2"]["payment"]["status"] == "pending"
    assert listed["p-3"].get("payment") is None
    for pledge_id in ("p-1", "p-2", "p-3"):
        url = f"/v1/campaigns/c-1/pledges/{pledge_id}"
        own = (await api.client.get(url, headers=AUTH_A)).json()
        assert listed[pledge_id] == own


# --- the commands -----------------------------------------------------------------------------


async def test_a_payment_method_fix_stores_the_token_and_sends_a_command_without_it(
    api: Api,
) -> None:
    response = await post(api, "fix", "k-1")
    assert response.status_code == 202
    assert response.json() == {
        "campaign_id": "c-1",
        "pledge_id": "p-1",
        "status": "pending",
        "status_url": "/v1/campaigns/c-1/pledges/p-1",
    }
    [(key, value)] = api.fakes.settlement_bus.sent
    command = decode_settlement_command(value)
    assert isinstance(command, UpdatePaymentMethod) and key == QA
    assert (command.campaign_id, command.pledge_id) == (QA, "p-1")
    assert command.command_id == command_id_for("tenant-a", "k-1")
    assert b"tok_ok" not in value
    assert api.fakes.tokens.tokens == {"tenant-a/c-1/p-1": "tok_ok"}
    assert api.fakes.bus.sent == []  # not on pledge-commands


async def test_a_fix_of_a_pledge_whose_capture_has_not_failed_is_409_and_stores_nothing(
    api: Api,
) -> None:
    response = await api.client.post(
        FIX, json={"payment_token": "tok_ok"}, headers=write_headers("k-1")
    )
    assert (response.status_code, problem_type(response)) == (409, "refused")
    assert response.json()["reason"] == "payment_not_failed"
    assert api.fakes.tokens.tokens == {} and api.fakes.settlement_bus.sent == []
    replay = await api.client.post(
        FIX, json={"payment_token": "tok_ok"}, headers=write_headers("k-1")
    )
    assert (replay.status_code, replay.headers["idempotent-replayed"]) == (409, "true")


async def test_a_refund_sends_refund_pledge_with_the_amount_and_reason(api: Api) -> None:
    response = await api.client.post(
        REFUND,
        json={"amount_minor": 1000, "reason": "damaged_reward"},
        headers=write_headers("k-1"),
    )
    assert response.status_code == 202
    [(_, value)] = api.fakes.settlement_bus.sent
    command = decode_settlement_command(value)
    assert isinstance(command, RefundPledge)
    assert (command.pledge_id, command.amount_minor, command.reason) == (
        "p-1",
        1000,
        "damaged_reward",
    )
    assert command.requested_by == "tenant-a"


async def test_a_refund_without_a_body_refunds_everything_left(api: Api) -> None:
    response = await api.client.post(REFUND, headers=write_headers("k-1"))
    assert response.status_code == 202
    [(_, value)] = api.fakes.settlement_bus.sent
    command = decode_settlement_command(value)
    assert isinstance(command, RefundPledge) and command.amount_minor is None


async def test_a_revenue_report_sends_report_revenue(api: Api) -> None:
    response = await post(api, "revenue", "k-1")
    assert response.status_code == 202
    assert response.json()["status_url"] == SETTLEMENT
    [(_, value)] = api.fakes.settlement_bus.sent
    command = decode_settlement_command(value)
    assert isinstance(command, ReportRevenue)
    assert (command.period, command.amount_minor, command.currency) == ("2027-Q1", 100_000, "EUR")


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        (FIX, {}, "payment_token"),
        (FIX, {"payment_token": ""}, "payment_token"),
        (FIX, {"payment_token": "x" * 501}, "payment_token"),
        (REFUND, {"amount_minor": 0}, "amount_minor"),
        (REFUND, {"amount_minor": 1.5}, "amount_minor"),
        (REFUND, {"amount_minor": "10"}, "amount_minor"),
        (REFUND, {"reason": "Not A Code"}, "reason"),
        (REFUND, {"extra": 1}, "extra"),
        (REVENUE, {"period": "2027-Q5", "amount_minor": 1, "currency": "EUR"}, "period"),
        (REVENUE, {"period": "2027-13", "amount_minor": 1, "currency": "EUR"}, "period"),
        (REVENUE, {"period": "2027-Q1", "amount_minor": -1, "currency": "EUR"}, "amount_minor"),
        (REVENUE, {"period": "2027-Q1", "amount_minor": 1, "currency": "XYZ"}, "currency"),
        (REVENUE, {"period": "2027-Q1", "currency": "EUR"}, "amount_minor"),
    ],
)
async def test_an_invalid_body_is_422_naming_the_field(
    api: Api, path: str, body: dict[str, Any], field: str
) -> None:
    response = await api.client.post(path, json=body, headers=write_headers("k-1"))
    assert (response.status_code, problem_type(response)) == (422, "validation-error")
    assert field in [e["field"] for e in response.json()["errors"]]
    assert api.fakes.settlement_bus.sent == []


async def test_malformed_json_is_422_not_500(api: Api) -> None:
    response = await api.client.post(
        REFUND,
        content=b"{not json",
        headers={**write_headers("k-1"), "Content-Type": "application/json"},
    )
    assert response.status_code == 422


@pytest.mark.parametrize("endpoint", list(WRITES))
async def test_another_tenants_campaign_is_404_and_nothing_is_sent(api: Api, endpoint: str) -> None:
    response = await post(api, endpoint, "k-1", Authorization=AUTH_B["Authorization"])
    assert (response.status_code, problem_type(response)) == (404, "not-found")
    assert api.fakes.settlement_bus.sent == [] and api.fakes.tokens.tokens == {}


@pytest.mark.parametrize("endpoint", list(WRITES))
async def test_a_retry_is_replayed_and_another_body_with_the_key_is_422(
    api: Api, endpoint: str
) -> None:
    first = await post(api, endpoint, "k-1")
    again = await post(api, endpoint, "k-1")
    assert (again.status_code, again.content) == (first.status_code, first.content)
    assert again.headers["idempotent-replayed"] == "true"
    assert len(api.fakes.settlement_bus.sent) == 1
    reused = await post(api, endpoint, "k-1", other=True)
    assert (reused.status_code, problem_type(reused)) == (422, "idempotency-key-reused")


@pytest.mark.parametrize("endpoint", list(WRITES))
async def test_a_write_without_idempotency_key_is_400(api: Api, endpoint: str) -> None:
    path, body, _ = WRITES[endpoint]
    response = await api.client.post(path, json=body, headers=AUTH_A)
    assert (response.status_code, problem_type(response)) == (400, "idempotency-key-required")


async def test_prefer_wait_answers_the_accepted_decision(api: Api) -> None:
    api.fakes.settlement.decisions[command_id_for("tenant-a", "k-1")] = {
        "outcome": "accepted",
        "seq": 12,
        "event_type": "RefundRequested",
    }
    response = await post(api, "refund", "k-1", Prefer="wait=5")
    assert response.status_code == 200
    assert response.json() == {
        "campaign_id": "c-1",
        "pledge_id": "p-1",
        "status": "accepted",
        "event_type": "RefundRequested",
        "seq": 12,
    }


async def test_prefer_wait_answers_a_refusal_as_409_with_its_reason(api: Api) -> None:
    api.fakes.settlement.decisions[command_id_for("tenant-a", "k-1")] = {
        "outcome": "refused",
        "seq": 4,
        "reason": "campaign_not_settled",
        "detail": "revenue is shared once the campaign is settled",
    }
    response = await post(api, "revenue", "k-1", Prefer="wait=5")
    assert (response.status_code, problem_type(response)) == (409, "refused")
    assert response.json()["reason"] == "campaign_not_settled"


async def test_an_unreachable_command_log_is_503_and_the_retry_sends_again(api: Api) -> None:
    api.fakes.settlement_bus.failure = ConnectionError("down")
    response = await post(api, "refund", "k-1")
    assert (response.status_code, problem_type(response)) == (503, "unavailable")
    api.fakes.settlement_bus.failure = None
    retry = await post(api, "refund", "k-1")
    assert retry.status_code == 202 and len(api.fakes.settlement_bus.sent) == 1
