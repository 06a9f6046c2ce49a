"""The typed client's settlement methods against the real app over in-memory fakes: typed
reads of the settlement, settlement commands sent once across injected 503s, refusals and
unknown campaigns as typed exceptions."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
import pytest_asyncio
from prometheus_client import CollectorRegistry

from schemas.settlement_commands import RefundPledge, ReportRevenue, decode_settlement_command
from schemas.tenancy import qualify
from services.client import NotFound, PledgeflowClient, Refused, ValidationFailed
from services.pledge.adapters.redis_readmodel import CampaignRow
from services.pledge.api import create_app
from services.pledge.api.command_ids import command_id_for
from services.pledge.api.config import ApiSettings
from services.settlement.api_models import (
    SettlementCommandAccepted,
    SettlementCommandDecided,
    SettlementView,
)
from tests.support.api import KEY_A, KEY_B
from tests.support.flaky import Flaky, client_through_flaky
from tests.unit.pledge.api.fakes import FakePorts

STORED = qualify("tenant-a", "c-1")


@dataclass
class Rig:
    fakes: FakePorts
    flaky: Flaky
    client: PledgeflowClient


@pytest_asyncio.fixture
async def rig() -> AsyncIterator[Rig]:
    fakes = FakePorts()
    fakes.readmodel.campaigns[STORED] = CampaignRow(
        seq=4,
        tenant_id="tenant-a",
        doc={
            "campaign_id": STORED,
            "status": "closed",
            "outcome": "funded",
            "goal": {"amount_minor": 1000, "currency": "EUR"},
            "seq": 4,
        },
    )
    settings = ApiSettings(api_keys=f"tenant-a:{KEY_A},tenant-b:{KEY_B}", api_max_wait_seconds=5)
    app = create_app(settings, registry=CollectorRegistry(), ports=fakes.opened)
    async with client_through_flaky(app, KEY_A) as (flaky, client):
        yield Rig(fakes, flaky, client)


async def test_get_settlement_is_the_shared_model(rig: Rig) -> None:
    view = await rig.client.get_settlement("c-1")
    assert isinstance(view, SettlementView)
    assert (view.campaign_id, view.status, view.outcome) == ("c-1", "settling", "funded")
    with pytest.raises(NotFound):
        await rig.client.get_settlement("c-missing")


async def test_commands_are_sent_once_across_injected_503s(rig: Rig) -> None:
    rig.flaky.plan = ["after", "pass", "before", "pass"]
    refund = await rig.client.refund_pledge("c-1", "p-1", {"amount_minor": 500})
    revenue = await rig.client.report_revenue(
        "c-1", {"period": "2027-Q1", "amount_minor": 1000, "currency": "EUR"}
    )
    assert isinstance(refund, SettlementCommandAccepted) and refund.pledge_id == "p-1"
    assert revenue.status == "pending"
    commands = [decode_settlement_command(v) for _, v in rig.fakes.settlement_bus.sent]
    assert [type(c) for c in commands] == [RefundPledge, ReportRevenue]


async def test_a_decided_command_and_a_refusal(rig: Rig) -> None:
    key = "refund-1"
    rig.fakes.settlement.decisions[command_id_for("tenant-a", key)] = {
        "outcome": "accepted", "seq": 9, "event_type": "RefundRequested",
    }  # fmt: skip
    decided = await rig.client.refund_pledge("c-1", "p-1", wait=5, idempotency_key=key)
    assert isinstance(decided, SettlementCommandDecided) and decided.seq == 9
    with pytest.raises(Refused) as refused:  # the pledge's capture has not failed
        await rig.client.fix_payment_method("c-1", "p-1", {"payment_token": "tok_ok"})
    assert refused.value.problem.reason == "payment_not_failed"
    with pytest.raises(ValidationFailed):
        await rig.client.refund_pledge("c-1", "p-1", {"amount_minor": 0})
