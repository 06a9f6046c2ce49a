"""Specifications: failed captures are retried on the schedule, then dropped; backers can fix
their payment method while the window is open."""

from __future__ import annotations

from datetime import timedelta

import pytest

from schemas.events import (
    PaymentMethodUpdated,
    PledgeCaptured,
    PledgeCaptureFailed,
    PledgeReleased,
    SettlementCommandRejected,
)
from schemas.settlement_commands import UpdatePaymentMethod
from services.settlement.domain import GatewayResult, Policy, plan
from tests.support.settlement import T0, CampaignBook

POLICY = Policy()


def funded(token: str) -> CampaignBook:
    book = CampaignBook().launch()
    book.pledge("p1", 2_500, token)
    book.close("funded")
    return book


def fail(book: CampaignBook, now=T0, policy: Policy = POLICY) -> PledgeCaptureFailed:  # type: ignore[no-untyped-def]
    [call] = plan(book.state, now, policy)
    [event] = book.decide(
        GatewayResult(call, ok=False, code="card_declined", detail="no"), now, policy
    )
    assert isinstance(event, PledgeCaptureFailed)
    return event


def fix(pledge_id: str = "p1") -> UpdatePaymentMethod:
    return UpdatePaymentMethod(
        command_id="cmd-fix", tenant_id="tenant-1", correlation_id="r", issued_at=T0,
        campaign_id="camp-1", pledge_id=pledge_id,
    )  # fmt: skip


def test_a_failed_capture_gives_the_backer_until_the_last_retry() -> None:
    book = funded("tok_declined")
    event = fail(book)
    assert (event.attempt, event.reason, event.retry_until) == (
        1,
        "card_declined",
        T0 + timedelta(days=7),
    )


def test_no_retry_before_its_time_and_one_with_a_new_key_when_due() -> None:
    book = funded("tok_declined")
    fail(book)
    assert plan(book.state, T0 + timedelta(hours=23), POLICY) == []
    [retry] = plan(book.state, T0 + timedelta(days=1), POLICY)
    assert (retry.kind, retry.attempt, retry.key) == ("capture", 2, "camp-1/p1/capture/2")


def test_retries_follow_the_schedule_counted_from_the_first_failure() -> None:
    book = funded("tok_declined")
    fail(book)
    fail(book, T0 + timedelta(days=1))
    assert plan(book.state, T0 + timedelta(days=2), POLICY) == []
    [third] = plan(book.state, T0 + timedelta(days=3), POLICY)
    assert third.attempt == 3


def test_the_pledge_is_dropped_after_the_last_try() -> None:
    book = funded("tok_declined")
    for day in (0, 1, 3):
        fail(book, T0 + timedelta(days=day))
    last = fail(book, T0 + timedelta(days=7))
    assert (last.attempt, last.retry_until) == (4, None)
    [void] = plan(book.state, T0 + timedelta(days=7), POLICY)
    assert (void.kind, void.reason) == ("void", "dropped")
    [released] = book.decide(GatewayResult(void, ok=True, reference="v"), T0 + timedelta(days=7))
    assert isinstance(released, PledgeReleased) and released.reason == "dropped"


def test_a_shorter_schedule_is_honoured() -> None:
    policy = Policy(retry_schedule=(timedelta(seconds=1), timedelta(seconds=2)))
    book = funded("tok_declined")
    event = fail(book, T0, policy)
    assert event.retry_until == T0 + timedelta(seconds=2)
    assert plan(book.state, T0 + timedelta(seconds=1), policy)[0].attempt == 2


def test_a_schedule_must_increase() -> None:
    with pytest.raises(ValueError, match="retry_schedule"):
        Policy(retry_schedule=(timedelta(days=3), timedelta(days=1)))


def test_a_retry_that_succeeds_captures_with_its_attempt() -> None:
    book = funded("tok_fail_once")
    fail(book)
    [retry] = plan(book.state, T0 + timedelta(days=1), POLICY)
    [event] = book.decide(GatewayResult(retry, ok=True, reference="ch_2"), T0 + timedelta(days=1))
    assert isinstance(event, PledgeCaptured) and event.attempt == 2


def test_a_fixed_payment_method_is_retried_at_once_with_the_stores_token() -> None:
    book = funded("tok_declined")
    fail(book)
    [event] = book.decide(fix(), T0 + timedelta(hours=2))
    assert event == PaymentMethodUpdated(pledge_id="p1")
    [retry] = plan(book.state, T0 + timedelta(hours=2), POLICY)
    # No token on the call: the old one is stale, the worker gives it the payment-token
    # store's (where the API put the new one).
    assert (retry.attempt, retry.payment_token) == (2, None)


def test_a_fix_after_the_window_is_refused() -> None:
    book = funded("tok_declined")
    fail(book)
    [event] = book.decide(fix(), T0 + timedelta(days=8))
    assert isinstance(event, SettlementCommandRejected) and event.reason == "retry_window_closed"


def test_a_fix_of_a_pledge_that_did_not_fail_is_refused() -> None:
    book = funded("tok_ok")
    [event] = book.decide(fix())
    assert isinstance(event, SettlementCommandRejected) and event.reason == "payment_not_failed"


def test_a_fix_of_an_unknown_pledge_is_refused() -> None:
    book = funded("tok_ok")
    [event] = book.decide(fix(pledge_id="nope"))
    assert isinstance(event, SettlementCommandRejected) and event.reason == "pledge_not_found"


def test_a_fix_command_seen_twice_yields_one_event() -> None:
    book = funded("tok_declined")
    fail(book)
    assert len(book.decide(fix())) == 1
    assert book.decide(fix()) == []
