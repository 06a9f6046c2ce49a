"""The auditor accepts partial refunds of a capture and flags refunds beyond the pledge."""

from __future__ import annotations

from schemas.codec import encode
from schemas.events import PledgeCaptured, PledgeRefunded
from services.audit.engine import PartitionAuditor
from services.settlement.adapters.memory_gateway import MemoryGateway
from tests.support.settlement import CampaignBook, settle


def rules(book: CampaignBook) -> list[str]:
    auditor = PartitionAuditor(0)
    auditor.feed([encode(e) for e in book.log], 0)
    return [f.rule for f in auditor.finish().findings]


def funded() -> CampaignBook:
    book = CampaignBook(goal_minor=2_500).launch()
    book.pledge("p1", 2_500)
    book.close("funded")
    settle(book, MemoryGateway())
    return book


def refund(book: CampaignBook, amount: int, ref: str) -> None:
    book.append(
        PledgeRefunded(
            pledge_id="p1", backer_id="backer-p1", amount=book.money(amount),
            fee_refunded=book.money(0), reason="requested", gateway_ref=ref,
        )
    )  # fmt: skip


def test_partial_refunds_up_to_the_pledge_are_clean() -> None:
    book = funded()
    refund(book, 1_000, "re_1")
    refund(book, 1_500, "re_2")
    assert rules(book) == []


def test_refunds_beyond_the_pledge_are_flagged() -> None:
    book = funded()
    refund(book, 2_000, "re_1")
    refund(book, 1_000, "re_2")
    assert "settlement_amounts_match" in rules(book)


def test_a_second_capture_after_a_partial_refund_is_flagged() -> None:
    book = funded()
    refund(book, 1_000, "re_1")
    book.append(
        PledgeCaptured(
            pledge_id="p1", backer_id="backer-p1", amount=book.money(2_500),
            fee=book.money(95), gateway_ref="ch_again", attempt=2,
        )
    )  # fmt: skip
    assert "capture_once" in rules(book)
