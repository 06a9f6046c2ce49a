"""Specifications: CampaignSettled (once, only when the book matches), refunds after
settlement with their fee policy, coproduction revenue shares."""

from __future__ import annotations

from schemas.codec import encode
from schemas.events import (
    CampaignSettled,
    PledgeRefunded,
    RefundRequested,
    RevenueShared,
    SettlementCommandRejected,
)
from schemas.settlement_commands import RefundPledge, ReportRevenue
from services.audit.engine import PartitionAuditor
from services.settlement.adapters.memory_gateway import MemoryGateway
from services.settlement.domain import Policy, Tick, book_mismatch, plan
from tests.support.settlement import T0, CampaignBook, settle

POLICY = Policy()


def audit(book: CampaignBook) -> list[tuple[str, str]]:
    auditor = PartitionAuditor(0)
    auditor.feed([encode(e) for e in book.log], 0)
    return [(f.rule, f.detail) for f in auditor.finish().findings]


def funded_book() -> CampaignBook:
    book = CampaignBook(goal_minor=3_000).launch()
    book.pledge("p1", 2_500)
    book.pledge("p2", 500)
    book.close("funded")
    return book


def refund(
    pledge_id: str, amount_minor: int | None = None, command_id: str = "cmd-r1"
) -> RefundPledge:
    return RefundPledge(
        command_id=command_id, tenant_id="tenant-1", correlation_id="r", issued_at=T0,
        campaign_id="camp-1", pledge_id=pledge_id, amount_minor=amount_minor,
        reason="not_delivered", requested_by="platform-admin",
    )  # fmt: skip


def revenue(amount_minor: int, period: str = "2027-Q1", currency: str = "EUR") -> ReportRevenue:
    return ReportRevenue(
        command_id=f"cmd-rev-{period}", tenant_id="tenant-1", correlation_id="r", issued_at=T0,
        campaign_id="camp-1", period=period, amount_minor=amount_minor, currency=currency,
    )  # fmt: skip


def test_a_funded_campaign_settles_gross_less_commission_and_fees() -> None:
    book = funded_book()
    settle(book, MemoryGateway())
    settled = book.state.settled
    assert settled is not None
    # Fees: 2 500 -> 3 % + 20 = 95; 500 (< 10.00) -> 5 % + 5 = 30. Commission 5 % of 3 000.
    assert (settled.gross.amount_minor, settled.fees.amount_minor) == (3_000, 125)
    assert (settled.commission.amount_minor, settled.payout.amount_minor) == (150, 2_725)
    assert (settled.ledger_debits_minor, settled.ledger_credits_minor) == (3_000, 3_000)
    assert book.state.balance("creator_payable") == 2_725
    assert book.state.balance("platform_revenue") == 150
    assert audit(book) == []


def test_no_settlement_while_a_pledge_is_unresolved() -> None:
    book = funded_book()
    assert book.decide(Tick()) == []
    assert book.state.settled is None


def test_no_settlement_until_the_book_matches_the_close_counts() -> None:
    book = CampaignBook().launch()
    book.pledge("p1", 2_500)
    book.state.pledges.pop("p1")  # as if the PledgeMade had not been folded yet
    book.close("funded")
    book.state.closed = book.state.closed.model_copy(
        update={"accepted_pledges": 1, "total": book.money(2_500)}
    )  # type: ignore[union-attr]
    assert (
        book_mismatch(book.state) == "0 active pledges for 0 but CampaignClosed counts 1 for 2500"
    )
    assert book.decide(Tick()) == []


def test_settled_exactly_once() -> None:
    book = funded_book()
    settle(book, MemoryGateway())
    assert book.decide(Tick()) == []
    assert sum(isinstance(e.payload, CampaignSettled) for e in book.log) == 1


def test_a_failed_campaign_settles_at_zero() -> None:
    book = CampaignBook().launch()
    book.pledge("p1", 2_500)
    book.close("failed")
    settle(book, MemoryGateway())
    settled = book.state.settled
    assert settled is not None and settled.outcome == "failed"
    assert (settled.gross.amount_minor, settled.payout.amount_minor, settled.captured_count) == (
        0,
        0,
        0,
    )
    assert audit(book) == []


def test_a_refund_after_settlement_debits_the_creator_payable() -> None:
    book = funded_book()
    gateway = MemoryGateway()
    settle(book, gateway)
    [requested] = book.decide(refund("p1", 1_000))
    assert isinstance(requested, RefundRequested) and requested.requested_by == "platform-admin"
    [call] = plan(book.state, T0, POLICY)
    assert (call.kind, call.key, call.amount.amount_minor) == (
        "refund",
        "camp-1/p1/refund/cmd-r1",
        1_000,
    )
    [refunded] = book.decide(gateway.answer(call))
    assert isinstance(refunded, PledgeRefunded)
    assert refunded.fee_refunded.amount_minor == 0
    assert book.state.balance("creator_payable") == 2_725 - 1_000
    assert book.state.balance("platform_revenue") == 150  # the commission stays with the platform
    assert gateway.refunded_minor["camp-1/p1"] == 1_000
    book.decide(refund("p1", 1_500, "cmd-r2"))
    [call] = plan(book.state, T0, POLICY)
    book.decide(gateway.answer(call))
    assert book.state.pledges["p1"].status == "refunded"
    assert audit(book) == []  # two partial refunds of one capture


def test_a_refund_before_settlement_returns_the_commission_on_it() -> None:
    book = funded_book()
    gateway = MemoryGateway()
    for call in plan(book.state, T0, POLICY):
        book.decide(gateway.answer(call))
    book.decide(refund("p1"))
    settle(book, gateway)
    settled = book.state.settled
    assert settled is not None
    assert (settled.gross.amount_minor, settled.commission.amount_minor) == (500, 25)
    assert settled.fees.amount_minor == 125  # the processor keeps the refunded pledge's fee
    assert settled.payout.amount_minor == 500 - 25 - 125
    assert audit(book) == []


def test_a_refund_larger_than_what_is_left_is_refused() -> None:
    book = funded_book()
    settle(book, MemoryGateway())
    book.decide(refund("p1", 2_000, "cmd-a"))
    [event] = book.decide(refund("p1", 600, "cmd-b"))
    assert isinstance(event, SettlementCommandRejected)
    assert (event.reason, event.command_type) == ("refund_exceeds_captured", "RefundPledge")


def test_a_refund_of_a_pledge_never_captured_is_refused() -> None:
    book = CampaignBook().launch()
    book.pledge("p1", 2_500)
    book.close("failed")
    settle(book, MemoryGateway())
    [event] = book.decide(refund("p1"))
    assert isinstance(event, SettlementCommandRejected) and event.reason == "pledge_not_captured"


def test_a_refund_command_seen_twice_is_requested_once() -> None:
    book = funded_book()
    settle(book, MemoryGateway())
    assert len(book.decide(refund("p1", 100))) == 1
    assert book.decide(refund("p1", 100)) == []


def coproduction() -> CampaignBook:
    book = CampaignBook(coproduction=True, goal_minor=1_000).launch()
    for pledge_id, amount in (("a", 1_000), ("b", 1_000), ("c", 1_000)):
        book.pledge(pledge_id, amount)
    book.close("funded")
    settle(book, MemoryGateway())
    return book


def test_revenue_is_shared_pro_rata_by_largest_remainder_to_the_unit() -> None:
    book = coproduction()
    [event] = book.decide(revenue(100_000))  # 10 % shared: 10 000 over three equal pledges
    assert isinstance(event, RevenueShared)
    assert event.shared.amount_minor == 10_000
    assert [s.amount_minor for s in event.shares] == [3_334, 3_333, 3_333]


def test_revenue_of_a_period_is_shared_once() -> None:
    book = coproduction()
    book.decide(revenue(100))
    [event] = book.decide(revenue(200).model_copy(update={"command_id": "other"}))
    assert (
        isinstance(event, SettlementCommandRejected) and event.reason == "period_already_reported"
    )


def test_revenue_of_a_reward_campaign_is_refused() -> None:
    book = funded_book()
    settle(book, MemoryGateway())
    [event] = book.decide(revenue(100))
    assert isinstance(event, SettlementCommandRejected) and event.reason == "not_coproduction"


def test_revenue_in_another_currency_is_refused() -> None:
    book = coproduction()
    [event] = book.decide(revenue(100, currency="USD"))
    assert isinstance(event, SettlementCommandRejected) and event.reason == "currency_mismatch"


def one_pledge_settlement(currency: str, amount_minor: int) -> tuple[int, int, int]:
    book = CampaignBook(currency=currency, goal_minor=amount_minor).launch()
    book.pledge("p1", amount_minor)
    book.close("funded")
    settle(book, MemoryGateway())
    settled = book.state.settled
    assert settled is not None and audit(book) == []
    return settled.fees.amount_minor, settled.commission.amount_minor, settled.payout.amount_minor


def test_rounding_in_a_zero_decimal_currency() -> None:
    # 3 333 JPY: fee 3 % = 99.99 -> 100 (+ 0 fixed), commission 5 % = 166.65 -> 167.
    assert one_pledge_settlement("JPY", 3_333) == (100, 167, 3_333 - 100 - 167)


def test_rounding_in_a_three_decimal_currency() -> None:
    # 12.345 TND: fee 3 % = 370.35 -> 370 + 0.200 fixed, commission 5 % = 617.25 -> 617.
    assert one_pledge_settlement("TND", 12_345) == (570, 617, 12_345 - 570 - 617)


def test_rounding_half_up_in_a_two_decimal_currency() -> None:
    # 10.50 EUR: fee 3 % = 31.5 -> 32 + 20, commission 5 % = 52.5 -> 53.
    assert one_pledge_settlement("EUR", 1_050) == (52, 53, 1_050 - 52 - 53)
