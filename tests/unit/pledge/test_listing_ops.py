"""The listing upkeep the projector adds to each event's changes (pure)."""

from __future__ import annotations

from schemas.codec import encode
from schemas.events import CampaignClosed, CampaignLaunched, PledgeMade
from services.pledge.adapters.redis_readmodel import Keys
from services.pledge.projection import with_listing_ops
from tests.unit.pledge.conftest import CAMPAIGN, TENANT, Campaign, close, launch, pledge

KEYS = Keys("t.")


def test_each_pledge_change_is_followed_by_its_index_op_and_the_event_is_kept() -> None:
    campaign = Campaign().given(launch(), pledge("p-1", 2500))
    made = next(e for e in campaign.log if isinstance(e.payload, PledgeMade))
    ops = [
        (KEYS.pledge(CAMPAIGN, "p-1"), "set:accepted", b"{}"),
        (KEYS.decision("cmd"), "decide", b"{}"),
    ]

    out = with_listing_ops(ops, made, TENANT, KEYS)

    assert out == [
        (KEYS.pledge(CAMPAIGN, "p-1"), "set:accepted", b"{}"),
        (KEYS.pledge_index(CAMPAIGN, ""), "ix:p-1", b""),
        (KEYS.decision("cmd"), "decide", b"{}"),
        (KEYS.events(CAMPAIGN), f"ev:{made.seq}", encode(made)),
    ]


def test_a_note_on_a_pledge_moves_no_index() -> None:
    campaign = Campaign().given(launch(), pledge("p-1", 2500))
    made = campaign.log[-1]

    out = with_listing_ops([(KEYS.pledge(CAMPAIGN, "p-1"), "note", b"{}")], made, TENANT, KEYS)

    assert [op for _key, op, _value in out] == ["note", f"ev:{made.seq}"]


def test_launch_and_close_file_the_campaign_under_its_tenant_by_status() -> None:
    campaign = Campaign().given(launch(), close())
    launched = next(e for e in campaign.log if isinstance(e.payload, CampaignLaunched))
    closed = next(e for e in campaign.log if isinstance(e.payload, CampaignClosed))

    on_launch = with_listing_ops([], launched, TENANT, KEYS)
    on_close = with_listing_ops([], closed, TENANT, KEYS)
    unknown_tenant = with_listing_ops([], closed, None, KEYS)

    assert on_launch[0] == (KEYS.campaign_index(TENANT, ""), f"cx:{CAMPAIGN}", b"open")
    assert on_close[0] == (KEYS.campaign_index(TENANT, ""), f"cx:{CAMPAIGN}", b"closed")
    assert [op for _key, op, _value in unknown_tenant] == [f"ev:{closed.seq}"]
