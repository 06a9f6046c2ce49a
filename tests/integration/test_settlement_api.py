"""Settlement through the API on the real broker and Redis: the API, the campaign processor,
both projectors and the settlement worker (sandbox gateway), in-process on this module's own
topics. A campaign settles and GET settlement shows it with a balanced ledger; a refund after
settlement; a payment-method fix that makes the next retry succeed; a coproduction revenue
report distributed to the unit; the payment tokens erased once the pledges are resolved."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry

from schemas.events import RevenueShared
from schemas.money import allocate, bps_of
from schemas.tenancy import pledge_key, qualify
from services.pledge.adapters.payment_tokens import load_payment_tokens
from services.pledge.config import PledgeSettings
from services.settlement.adapters.sandbox_gateway import SandboxGateway
from services.settlement.api_models import SettlementView
from services.settlement.app import SettlementWorker
from services.settlement.config import SettlementSettings
from tests.support.api import (
    AUTH_A,
    AUTH_B,
    KEY_A,
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
    settlement_projector,
    topic_values,
    uvicorn_server,
    write_headers,
)
from tests.support.infra import kafka_bootstrap, redis_url, unique_name

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]


@dataclass
class Stack:
    settings: PledgeSettings
    settlement: SettlementSettings
    api: httpx.AsyncClient
    sandbox: SandboxGateway


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def stack(broker: Any, redis_server: str) -> AsyncIterator[Stack]:
    settings = api_settings(kafka_bootstrap(), redis_url(), unique_name("settleapi"))
    settlement = SettlementSettings(
        kafka_bootstrap=settings.kafka_bootstrap,
        redis_url=settings.redis_url,
        topic_prefix=settings.topic_prefix,
        partitions=settings.partitions,
        sandbox_prefix=f"{settings.topic_prefix}sbx:",
        settlement_tick_seconds=0.05,
        # Long enough that no retry comes by itself during a test: only a fix makes one due.
        settlement_retry_schedule="10m,20m",
    )
    await create_topics(settings)
    sandbox = SandboxGateway.from_url(settings.redis_url, prefix=settlement.sandbox_prefix)
    worker = SettlementWorker(settlement, sandbox, registry=CollectorRegistry())
    await worker.start()
    try:
        async with (
            processor(settings),
            projector(settings),
            settlement_projector(settlement),
            api_client(settings) as client,
        ):
            yield Stack(settings, settlement, client, sandbox)
    finally:
        await worker.stop()
        cleanup = SandboxGateway.from_url(settings.redis_url, prefix=settlement.sandbox_prefix)
        await cleanup.forget()
        await cleanup.aclose()
        client_redis = aioredis.Redis.from_url(settings.redis_url)
        async for key in client_redis.scan_iter(match=f"{settings.topic_prefix}pf:*"):
            await client_redis.unlink(key)
        await client_redis.aclose()


async def funded_campaign(
    api: httpx.AsyncClient, pledges: dict[str, tuple[int, str]], **overrides: Any
) -> str:
    """A campaign of tenant A whose deadline passes seconds from now with its goal reached."""
    campaign_id = new_id("c")
    deadline = (datetime.now(UTC) + timedelta(seconds=6)).strftime("%Y-%m-%dT%H:%M:%SZ")
    body = launch_body(
        campaign_id,
        deadline=deadline,
        goal={"amount_minor": 1000, "currency": "EUR"},
        tiers=[],
        **overrides,
    )
    launched = await api.post(
        "/v1/campaigns", json=body, headers=write_headers(new_id("k"), Prefer="wait=10")
    )
    assert launched.status_code == 201, launched.text
    for pledge_id, (amount, token) in pledges.items():
        made = await api.post(
            f"/v1/campaigns/{campaign_id}/pledges",
            json=pledge_body(
                pledge_id,
                backer_id=f"b-{pledge_id}",
                amount_minor=amount,
                tier_id=None,
                payment_token=token,
            ),
            headers=write_headers(new_id("k"), Prefer="wait=10"),
        )
        assert made.status_code == 201, made.text
    return campaign_id


async def settlement_of(api: httpx.AsyncClient, campaign_id: str) -> SettlementView:
    response = await api.get(f"/v1/campaigns/{campaign_id}/settlement", headers=AUTH_A)
    assert response.status_code == 200, response.text
    return SettlementView.model_validate_json(response.content)


async def until_settled(api: httpx.AsyncClient, campaign_id: str) -> SettlementView:
    async def settled() -> SettlementView | None:
        view = await settlement_of(api, campaign_id)
        return view if view.status == "settled" else None

    found: SettlementView = await eventually(settled, within=60)
    return found


async def payment(api: httpx.AsyncClient, campaign_id: str, pledge_id: str) -> dict[str, Any]:
    response = await api.get(f"/v1/campaigns/{campaign_id}/pledges/{pledge_id}", headers=AUTH_A)
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()["payment"]
    return found


async def ledger_table_shows(stack: Stack, campaign_id: str, view: SettlementView) -> None:
    """``pledgeflow ledger --api-url`` against a real server prints the read model's table."""
    async with uvicorn_server(stack.settings) as base_url:
        env = {**os.environ, "PLEDGEFLOW_API_KEY": KEY_A, "PLEDGEFLOW_API_URL": base_url}
        cli = [sys.executable, "-m", "services.cli", "ledger", "--campaign", campaign_id]
        table = await asyncio.create_subprocess_exec(
            *cli, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        out, err = await table.communicate()
        assert table.returncode == 0, err
        text = out.decode()
        assert "creator_payable" in text and "settled funded" in text
        assert f"refunded {view.refunded_count}" in text
        as_json = await asyncio.create_subprocess_exec(
            *cli, "--json", env=env, stdout=asyncio.subprocess.PIPE
        )
        raw, _ = await as_json.communicate()
        assert SettlementView.model_validate_json(raw) == view
        missing = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "services.cli", "ledger", "--campaign", "nope",
            env=env, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        _, err = await missing.communicate()
        assert missing.returncode == 2
        assert err.decode().strip() == "ledger: campaign: no campaign 'nope' for this API key"


def balanced(view: SettlementView) -> bool:
    return sum(line.debit_minor for line in view.ledger) == sum(
        line.credit_minor for line in view.ledger
    )


async def test_a_settled_campaign_then_a_refund_after_payout(stack: Stack) -> None:
    api = stack.api
    campaign_id = await funded_campaign(api, {"p-1": (2500, "tok_ok"), "p-2": (4000, "tok_ok")})
    assert (await settlement_of(api, campaign_id)).status in ("open", "settling")
    view = await until_settled(api, campaign_id)
    assert (view.outcome, view.captured_count, view.failed_count) == ("funded", 2, 0)
    assert view.gross.amount_minor == 6500 and view.gross.currency == "EUR"
    assert view.commission.amount_minor == bps_of(6500, 500)
    assert view.gross.amount_minor == (
        view.commission.amount_minor + view.fees.amount_minor + view.payout.amount_minor
    )
    assert balanced(view) and view.seq >= 3
    assert (await payment(api, campaign_id, "p-2"))["status"] == "captured"
    # The listing shows each pledge as its own GET does, payment included (read from the
    # settlement read model by the page's own script).
    listed = await api.get(f"/v1/campaigns/{campaign_id}/pledges", headers=AUTH_A)
    assert listed.status_code == 200, listed.text
    for item in listed.json()["data"]:
        url = f"/v1/campaigns/{campaign_id}/pledges/{item['pledge_id']}"
        assert item == (await api.get(url, headers=AUTH_A)).json()
        assert item["payment"]["status"] == "captured"
    other = await api.get(f"/v1/campaigns/{campaign_id}/settlement", headers=AUTH_B)
    assert other.status_code == 404

    refund = await api.post(
        f"/v1/campaigns/{campaign_id}/pledges/p-2/refund",
        json={"amount_minor": 1500, "reason": "item_not_delivered"},
        headers=write_headers(new_id("k"), Prefer="wait=10"),
    )
    assert refund.status_code == 200, refund.text
    assert refund.json()["event_type"] == "RefundRequested"

    async def refunded() -> dict[str, Any] | None:
        paid = await payment(api, campaign_id, "p-2")
        return paid if paid["refunded_minor"] == 1500 else None

    paid = await eventually(refunded, within=30)
    assert paid["status"] == "captured"  # partly refunded: 2500 of 4000 still collected
    after = await settlement_of(api, campaign_id)
    assert after.refunded_count == 1 and balanced(after)
    assert after.gross.amount_minor == 6500 - 1500
    # After payout the creator's payable is debited; commission and fees stay.
    assert after.payout.amount_minor == view.payout.amount_minor - 1500
    assert after.commission == view.commission and after.fees == view.fees
    assert (await stack.sandbox.pledge_counts(qualify("tenant-a", campaign_id), "p-2"))[
        "refunded_minor"
    ] == 1500

    await ledger_table_shows(stack, campaign_id, after)

    too_much = await api.post(
        f"/v1/campaigns/{campaign_id}/pledges/p-2/refund",
        json={"amount_minor": 9999},
        headers=write_headers(new_id("k"), Prefer="wait=10"),
    )
    assert too_much.status_code == 409
    assert too_much.json()["reason"] == "refund_exceeds_captured"


async def test_a_payment_method_fix_makes_the_next_retry_succeed(stack: Stack) -> None:
    api = stack.api
    campaign_id = await funded_campaign(
        api, {"p-bad": (2500, "tok_declined"), "p-ok": (3000, "tok_ok")}
    )

    async def failed() -> dict[str, Any] | None:
        paid = await payment(api, campaign_id, "p-bad")
        return paid if paid["status"] == "capture_failed" else None

    paid = await eventually(failed, within=60)
    assert paid["attempts"] == 1 and paid["retry_until"] is not None
    assert (await settlement_of(api, campaign_id)).status == "settling"

    fix = await api.post(
        f"/v1/campaigns/{campaign_id}/pledges/p-bad/payment-method",
        json={"payment_token": "tok_ok"},
        headers=write_headers(new_id("k"), Prefer="wait=10"),
    )
    assert fix.status_code == 200, fix.text
    assert fix.json()["event_type"] == "PaymentMethodUpdated"
    view = await until_settled(api, campaign_id)
    assert (view.captured_count, view.failed_count, view.gross.amount_minor) == (2, 1, 5500)
    assert balanced(view)
    captured = await payment(api, campaign_id, "p-bad")
    assert (captured["status"], captured["attempts"]) == ("captured", 2)
    counts = await stack.sandbox.pledge_counts(qualify("tenant-a", campaign_id), "p-bad")
    assert (counts["failed"], counts["collected"]) == (1, 1)
    # The new token never entered the log; the pledges' tokens are erased once resolved.
    for event_type in ("PaymentMethodUpdated", "PledgeCaptured", "PledgeCaptureFailed"):
        values = await topic_values(stack.settings, event_type)
        assert values and all(b"tok_ok" not in value for value in values)

    async def erased() -> bool:
        tokens = await load_payment_tokens(
            stack.settings.kafka_bootstrap,
            stack.settings.topics().payment_tokens,
            stack.settings.partitions,
        )
        qualified = qualify("tenant-a", campaign_id)
        return all(pledge_key(qualified, p) not in tokens for p in ("p-bad", "p-ok"))

    assert await eventually(erased, within=30)


async def test_a_coproduction_revenue_report_is_distributed_to_the_unit(stack: Stack) -> None:
    api = stack.api
    amounts = {"p-a": 1000, "p-b": 2500, "p-c": 333}
    campaign_id = await funded_campaign(
        api,
        {p: (a, "tok_ok") for p, a in amounts.items()},
        kind="coproduction",
        revenue_share={"share_bps": 1000, "duration_months": 24},
    )
    early = await api.post(
        f"/v1/campaigns/{campaign_id}/revenue",
        json={"period": "2026-12", "amount_minor": 100, "currency": "EUR"},
        headers=write_headers(new_id("k")),
    )
    assert early.status_code == 202  # decided later: refused if it arrives before settlement
    await until_settled(api, campaign_id)
    report = await api.post(
        f"/v1/campaigns/{campaign_id}/revenue",
        json={"period": "2027-Q1", "amount_minor": 123_457, "currency": "EUR"},
        headers=write_headers(new_id("k"), Prefer="wait=10"),
    )
    assert report.status_code == 200, report.text
    assert report.json()["event_type"] == "RevenueShared"
    qualified = qualify("tenant-a", campaign_id)
    [shared] = [
        e.payload
        for e in await events_of(stack.settings, "RevenueShared")
        if e.campaign_id == qualified and e.payload.period == "2027-Q1"
    ]
    assert isinstance(shared, RevenueShared)
    total = bps_of(123_457, 1000)
    assert shared.shared.amount_minor == total == sum(s.amount_minor for s in shared.shares)
    by_pledge = {s.pledge_id: s.amount_minor for s in shared.shares}
    expected = allocate(total, list(amounts.values()))
    assert by_pledge == dict(zip(amounts, expected, strict=True))

    again = await api.post(
        f"/v1/campaigns/{campaign_id}/revenue",
        json={"period": "2027-Q1", "amount_minor": 5, "currency": "EUR"},
        headers=write_headers(new_id("k"), Prefer="wait=10"),
    )
    assert again.status_code == 409 and again.json()["reason"] == "period_already_reported"
