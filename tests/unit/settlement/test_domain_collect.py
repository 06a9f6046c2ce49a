"""Specifications: when settlement collects, voids and refunds pledges, per settlement mode."""

from __future__ import annotations

from datetime import timedelta

from schemas.events import PledgeCaptured, PledgeRefunded, PledgeReleased
from schemas.ledger import capture_lines, refund_lines
from services.settlement.adapters.memory_gateway import MemoryGateway
from services.settlement.domain import GatewayResult, Policy, plan
from tests.support.settlement import T0, CampaignBook

POLICY = Policy()


def test_a_pledge_in_authorize_mode_is_verified_with_a_key_of_its_own() -> None:
    book = CampaignBook().launch()
    book.pledge("p1", 2_500)
    [call] = plan(book.state, T0, POLICY)
    assert (call.kind, call.key, call.amount.amount_minor) == (
        "authorize",
        "camp-1/p1/authorize/1",
        2_500,
    )


def test_verification_writes_no_event_and_is_not_planned_again_once_done() -> None:
    book = CampaignBook().launch()
    book.pledge("p1", 2_500)
    [call] = plan(book.state, T0, POLICY)
    assert book.decide(GatewayResult(call, ok=True, reference="auth_1")) == []
    assert plan(book.state, T0, POLICY, skip={call.key}) == []


def test_a_pledge_in_charge_mode_is_charged_at_once() -> None:
    book = CampaignBook(settlement_mode="charge_then_refund").launch()
    book.pledge("p1", 2_500)
    [call] = plan(book.state, T0, POLICY)
    assert (call.kind, call.key, call.attempt) == ("charge", "camp-1/p1/charge/1", 1)


def test_a_funded_close_captures_every_active_pledge() -> None:
    book = CampaignBook().launch()
    book.pledge("p1", 2_500)
    book.pledge("p2", 10_000)
    book.close("funded")
    calls = plan(book.state, T0, POLICY)
    assert sorted((c.kind, c.pledge_id) for c in calls) == [("capture", "p1"), ("capture", "p2")]
    assert all(c.authorization_key == f"camp-1/{c.pledge_id}/authorize/1" for c in calls)


def test_a_capture_records_the_schedule_fee_and_its_ledger_lines() -> None:
    book = CampaignBook().launch()
    book.pledge("p1", 2_500)
    book.close("funded")
    [call] = plan(book.state, T0, POLICY)
    [event] = book.decide(GatewayResult(call, ok=True, reference="ch_1"))
    assert isinstance(event, PledgeCaptured)
    # Kickstarter default for EUR: 3 % + 0.20 -> 75 + 20.
    assert (event.amount.amount_minor, event.fee.amount_minor, event.gateway_ref) == (
        2_500,
        95,
        "ch_1",
    )
    assert event.ledger == capture_lines(2_500, 95)


def test_the_same_gateway_answer_seen_twice_yields_one_capture() -> None:
    book = CampaignBook().launch()
    book.pledge("p1", 2_500)
    book.close("funded")
    [call] = plan(book.state, T0, POLICY)
    result = GatewayResult(call, ok=True, reference="ch_1")
    assert len(book.decide(result)) == 1
    assert book.decide(result) == []
    assert plan(book.state, T0, POLICY) == []


def test_a_cancelled_pledge_is_voided_in_authorize_mode() -> None:
    book = CampaignBook().launch()
    book.pledge("p1", 2_500)
    book.cancel("p1")
    [call] = plan(book.state, T0, POLICY)
    assert (call.kind, call.reason) == ("void", "pledge_cancelled")
    [event] = book.decide(GatewayResult(call, ok=True, reference="void_1"))
    assert event == PledgeReleased(
        pledge_id="p1", amount=book.money(2_500), reason="pledge_cancelled"
    )


def test_a_failed_campaign_voids_every_authorization() -> None:
    book = CampaignBook().launch()
    for i in range(3):
        book.pledge(f"p{i}", 1_000 + i)
    book.close("failed")
    calls = plan(book.state, T0, POLICY)
    assert {(c.kind, c.reason) for c in calls} == {("void", "campaign_failed")}
    assert len(calls) == 3


def test_a_cancelled_charge_is_refunded_with_its_fee_given_back() -> None:
    book = CampaignBook(settlement_mode="charge_then_refund").launch()
    book.pledge("p1", 2_500)
    [charge] = plan(book.state, T0, POLICY)
    book.decide(GatewayResult(charge, ok=True, reference="ch_1"))
    book.cancel("p1")
    [refund] = plan(book.state, T0, POLICY)
    assert (refund.kind, refund.key, refund.capture_ref) == (
        "refund",
        "camp-1/p1/refund/auto",
        "ch_1",
    )
    [event] = book.decide(GatewayResult(refund, ok=True, reference="re_1"))
    assert isinstance(event, PledgeRefunded)
    assert (event.amount.amount_minor, event.fee_refunded.amount_minor) == (2_500, 95)
    assert event.ledger == refund_lines(2_500, 95)
    assert book.state.balance("backer_funds") == book.state.balance("payment_fees") == 0


def test_a_failed_charge_then_refund_campaign_refunds_every_charge() -> None:
    book = CampaignBook(settlement_mode="charge_then_refund").launch()
    gateway = MemoryGateway()
    for i in range(4):
        book.pledge(f"p{i}", 2_000)
    for call in plan(book.state, T0, POLICY):
        book.decide(gateway.answer(call))
    book.close("failed")
    calls = plan(book.state, T0, POLICY)
    assert {(c.kind, c.reason) for c in calls} == {("refund", "campaign_failed")}
    assert len(calls) == 4


def test_keys_are_derived_again_after_a_refold_of_the_log() -> None:
    book = CampaignBook().launch()
    book.pledge("p1", 2_500)
    book.pledge("p2", 3_000)
    book.close("funded")
    before = plan(book.state, T0 + timedelta(days=1), POLICY)
    again = CampaignBook()
    for envelope in book.log:
        from services.settlement.state import evolve

        evolve(again.state, envelope)
    assert plan(again.state, T0 + timedelta(days=1), POLICY) == before
