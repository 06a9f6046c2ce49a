"""Settlement events v1 (before ledger lines) keep decoding, with the lines their amounts post."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from schemas import (
    UPCASTERS,
    CampaignSettled,
    DecodeError,
    PledgeCaptured,
    PledgeRefunded,
    decode,
    upcast,
    verify_chain_raw,
)
from schemas.ledger import LedgerLine, balances, capture_lines, refund_lines

FIXTURE = Path(__file__).parents[2] / "fixtures" / "settlement_v1.jsonl"


def fixture_lines() -> list[bytes]:
    return FIXTURE.read_bytes().splitlines()


def test_fixture_holds_v1_settlement_events_without_ledger() -> None:
    raws = [orjson.loads(line) for line in fixture_lines()]
    kinds = {r["event_type"] for r in raws}
    assert {"PledgeCaptured", "PledgeRefunded", "CampaignSettled"} <= kinds
    assert all(r["schema_version"] == 1 and "ledger" not in r["payload"] for r in raws)


def test_v1_fixture_chain_verifies_on_the_stored_bytes() -> None:
    assert verify_chain_raw([x for x in fixture_lines() if b'"fx-0000"' in x]) is None
    assert verify_chain_raw([x for x in fixture_lines() if b'"fx-0005"' in x]) is None


def test_v1_settlement_events_decode_as_v2_with_balanced_ledgers() -> None:
    decoded = [decode(line) for line in fixture_lines()]
    assert all(e.schema_version == 2 for e in decoded)
    for envelope in decoded:
        lines: tuple[LedgerLine, ...] = envelope.payload.ledger  # type: ignore[attr-defined]
        debits = sum(line.debit_minor for line in lines)
        assert debits == sum(line.credit_minor for line in lines)


def test_upcast_capture_posts_amount_fee_and_payable() -> None:
    raw = next(orjson.loads(x) for x in fixture_lines() if b"PledgeCaptured" in x)
    version, payload = upcast("PledgeCaptured", 1, raw["payload"])
    captured = PledgeCaptured.model_validate(payload)
    amount, fee = raw["payload"]["amount"]["amount_minor"], raw["payload"]["fee"]["amount_minor"]
    assert version == 2
    assert captured.ledger == capture_lines(amount, fee)
    assert balances(captured.ledger)["creator_payable"] == (0, amount - fee)
    assert "ledger" not in raw["payload"]  # the stored payload is not mutated


def test_a_funded_campaigns_upcast_ledger_sums_to_its_statement() -> None:
    events = [decode(line).payload for line in fixture_lines() if b'"fx-0000"' in line]
    settled = events[-1]
    assert isinstance(settled, CampaignSettled)
    lines = [line for e in events for line in e.ledger]  # type: ignore[attr-defined]
    totals = balances(lines)
    assert totals["backer_funds"][0] - totals["backer_funds"][1] == settled.gross.amount_minor
    assert totals["payment_fees"][1] - totals["payment_fees"][0] == settled.fees.amount_minor
    assert totals["platform_revenue"][1] == settled.commission.amount_minor
    payable = totals["creator_payable"][1] - totals["creator_payable"][0]
    assert payable == settled.payout.amount_minor


def test_upcast_refund_gives_the_fee_back() -> None:
    raw = next(orjson.loads(x) for x in fixture_lines() if b"PledgeRefunded" in x)
    refunded = PledgeRefunded.model_validate(upcast("PledgeRefunded", 1, raw["payload"])[1])
    p = raw["payload"]
    assert refunded.ledger == refund_lines(
        p["amount"]["amount_minor"], p["fee_refunded"]["amount_minor"]
    )


def test_a_ledger_that_is_not_the_amounts_postings_is_refused() -> None:
    raw = next(orjson.loads(x) for x in fixture_lines() if b"PledgeCaptured" in x)
    payload = upcast("PledgeCaptured", 1, raw["payload"])[1]
    payload["ledger"] = payload["ledger"][:1]
    with pytest.raises(ValueError, match="ledger"):
        PledgeCaptured.model_validate(payload)


def test_upcasting_a_capture_without_amount_is_a_decode_error() -> None:
    with pytest.raises(DecodeError, match=r"payload\.amount"):
        upcast("PledgeCaptured", 1, {"fee": {"amount_minor": 1, "currency": "EUR"}})


def test_every_settlement_v1_step_is_registered() -> None:
    for name in ("PledgeCaptured", "PledgeRefunded", "CampaignSettled"):
        assert (name, 1) in UPCASTERS
