"""What ``/openapi.json`` says about the settlement operations: descriptions and examples
(merged into ``services.pledge.api.openapi_docs.OPERATIONS``; checked by ``redocly lint``)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from services.settlement.api_models import (
    PaymentMethodRequest,
    RefundBody,
    RevenueBody,
    SettlementCommandAccepted,
    SettlementCommandDecided,
    SettlementView,
)

__all__ = ["SETTLEMENT_MODELS", "SETTLEMENT_OPERATIONS", "SETTLEMENT_TAG"]

SETTLEMENT_TAG = {
    "name": "settlement",
    "description": "What the settlement worker did with a campaign's money (captures, "
    "refunds, ledger) and the commands it takes (payment-method fix, refund, revenue).",
}

#: Models the settlement operations refer to (added to the document's components).
SETTLEMENT_MODELS: tuple[type[BaseModel], ...] = (
    PaymentMethodRequest,
    RefundBody,
    RevenueBody,
    SettlementCommandAccepted,
    SettlementCommandDecided,
    SettlementView,
)


def _eur(minor: int) -> dict[str, Any]:
    return {"amount_minor": minor, "currency": "EUR"}


_SETTLED: dict[str, Any] = {
    "campaign_id": "c-42",
    "status": "settled",
    "outcome": "funded",
    "gross": _eur(500000),
    "commission": _eur(25000),
    "fees": _eur(15500),
    "payout": _eur(459500),
    "captured_count": 200,
    "failed_count": 3,
    "released_count": 3,
    "refunded_count": 0,
    "ledger": [
        {"account": "backer_funds", "debit_minor": 500000, "credit_minor": 0},
        {"account": "payment_fees", "debit_minor": 0, "credit_minor": 15500},
        {"account": "platform_revenue", "debit_minor": 0, "credit_minor": 25000},
        {"account": "creator_payable", "debit_minor": 25000, "credit_minor": 484500},
    ],
    "seq": 207,
}


def _write(pledge: bool, event_type: str, request: dict[str, Any], text: str) -> dict[str, Any]:
    ids: dict[str, Any] = {"campaign_id": "c-42", **({"pledge_id": "p-1"} if pledge else {})}
    url = "/v1/campaigns/c-42/pledges/p-1" if pledge else "/v1/campaigns/c-42/settlement"
    return {
        "description": text,
        "request": request,
        "responses": {
            "202": {**ids, "status": "pending", "status_url": url},
            "200": {**ids, "status": "accepted", "event_type": event_type, "seq": 12},
        },
    }


SETTLEMENT_OPERATIONS: dict[tuple[str, str], dict[str, Any]] = {
    ("get", "/v1/campaigns/{campaign_id}/settlement"): {
        "description": "The campaign's settlement from the settlement read model: `open` "
        "(not closed), `settling` (closed, money moving), `settled` (`CampaignSettled` "
        "written). `gross`, `fees`, `commission` and `payout` are the ledger's balances "
        "(backer funds, payment fees, platform revenue, creator payable); `seq` is the last "
        "settlement event shown.",
        "responses": {"200": _SETTLED},
    },
    ("post", "/v1/campaigns/{campaign_id}/pledges/{pledge_id}/payment-method"): _write(
        True,
        "PaymentMethodUpdated",
        {"payment_token": "tok_ok"},
        "A backer fixes a failed payment before its `retry_until`: the token is stored in "
        "the erasable payment-token store (never in the log) and an `UpdatePaymentMethod` "
        "command appended; the next retry is due at once and uses it. 409 "
        "`payment_not_failed` when the pledge's capture has not failed; with `Prefer: "
        "wait=N`, 409 `retry_window_closed` after `retry_until`.",
    ),
    ("post", "/v1/campaigns/{campaign_id}/pledges/{pledge_id}/refund"): _write(
        True,
        "RefundRequested",
        {"amount_minor": 1000, "reason": "requested_by_backer"},
        "Refund a captured pledge, all that is still refundable (no `amount_minor`) or "
        "part of it. Before payout the commission is returned (it is computed on the gross "
        "net of refunds); after payout the creator's payable is debited; the payment fee "
        "stays with the creator (see docs/settlement.md). With `Prefer: wait=N`, 409 "
        "`pledge_not_captured` or `refund_exceeds_captured` when refused.",
    ),
    ("post", "/v1/campaigns/{campaign_id}/revenue"): _write(
        False,
        "RevenueShared",
        {"period": "2027-Q1", "amount_minor": 1000000, "currency": "EUR"},
        "A settled coproduction campaign reports its revenue for a period: the backers' "
        "`share_bps` of it is split pro rata to their captured amounts by largest "
        "remainder (`RevenueShared`, summing exactly). With `Prefer: wait=N`, 409 "
        "`not_coproduction`, `campaign_not_settled`, `period_already_reported` or "
        "`currency_mismatch` when refused.",
    ),
}
