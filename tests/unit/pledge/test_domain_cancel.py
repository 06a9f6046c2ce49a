"""Cancelling a pledge: only an active pledge of an open campaign; the late-window rule."""

from __future__ import annotations

from datetime import timedelta

from schemas.envelope import Envelope
from schemas.events import PledgeCancelled, PledgeRejected, RejectionReason
from services.pledge.domain import Policy
from tests.unit.pledge.conftest import (
    DEADLINE,
    Campaign,
    cancel,
    close,
    eur,
    launch,
    pledge,
    types,
)

LATE = DEADLINE - timedelta(hours=23)  # inside the last 24 h
EARLY = DEADLINE - timedelta(hours=25)


def refusal_reason(events: list[Envelope]) -> RejectionReason:
    assert types(events) == ["PledgeRejected"]
    payload = events[0].payload
    assert isinstance(payload, PledgeRejected)
    assert payload.detail
    return payload.reason


def test_cancel_of_active_pledge_emits_pledge_cancelled_with_amount_and_tier(
    launched: Campaign,
) -> None:
    launched.given(pledge("p1", 2_500, "early"))

    events = launched.when(cancel("p1", reason="fraud_removal"))

    assert types(events) == ["PledgeCancelled"]
    cancelled = events[0].payload
    assert isinstance(cancelled, PledgeCancelled)
    assert (cancelled.pledge_id, cancelled.amount, cancelled.tier_id, cancelled.reason) == (
        "p1",
        eur(2_500),
        "early",
        "fraud_removal",
    )


def test_cancel_removes_the_pledge_from_total_and_count(launched: Campaign) -> None:
    launched.given(pledge("p1", 2_500), pledge("p2", 4_000))

    launched.when(cancel("p1"))

    assert (launched.state.total_minor, launched.state.pledge_count) == (4_000, 1)
    assert launched.state.pledges["p1"].status == "cancelled"


def test_cancel_of_unknown_pledge_is_refused_as_pledge_not_found(launched: Campaign) -> None:
    assert refusal_reason(launched.when(cancel("ghost"))) is RejectionReason.PLEDGE_NOT_FOUND


def test_cancel_of_refused_pledge_is_refused_as_pledge_not_found(launched: Campaign) -> None:
    launched.given(pledge("p1", 10, "std"))  # below minimum: refused

    assert refusal_reason(launched.when(cancel("p1"))) is RejectionReason.PLEDGE_NOT_FOUND


def test_cancel_on_unknown_campaign_is_pledge_not_found_and_keeps_the_id_usable(
    campaign: Campaign,
) -> None:
    assert refusal_reason(campaign.when(cancel("p1"))) is RejectionReason.PLEDGE_NOT_FOUND

    campaign.given(launch())
    assert types(campaign.when(pledge("p1", 5_000))) == ["PledgeMade"]


def test_cancel_of_unknown_pledge_does_not_burn_the_pledge_id(launched: Campaign) -> None:
    launched.given(cancel("p1"))

    assert types(launched.when(pledge("p1", 5_000))) == ["PledgeMade"]


def test_cancel_of_cancelled_pledge_is_refused_as_pledge_not_active(launched: Campaign) -> None:
    launched.given(pledge("p1", 2_500), cancel("p1"))

    assert refusal_reason(launched.when(cancel("p1"))) is RejectionReason.PLEDGE_NOT_ACTIVE


def test_cancel_on_closed_campaign_is_refused_as_campaign_closed(launched: Campaign) -> None:
    launched.given(pledge("p1", 2_500), close("creator_cancelled"))

    assert refusal_reason(launched.when(cancel("p1"))) is RejectionReason.CAMPAIGN_CLOSED


def test_cancel_after_the_deadline_is_refused_even_before_the_timer_closes(
    launched: Campaign,
) -> None:
    launched.given(pledge("p1", 2_500))

    events = launched.when(cancel("p1"), at=DEADLINE)

    assert refusal_reason(events) is RejectionReason.DEADLINE_PASSED


def test_cancel_from_another_tenant_is_refused_as_tenant_mismatch(launched: Campaign) -> None:
    launched.given(pledge("p1", 2_500))

    events = launched.when(cancel("p1", tenant_id="tenant-b"))

    assert refusal_reason(events) is RejectionReason.TENANT_MISMATCH
    assert launched.state.pledges["p1"].status == "active"


def test_cancel_refusal_names_the_pledge_its_backer_and_amount(launched: Campaign) -> None:
    launched.given(pledge("p1", 2_500), cancel("p1"))

    (event,) = launched.when(cancel("p1"))

    assert isinstance(event.payload, PledgeRejected)
    assert (event.payload.pledge_id, event.payload.backer_id, event.payload.amount) == (
        "p1",
        "backer-of-p1",
        eur(2_500),
    )


# --- the last-24-hours rule (goal is 1,000.00 EUR) ------------------------------------------


def test_late_cancel_that_drops_a_funded_total_below_goal_is_refused(launched: Campaign) -> None:
    launched.given(pledge("p1", 60_000), pledge("p2", 50_000))  # 1,100.00 >= goal

    events = launched.when(cancel("p1"), at=LATE)

    assert refusal_reason(events) is RejectionReason.CANCELLATION_WINDOW_CLOSED
    assert launched.state.total_minor == 110_000


def test_late_cancel_that_keeps_the_total_at_goal_is_allowed(launched: Campaign) -> None:
    launched.given(pledge("p1", 10_000), pledge("p2", 100_000))

    assert types(launched.when(cancel("p1"), at=LATE)) == ["PledgeCancelled"]


def test_late_cancel_when_already_below_goal_is_allowed(launched: Campaign) -> None:
    launched.given(pledge("p1", 10_000), pledge("p2", 20_000))

    assert types(launched.when(cancel("p1"), at=LATE)) == ["PledgeCancelled"]


def test_cancel_that_drops_below_goal_more_than_24h_before_deadline_is_allowed(
    launched: Campaign,
) -> None:
    launched.given(pledge("p1", 60_000), pledge("p2", 50_000))

    assert types(launched.when(cancel("p1"), at=EARLY)) == ["PledgeCancelled"]


def test_late_window_starts_exactly_24h_before_the_deadline(launched: Campaign) -> None:
    launched.given(pledge("p1", 60_000), pledge("p2", 50_000))
    at_edge = DEADLINE - timedelta(hours=24)
    just_inside = at_edge + timedelta(microseconds=1)

    assert types(launched.when(cancel("p1"), at=just_inside)) == ["PledgeRejected"]
    assert types(launched.when(cancel("p1"), at=at_edge)) == ["PledgeCancelled"]


def test_late_cancel_below_goal_is_allowed_when_the_policy_is_off(launched: Campaign) -> None:
    launched.given(pledge("p1", 60_000), pledge("p2", 50_000))
    lenient = Policy(refuse_late_cancellation_below_goal=False)

    assert types(launched.when(cancel("p1"), at=LATE, policy=lenient)) == ["PledgeCancelled"]


def test_late_window_length_comes_from_the_policy(launched: Campaign) -> None:
    launched.given(pledge("p1", 60_000), pledge("p2", 50_000))
    two_days = Policy(late_window=timedelta(hours=48))

    events = launched.when(cancel("p1"), at=EARLY, policy=two_days)

    assert refusal_reason(events) is RejectionReason.CANCELLATION_WINDOW_CLOSED
