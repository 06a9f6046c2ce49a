"""Making a pledge: every refusal rule, and no oversell of limited tiers."""

from __future__ import annotations

from datetime import timedelta

import pytest

from schemas.envelope import Envelope
from schemas.events import PledgeMade, PledgeRejected, RejectionReason
from schemas.money import Money
from tests.unit.pledge.conftest import (
    DEADLINE,
    T0,
    Campaign,
    cancel,
    close,
    eur,
    launch,
    pledge,
    types,
)


def refusal(events: list[Envelope]) -> PledgeRejected:
    assert types(events) == ["PledgeRejected"]
    payload = events[0].payload
    assert isinstance(payload, PledgeRejected)
    assert payload.detail, "every refusal carries a human detail"
    return payload


def test_pledge_on_open_campaign_is_accepted_with_the_next_seq(launched: Campaign) -> None:
    command = pledge("p1", 5_000, "std", payment_token="tok_1", locale="fr-FR")

    events = launched.when(command)

    assert types(events) == ["PledgeMade"]
    made = events[0].payload
    assert isinstance(made, PledgeMade)
    assert (made.pledge_id, made.backer_id, made.amount, made.tier_id) == (
        "p1",
        "backer-of-p1",
        eur(5_000),
        "std",
    )
    assert (made.payment_token, made.locale) == ("tok_1", "fr-FR")
    assert events[0].seq == 2
    assert events[0].prev_hash == launched.log[0].hash
    assert launched.state.total_minor == 5_000
    assert launched.state.pledge_count == 1


def test_pledge_without_tier_is_accepted(launched: Campaign) -> None:
    assert types(launched.when(pledge("p1", 1))) == ["PledgeMade"]


def test_pledge_on_unknown_campaign_is_refused_as_campaign_not_found(campaign: Campaign) -> None:
    events = campaign.when(pledge("p1", 5_000))

    assert refusal(events).reason is RejectionReason.CAMPAIGN_NOT_FOUND
    assert events[0].seq == 1
    assert campaign.state.status == "absent"


def test_pledge_from_another_tenant_is_refused_as_tenant_mismatch(launched: Campaign) -> None:
    events = launched.when(pledge("p1", 5_000, tenant_id="tenant-b"))

    assert refusal(events).reason is RejectionReason.TENANT_MISMATCH


def test_tenant_mismatch_does_not_burn_the_pledge_id(launched: Campaign) -> None:
    launched.given(pledge("p1", 5_000, tenant_id="tenant-b"))

    assert types(launched.when(pledge("p1", 5_000))) == ["PledgeMade"]


def test_pledge_on_closed_campaign_is_refused_as_campaign_closed(launched: Campaign) -> None:
    launched.given(close("creator_cancelled"))

    assert refusal(launched.when(pledge("p1", 5_000))).reason is RejectionReason.CAMPAIGN_CLOSED


def test_pledge_at_the_deadline_is_refused_even_before_the_timer_closes(
    launched: Campaign,
) -> None:
    events = launched.when(pledge("p1", 5_000), at=DEADLINE)

    assert refusal(events).reason is RejectionReason.DEADLINE_PASSED
    assert launched.state.status == "open"


def test_pledge_just_before_the_deadline_is_accepted(launched: Campaign) -> None:
    events = launched.when(pledge("p1", 5_000), at=DEADLINE - timedelta(microseconds=1))

    assert types(events) == ["PledgeMade"]


def test_pledge_in_another_currency_is_refused_as_currency_mismatch(launched: Campaign) -> None:
    events = launched.when(pledge("p1", 5_000, amount=Money(amount_minor=5_000, currency="USD")))

    assert refusal(events).reason is RejectionReason.CURRENCY_MISMATCH


@pytest.mark.parametrize("minor", [0, -100])
def test_pledge_of_zero_or_negative_amount_is_refused_as_invalid_amount(
    launched: Campaign, minor: int
) -> None:
    assert refusal(launched.when(pledge("p1", minor))).reason is RejectionReason.INVALID_AMOUNT


def test_pledge_for_unknown_tier_is_refused_as_unknown_tier(launched: Campaign) -> None:
    events = launched.when(pledge("p1", 5_000, "platinum"))

    assert refusal(events).reason is RejectionReason.UNKNOWN_TIER


def test_pledge_below_tier_minimum_is_refused(launched: Campaign) -> None:
    events = launched.when(pledge("p1", 2_999, "std"))

    assert refusal(events).reason is RejectionReason.BELOW_TIER_MINIMUM


def test_pledge_of_exactly_the_tier_minimum_is_accepted(launched: Campaign) -> None:
    assert types(launched.when(pledge("p1", 3_000, "std"))) == ["PledgeMade"]


def test_last_slot_race_first_pledge_wins_second_is_tier_sold_out(launched: Campaign) -> None:
    launched.given(pledge("p1", 2_000, "early"))  # "early" has 2 slots: one left

    first = launched.when(pledge("p2", 2_000, "early"))
    second = launched.when(pledge("p3", 2_000, "early"))

    assert types(first) == ["PledgeMade"]
    assert refusal(second).reason is RejectionReason.TIER_SOLD_OUT
    assert launched.state.tier_used["early"] == 2


def test_cancelled_pledge_frees_its_tier_slot(launched: Campaign) -> None:
    launched.given(pledge("p1", 2_000, "early"), pledge("p2", 2_000, "early"), cancel("p1"))

    assert types(launched.when(pledge("p3", 2_000, "early"))) == ["PledgeMade"]


def test_unlimited_tier_never_sells_out(launched: Campaign) -> None:
    launched.given(*(pledge(f"p{i}", 3_000, "std") for i in range(50)))

    assert launched.state.tier_used["std"] == 50
    assert types(launched.when(pledge("last", 3_000, "std"))) == ["PledgeMade"]


def test_refusal_carries_the_pledge_backer_and_amount(launched: Campaign) -> None:
    rejected = refusal(launched.when(pledge("p1", 10, "std")))

    assert (rejected.pledge_id, rejected.backer_id, rejected.amount) == (
        "p1",
        "backer-of-p1",
        eur(10),
    )


def test_refusals_are_checked_closed_before_currency_before_tier(launched: Campaign) -> None:
    usd = Money(amount_minor=1, currency="USD")
    launched.given(close("creator_cancelled"))

    events = launched.when(pledge("p1", 1, "nope", amount=usd))

    assert refusal(events).reason is RejectionReason.CAMPAIGN_CLOSED


def test_pledge_on_campaign_launched_later_uses_the_seq_after_earlier_refusals(
    campaign: Campaign,
) -> None:
    campaign.given(pledge("early-bird", 5_000))

    (launched,) = campaign.when(launch())
    (made,) = campaign.when(pledge("p2", 5_000))

    assert (launched.seq, made.seq) == (2, 3)
    assert launched.prev_hash == campaign.log[0].hash


def test_pledge_decision_uses_the_injected_clock(launched: Campaign) -> None:
    at = T0 + timedelta(days=3, microseconds=7)

    (event,) = launched.when(pledge("p1", 5_000), at=at)

    assert event.occurred_at == at
