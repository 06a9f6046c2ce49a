"""Closing: the deadline timer, CloseCampaign commands, and the outcome rules."""

from __future__ import annotations

from datetime import timedelta

import pytest

from schemas.envelope import Envelope
from schemas.events import CampaignClosed, PledgeRejected, RejectionReason
from services.pledge.domain import deadline_causation_id, deadline_close
from tests.unit.pledge.conftest import (
    CAMPAIGN,
    DEADLINE,
    Campaign,
    cancel,
    close,
    eur,
    launch,
    pledge,
    types,
)


def closed(events: list[Envelope]) -> CampaignClosed:
    assert types(events) == ["CampaignClosed"]
    payload = events[0].payload
    assert isinstance(payload, CampaignClosed)
    return payload


def timer(campaign: Campaign, at: object = DEADLINE) -> list[Envelope]:
    events = deadline_close(campaign.state, at)  # type: ignore[arg-type]
    campaign.apply(events)
    return events


def test_deadline_timer_closes_a_funded_all_or_nothing_campaign_as_funded(
    launched: Campaign,
) -> None:
    launched.given(pledge("p1", 70_000), pledge("p2", 30_000))

    events = timer(launched)

    result = closed(events)
    assert (result.outcome, result.reason) == ("funded", "deadline")
    assert (result.total, result.accepted_pledges) == (eur(100_000), 2)
    assert result.last_seq == events[0].seq == 5
    assert events[0].causation_id == deadline_causation_id(CAMPAIGN)
    assert events[0].occurred_at == DEADLINE
    assert launched.state.status == "closed"
    assert launched.state.outcome == "funded"


def test_deadline_timer_closes_an_all_or_nothing_campaign_below_goal_as_failed(
    launched: Campaign,
) -> None:
    launched.given(pledge("p1", 99_999))

    assert closed(timer(launched)).outcome == "failed"


def test_keep_it_all_campaign_below_goal_with_a_pledge_is_funded() -> None:
    campaign = Campaign().given(launch(funding_model="keep_it_all"), pledge("p1", 500))

    assert closed(timer(campaign)).outcome == "funded"


def test_keep_it_all_campaign_without_active_pledges_fails() -> None:
    campaign = Campaign().given(
        launch(funding_model="keep_it_all"), pledge("p1", 500), cancel("p1")
    )

    result = closed(timer(campaign))
    assert (result.outcome, result.accepted_pledges, result.total) == ("failed", 0, eur(0))


def test_goal_reached_then_dropped_below_closes_as_failed(launched: Campaign) -> None:
    launched.given(pledge("p1", 100_000), pledge("p2", 10), cancel("p1"))

    result = closed(timer(launched))
    assert (result.outcome, result.total, result.accepted_pledges) == ("failed", eur(10), 1)


def test_deadline_timer_before_the_deadline_does_nothing(launched: Campaign) -> None:
    assert timer(launched, DEADLINE - timedelta(microseconds=1)) == []


def test_deadline_timer_on_a_closed_campaign_does_nothing(launched: Campaign) -> None:
    timer(launched)

    assert timer(launched, DEADLINE + timedelta(days=1)) == []


def test_deadline_timer_on_an_unlaunched_campaign_does_nothing(campaign: Campaign) -> None:
    assert timer(campaign) == []


def test_deadline_timer_is_deterministic(launched: Campaign) -> None:
    assert deadline_close(launched.state, DEADLINE) == deadline_close(launched.state, DEADLINE)


@pytest.mark.parametrize("reason", ["creator_cancelled", "platform_suspended"])
def test_close_command_before_deadline_cancels_the_campaign(
    launched: Campaign, reason: str
) -> None:
    launched.given(pledge("p1", 150_000))

    result = closed(launched.when(close(reason)))

    assert (result.outcome, result.reason) == ("cancelled", reason)
    assert (result.total, result.accepted_pledges) == (eur(150_000), 1)
    assert launched.state.outcome == "cancelled"


def test_closing_a_closed_campaign_yields_no_event(launched: Campaign) -> None:
    launched.given(close("creator_cancelled"))

    assert launched.when(close("platform_suspended")) == []


def test_closing_an_unlaunched_campaign_yields_no_event(campaign: Campaign) -> None:
    assert campaign.when(close("creator_cancelled")) == []


def test_deadline_close_command_before_the_deadline_yields_no_event(launched: Campaign) -> None:
    assert launched.when(close("deadline")) == []
    assert launched.state.status == "open"


def test_deadline_close_command_at_the_deadline_closes_by_outcome(launched: Campaign) -> None:
    launched.given(pledge("p1", 100_000))

    result = closed(launched.when(close("deadline"), at=DEADLINE))

    assert (result.outcome, result.reason) == ("funded", "deadline")


def test_creator_cancel_after_the_deadline_closes_as_the_deadline_would(
    launched: Campaign,
) -> None:
    launched.given(pledge("p1", 100_000))

    result = closed(launched.when(close("creator_cancelled"), at=DEADLINE))

    assert (result.outcome, result.reason) == ("funded", "deadline")


def test_platform_suspension_after_the_deadline_still_cancels(launched: Campaign) -> None:
    launched.given(pledge("p1", 100_000))

    result = closed(launched.when(close("platform_suspended"), at=DEADLINE))

    assert (result.outcome, result.reason) == ("cancelled", "platform_suspended")


def test_close_from_another_tenant_is_refused_as_tenant_mismatch(launched: Campaign) -> None:
    command = close("creator_cancelled", tenant_id="tenant-b")

    events = launched.when(command)

    assert types(events) == ["PledgeRejected"]
    refusal = events[0].payload
    assert isinstance(refusal, PledgeRejected)
    assert (refusal.reason, refusal.pledge_id) == (
        RejectionReason.TENANT_MISMATCH,
        command.command_id,
    )
    assert launched.state.status == "open"


def test_closed_event_last_seq_is_its_own_seq_after_a_goal(launched: Campaign) -> None:
    launched.given(pledge("p1", 100_000), pledge("p2", 1))  # seqs 2, 3 (goal), 4

    (event,) = launched.when(close("creator_cancelled"))

    assert event.seq == 5
    assert closed([event]).last_seq == 5
