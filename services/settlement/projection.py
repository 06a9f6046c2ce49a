"""The settlement read model's fold: a campaign's settlement events -> its summary, its pledges'
payment records and the decisions on settlement commands (pure: no I/O, no clock).

The summary keeps the ledger's totals per account, so ``gross``, ``fees``, ``commission`` and
``payout`` are balances (``schemas.ledger``): at settlement they equal ``CampaignSettled``'s
figures, and a refund after payout shows as the creator's payable debited.
"""

from __future__ import annotations

from typing import Any

from schemas.envelope import Envelope
from schemas.events import (
    CampaignSettled,
    PaymentMethodUpdated,
    PledgeCaptured,
    PledgeCaptureFailed,
    PledgeRefunded,
    PledgeReleased,
    RefundRequested,
    RevenueShared,
    SettlementCommandRejected,
)
from schemas.ledger import LEDGER_ACCOUNTS
from schemas.money import Money

__all__ = ["PledgeChange", "initial_summary", "project", "settlement_view"]

#: ``(pledge id, fields to set on its payment record)``: merged into the stored record.
PledgeChange = tuple[str, dict[str, Any]]


def initial_summary(campaign_id: str) -> dict[str, Any]:
    """The summary of a campaign no settlement event of which was applied yet."""
    return {
        "campaign_id": campaign_id,
        "seq": 0,
        "currency": None,
        "ledger": {account: [0, 0] for account in LEDGER_ACCOUNTS},
        "captured_count": 0,
        "failed_count": 0,
        "released_count": 0,
        "refunded_count": 0,
        "settled": None,
        "revenue": [],
    }


def _post(summary: dict[str, Any], payload: Any) -> None:
    ledger = summary["ledger"]
    for line in getattr(payload, "ledger", ()):
        ledger[line.account][0] += line.debit_minor
        ledger[line.account][1] += line.credit_minor


def _currency(summary: dict[str, Any], money: Money) -> None:
    summary["currency"] = money.currency


def project(
    summary: dict[str, Any], envelope: Envelope
) -> tuple[list[PledgeChange], dict[str, Any] | None]:
    """Apply one settlement event (the next seq) to ``summary`` in place.

    Returns the pledges' payment-record changes and, for an event that answers a settlement
    command (its causation id is the command id), the decision ``Prefer: wait`` reads.
    """
    payload = envelope.payload
    summary["seq"] = envelope.seq
    changes: list[PledgeChange] = []
    decision: dict[str, Any] | None = None
    accepted = {"outcome": "accepted", "seq": envelope.seq, "event_type": envelope.event_type}
    match payload:
        case PledgeCaptured():
            _currency(summary, payload.amount)
            _post(summary, payload)
            summary["captured_count"] += 1
            changes.append(
                (
                    payload.pledge_id,
                    {
                        "status": "captured",
                        "attempts": payload.attempt,
                        "retry_until": None,
                        "captured_minor": payload.amount.amount_minor,
                        "reason": None,
                    },
                )
            )
        case PledgeCaptureFailed():
            _currency(summary, payload.amount)
            if payload.attempt == 1:  # a pledge's first failure is its first attempt
                summary["failed_count"] += 1
            retry_until = payload.retry_until
            changes.append(
                (
                    payload.pledge_id,
                    {
                        "status": "capture_failed",
                        "attempts": payload.attempt,
                        "retry_until": None if retry_until is None else _iso(retry_until),
                        "method_updated": False,
                        "reason": payload.reason,
                    },
                )
            )
        case PledgeReleased():
            _currency(summary, payload.amount)
            summary["released_count"] += 1
            dropped = payload.reason == "dropped"
            changes.append(
                (
                    payload.pledge_id,
                    {
                        "status": "dropped" if dropped else "released",
                        "retry_until": None,
                        "reason": payload.reason,
                    },
                )
            )
        case PledgeRefunded():
            _currency(summary, payload.amount)
            _post(summary, payload)
            summary["refunded_count"] += 1
            changes.append(
                (
                    payload.pledge_id,
                    {"refunded_add": payload.amount.amount_minor, "reason": payload.reason},
                )
            )
        case RefundRequested():
            decision = accepted
        case PaymentMethodUpdated():
            changes.append((payload.pledge_id, {"method_updated": True}))
            decision = accepted
        case RevenueShared():
            summary["revenue"].append(
                {
                    "period": payload.period,
                    "revenue_minor": payload.revenue.amount_minor,
                    "shared_minor": payload.shared.amount_minor,
                }
            )
            decision = accepted
        case SettlementCommandRejected():
            decision = {
                "outcome": "refused",
                "seq": envelope.seq,
                "event_type": envelope.event_type,
                "reason": payload.reason,
                "detail": payload.detail,
            }
        case CampaignSettled():
            _currency(summary, payload.gross)
            _post(summary, payload)
            summary["settled"] = {"outcome": payload.outcome, "seq": envelope.seq}
        case _:
            pass
    return changes, decision


def settlement_view(
    local_campaign_id: str,
    summary: dict[str, Any] | None,
    *,
    campaign_closed: bool,
    campaign_outcome: str | None,
    campaign_currency: str,
) -> dict[str, Any]:
    """The ``GET .../settlement`` body from the summary (None: no settlement event yet) and
    what the campaign's own read model says (closed or not, outcome, currency)."""
    summary = summary or initial_summary(local_campaign_id)
    currency = summary.get("currency") or campaign_currency
    ledger: dict[str, list[int]] = summary["ledger"]

    def balance(account: str, debit_normal: bool = False) -> dict[str, Any]:
        debits, credits = ledger.get(account, [0, 0])
        minor = debits - credits if debit_normal else credits - debits
        return {"amount_minor": minor, "currency": currency}

    settled = summary.get("settled")
    if settled is not None:
        status, outcome = "settled", settled["outcome"]
    else:
        status = "settling" if campaign_closed else "open"
        outcome = campaign_outcome if campaign_closed else None
    return {
        "campaign_id": local_campaign_id,
        "status": status,
        "outcome": outcome,
        "gross": balance("backer_funds", debit_normal=True),
        "commission": balance("platform_revenue"),
        "fees": balance("payment_fees"),
        "payout": balance("creator_payable"),
        "captured_count": summary["captured_count"],
        "failed_count": summary["failed_count"],
        "released_count": summary["released_count"],
        "refunded_count": summary["refunded_count"],
        "ledger": [
            {"account": account, "debit_minor": totals[0], "credit_minor": totals[1]}
            for account, totals in ledger.items()
        ],
        "seq": summary["seq"],
    }


def _iso(moment: Any) -> str:
    text: str = moment.isoformat().replace("+00:00", "Z")
    return text
