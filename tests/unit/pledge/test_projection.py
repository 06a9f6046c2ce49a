"""One shape for a pledge row, whoever writes it: the API (pending) and the projector
(accepted, rejected). The projector's rows are compared with the builders here, so the two
cannot drift apart before the projector builds them with ``services.pledge.projection``."""

from __future__ import annotations

import orjson

from schemas.events import PledgeCancelled, PledgeMade, PledgeRejected
from services.pledge.adapters.redis_readmodel import Keys
from services.pledge.projection import (
    accepted_pledge_row,
    cancellation,
    initial_summary,
    pending_pledge_row,
    pledge_row,
    project,
    refusal_note,
    rejected_pledge_row,
)
from tests.unit.pledge.conftest import CAMPAIGN, TENANT, Campaign, cancel, launch, pledge

MEMBERS = [
    "pledge_id",
    "campaign_id",
    "status",
    "backer_id",
    "amount",
    "tier_id",
    "seq",
    "reason",
    "detail",
    "tenant_id",
]


def projected_rows(campaign: Campaign) -> dict[str, tuple[str, bytes]]:
    """The projector's pledge ops of ``campaign``'s log: pledge key -> (op, value)."""
    keys = Keys("t.")
    summary, tenant = initial_summary(CAMPAIGN), None
    rows: dict[str, tuple[str, bytes]] = {}
    for envelope in campaign.log:
        tenant, ops = project(summary, tenant, envelope, keys)
        for key, op, value in ops:
            if ":rm:p:" in key:
                rows[key] = (op, value)
    return rows


def test_the_pending_row_is_the_one_the_api_always_wrote() -> None:
    row = pending_pledge_row(
        pledge_id="p-1",
        campaign_id="c-1",
        backer_id="b-1",
        amount_minor=2500,
        currency="EUR",
        tier_id=None,
        tenant_id="tenant-a",
    )
    assert orjson.dumps(row) == orjson.dumps(
        {
            "pledge_id": "p-1",
            "campaign_id": "c-1",
            "status": "pending",
            "backer_id": "b-1",
            "amount": {"amount_minor": 2500, "currency": "EUR"},
            "tier_id": None,
            "seq": None,
            "reason": None,
            "detail": None,
            "tenant_id": "tenant-a",
        }
    )


def test_the_projectors_accepted_row_is_built_as_here() -> None:
    campaign = Campaign().given(launch(), pledge("p-1", 2500, "early"))
    made = next(e for e in campaign.log if isinstance(e.payload, PledgeMade))
    assert isinstance(made.payload, PledgeMade)
    op, value = projected_rows(campaign)[Keys("t.").pledge(CAMPAIGN, "p-1")]
    expected = accepted_pledge_row(made.payload, CAMPAIGN, made.seq, TENANT)
    assert (op, value) == ("set:accepted", orjson.dumps(expected))
    assert list(expected) == MEMBERS


def test_the_projectors_rejected_row_is_built_as_here() -> None:
    campaign = Campaign().given(launch())
    campaign.given(pledge("p-2", 1000, "early"))  # below the tier's minimum: refused
    refused = next(e for e in campaign.log if isinstance(e.payload, PledgeRejected))
    assert isinstance(refused.payload, PledgeRejected)
    op, value = projected_rows(campaign)[Keys("t.").pledge(CAMPAIGN, "p-2")]
    expected = rejected_pledge_row(refused.payload, CAMPAIGN, refused.seq, TENANT)
    assert (op, value) == ("refuse", orjson.dumps(expected))
    assert list(expected) == MEMBERS


def test_every_row_has_the_same_members_in_the_same_order() -> None:
    row = pledge_row(
        pledge_id="p",
        campaign_id="c",
        status="accepted",
        backer_id="b",
        amount_minor=1,
        currency="EUR",
        tier_id=None,
        seq=1,
        reason=None,
        detail=None,
        tenant_id=None,
    )
    assert list(row) == MEMBERS


def test_the_projectors_cancellation_and_refusal_note_are_built_as_here() -> None:
    campaign = Campaign().given(launch(), pledge("p-1", 2500), cancel("p-1"), cancel("p-9"))
    cancelled = next(e for e in campaign.log if isinstance(e.payload, PledgeCancelled))
    refused = next(e for e in campaign.log if isinstance(e.payload, PledgeRejected))
    assert isinstance(cancelled.payload, PledgeCancelled)
    assert isinstance(refused.payload, PledgeRejected)
    rows = projected_rows(campaign)
    keys = Keys("t.")
    assert rows[keys.pledge(CAMPAIGN, "p-1")] == (
        "cancel",
        orjson.dumps(cancellation(cancelled.seq, cancelled.payload.reason)),
    )
    assert rows[keys.pledge(CAMPAIGN, "p-9")] == (
        "note",
        orjson.dumps(refusal_note(refused.payload, refused.seq)),
    )
