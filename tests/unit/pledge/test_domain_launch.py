"""Launching a campaign: once per id, in the future, with valid terms."""

from __future__ import annotations

from datetime import timedelta

import pytest
from pydantic import ValidationError

from schemas.canonical import GENESIS_HASH
from schemas.envelope import Envelope
from schemas.events import CampaignLaunched, PledgeRejected, RejectionReason, Tier
from tests.unit.pledge.conftest import (
    CAMPAIGN,
    DEADLINE,
    T0,
    Campaign,
    close,
    eur,
    launch,
    pledge,
    types,
)


def reason_of(event: Envelope) -> RejectionReason:
    assert isinstance(event.payload, PledgeRejected)
    return event.payload.reason


def test_launch_opens_the_campaign_with_campaign_launched_at_seq_1(campaign: Campaign) -> None:
    command = launch()

    events = campaign.when(command)

    assert types(events) == ["CampaignLaunched"]
    event = events[0]
    assert event.seq == 1
    assert event.prev_hash == GENESIS_HASH
    assert event.campaign_id == CAMPAIGN
    assert event.causation_id == command.command_id
    assert event.correlation_id == command.correlation_id
    assert event.occurred_at == T0
    assert isinstance(event.payload, CampaignLaunched)
    assert event.payload.goal == eur(100_000)
    assert event.payload.deadline == DEADLINE
    assert [t.tier_id for t in event.payload.tiers] == ["early", "std"]
    assert campaign.state.status == "open"


def test_launch_copies_every_term_of_the_command(campaign: Campaign) -> None:
    command = launch(funding_model="keep_it_all", commission_bps=800, title="Film")

    (event,) = campaign.when(command)

    terms = event.payload
    assert isinstance(terms, CampaignLaunched)
    for name in ("tenant_id", "creator_id", "title", "goal", "deadline", "funding_model"):
        assert getattr(terms, name) == getattr(command, name)
    assert terms.commission_bps == 800
    assert terms.tiers == command.tiers


def test_second_launch_of_a_launched_campaign_is_refused_as_already_launched(
    launched: Campaign,
) -> None:
    second = launch(title="Another")

    events = launched.when(second)

    assert types(events) == ["PledgeRejected"]
    refusal = events[0].payload
    assert isinstance(refusal, PledgeRejected)
    assert refusal.reason is RejectionReason.ALREADY_LAUNCHED
    assert refusal.pledge_id == second.command_id
    assert refusal.backer_id == second.creator_id
    assert launched.state.terms is not None and launched.state.terms.title == "A board game"


def test_relaunch_after_close_is_refused_as_already_launched(launched: Campaign) -> None:
    launched.given(close("creator_cancelled"))

    events = launched.when(launch())

    assert [e.payload.reason for e in events if isinstance(e.payload, PledgeRejected)] == [
        RejectionReason.ALREADY_LAUNCHED
    ]
    assert launched.state.status == "closed"


def test_exact_duplicate_launch_command_yields_no_event(campaign: Campaign) -> None:
    command = launch()
    campaign.given(command)

    assert campaign.when(command) == []


def test_launch_with_deadline_now_is_refused_as_deadline_in_past(campaign: Campaign) -> None:
    events = campaign.when(launch(deadline=T0), at=T0)

    assert types(events) == ["PledgeRejected"]
    assert reason_of(events[0]) is RejectionReason.DEADLINE_IN_PAST
    assert campaign.state.status == "absent"


def test_launch_with_deadline_in_the_past_is_refused(campaign: Campaign) -> None:
    events = campaign.when(launch(deadline=T0 - timedelta(seconds=1)), at=T0)

    assert reason_of(events[0]) is RejectionReason.DEADLINE_IN_PAST


def test_refused_launch_leaves_the_id_free_for_a_valid_launch(campaign: Campaign) -> None:
    campaign.given(launch(deadline=T0))

    events = campaign.when(launch())

    assert types(events) == ["CampaignLaunched"]
    assert events[0].seq == 2
    assert campaign.state.status == "open"


def test_refused_launch_does_not_reserve_its_command_id_as_a_pledge_id(
    campaign: Campaign,
) -> None:
    refused = launch(deadline=T0, command_id="shared-id")
    campaign.given(refused, launch())

    events = campaign.when(pledge("shared-id", 5_000))

    assert types(events) == ["PledgeMade"]


def test_goal_must_be_positive() -> None:
    with pytest.raises(ValidationError, match="goal"):
        launch(goal=eur(0))


def test_tier_ids_must_be_unique() -> None:
    tier = Tier(tier_id="t", title="T", min_amount_minor=100)
    with pytest.raises(ValidationError, match="unique"):
        launch(tiers=(tier, tier))


def test_tier_quantity_limit_must_be_at_least_one() -> None:
    with pytest.raises(ValidationError):
        Tier(tier_id="t", title="T", min_amount_minor=100, quantity_limit=0)
