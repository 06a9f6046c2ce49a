"""The settlement read model's fold (services/settlement/projection.py): given a campaign's
settlement stream as the domain writes it, the GET .../settlement body shows CampaignSettled's
figures as ledger balances, the counts, each pledge's payment record, and the decisions on
settlement commands."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from schemas.envelope import Envelope
from schemas.events import CampaignSettled
from schemas.settlement_commands import RefundPledge, ReportRevenue, UpdatePaymentMethod
from services.settlement.adapters.memory_gateway import MemoryGateway
from services.settlement.api_models import SettlementView
from services.settlement.domain import GatewayResult, Policy, plan
from services.settlement.projection import initial_summary, project, settlement_view
from tests.support.settlement import T0, CampaignBook, settle

POLICY = Policy(retry_schedule=(timedelta(days=1), timedelta(days=3)))


def fold(log: list[Envelope]) -> tuple[dict[str, Any], dict[str, dict[str, Any]], dict[str, Any]]:
    """Summary, payment records (as the apply script merges them) and decisions."""
    summary = initial_summary("camp-1")
    payments: dict[str, dict[str, Any]] = {}
    decisions: dict[str, Any] = {}
    for envelope in (e for e in log if e.stream == "settlement"):
        changes, decision = project(summary, envelope)
        for pledge_id, change in changes:
            record = payments.setdefault(pledge_id, {"refunded_minor": 0})
            added = change.pop("refunded_add", 0)
            record.update(change)
            if added:
                record["refunded_minor"] += added
                if record["refunded_minor"] >= record["captured_minor"]:
                    record["status"] = "refunded"
        if decision is not None:
            decisions.setdefault(envelope.causation_id, decision)
    return summary, payments, decisions


def view(summary: dict[str, Any], closed: bool = True) -> SettlementView:
    body = settlement_view(
        "camp-1", summary, campaign_closed=closed, campaign_outcome="funded",
        campaign_currency="EUR",
    )  # fmt: skip
    return SettlementView.model_validate(body)


def settled_book() -> CampaignBook:
    book = CampaignBook(goal_minor=1_000).launch()
    book.pledge("p1", 2_500)
    book.pledge("p2", 4_000)
    book.pledge("p3", 1_000, "tok_declined")
    book.close("funded")
    settle(book, MemoryGateway(), policy=POLICY)
    assert book.state.settled is not None
    return book


def test_a_settled_campaign_shows_its_settlement_figures_as_balances() -> None:
    book = settled_book()
    settled = book.state.settled
    assert isinstance(settled, CampaignSettled)
    summary, payments, _ = fold(book.log)
    shown = view(summary)
    assert (shown.status, shown.outcome) == ("settled", "funded")
    assert shown.gross.amount_minor == settled.gross.amount_minor == 6_500
    assert shown.commission.amount_minor == settled.commission.amount_minor
    assert shown.fees.amount_minor == settled.fees.amount_minor
    assert shown.payout.amount_minor == settled.payout.amount_minor
    assert (shown.captured_count, shown.failed_count, shown.released_count) == (2, 1, 1)
    debits = sum(line.debit_minor for line in shown.ledger)
    assert debits == sum(line.credit_minor for line in shown.ledger) > 0
    assert shown.seq == book.heads["settlement"][0]
    assert payments["p1"]["status"] == "captured"
    assert (payments["p3"]["status"], payments["p3"]["reason"]) == ("dropped", "dropped")


def test_a_failed_capture_records_its_retry_deadline_and_a_fix() -> None:
    book = CampaignBook(goal_minor=1_000).launch()
    book.pledge("p1", 2_500, "tok_declined")
    book.close("funded")
    [capture] = [c for c in plan(book.state, T0, POLICY) if c.kind == "capture"]
    book.decide(GatewayResult(capture, ok=False, code="card_declined", detail="no"), T0, POLICY)
    fix = UpdatePaymentMethod(
        command_id="cmd-fix", tenant_id="tenant-1", correlation_id="r", issued_at=T0,
        campaign_id="camp-1", pledge_id="p1",
    )  # fmt: skip
    book.decide(fix, T0 + timedelta(hours=1))
    summary, payments, decisions = fold(book.log)
    assert payments["p1"]["status"] == "capture_failed" and payments["p1"]["attempts"] == 1
    assert payments["p1"]["retry_until"].endswith("Z") and payments["p1"]["method_updated"]
    assert decisions["cmd-fix"]["event_type"] == "PaymentMethodUpdated"
    assert view(summary).status == "settling"


def test_a_refund_after_payout_debits_the_creators_payable() -> None:
    book = settled_book()
    before = view(fold(book.log)[0])
    refund = RefundPledge(
        command_id="cmd-r", tenant_id="tenant-1", correlation_id="r", issued_at=T0,
        campaign_id="camp-1", pledge_id="p2", amount_minor=1_500, requested_by="ops",
    )  # fmt: skip
    book.decide(refund)
    settle(book, MemoryGateway(), policy=POLICY)
    summary, payments, decisions = fold(book.log)
    after = view(summary)
    assert decisions["cmd-r"] == {
        "outcome": "accepted",
        "seq": decisions["cmd-r"]["seq"],
        "event_type": "RefundRequested",
    }
    assert (payments["p2"]["status"], payments["p2"]["refunded_minor"]) == ("captured", 1_500)
    assert after.refunded_count == 1
    assert after.payout.amount_minor == before.payout.amount_minor - 1_500
    assert after.gross.amount_minor == before.gross.amount_minor - 1_500
    assert (after.commission, after.fees) == (before.commission, before.fees)


def test_a_refused_command_is_a_refused_decision_with_its_reason() -> None:
    book = CampaignBook(goal_minor=1_000).launch()
    book.pledge("p1", 2_500)
    report = ReportRevenue(
        command_id="cmd-rev", tenant_id="tenant-1", correlation_id="r", issued_at=T0,
        campaign_id="camp-1", period="2027-Q1", amount_minor=100, currency="EUR",
    )  # fmt: skip
    book.decide(report)
    _, _, decisions = fold(book.log)
    assert decisions["cmd-rev"]["outcome"] == "refused"
    assert decisions["cmd-rev"]["reason"] == "not_coproduction"


def test_before_any_settlement_event_an_open_campaign_shows_zeros() -> None:
    shown = view(None, closed=False)  # type: ignore[arg-type]
    assert (shown.status, shown.outcome, shown.seq, shown.gross.amount_minor) == (
        "open", None, 0, 0
    )  # fmt: skip
