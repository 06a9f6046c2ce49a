"""The settlement part of the API's wire contract: request and response bodies shared by the
API routes (:mod:`services.settlement.api_routes`) and the typed client
(:mod:`services.client`), so both sides validate the same shapes.

Imports nothing of the API package: ``services.pledge.api.models`` imports
:class:`PaymentView` from here (the pledge body carries its payment status).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, StringConstraints

from schemas.ledger import LedgerAccount
from schemas.pledge_fields import Currency

__all__ = [
    "PENDING_PAYMENT",
    "LedgerBalance",
    "PaymentMethodRequest",
    "PaymentStatus",
    "PaymentView",
    "RefundBody",
    "RevenueBody",
    "SettlementCommandAccepted",
    "SettlementCommandDecided",
    "SettlementMoney",
    "SettlementView",
]

#: Where a pledge's money stands, as ``GET .../pledges/{pid}`` shows it.
PaymentStatus = Literal["pending", "captured", "capture_failed", "released", "dropped", "refunded"]
_Code = Annotated[StrictStr, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,63}$")]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PaymentMethodRequest(_Body):
    """``POST .../pledges/{pledge_id}/payment-method``: a new payment method for a pledge whose
    capture failed. The token goes to the erasable payment-token store, never to the log."""

    payment_token: Annotated[StrictStr, StringConstraints(min_length=1, max_length=500)]


class RefundBody(_Body):
    """``POST .../pledges/{pledge_id}/refund``: all that is still refundable (no
    ``amount_minor``) or part of it."""

    amount_minor: Annotated[StrictInt, Field(ge=1, le=10**15)] | None = None
    reason: _Code = "requested_by_platform"


class RevenueBody(_Body):
    """``POST /v1/campaigns/{campaign_id}/revenue``: what a coproduction earned in a period."""

    period: Annotated[StrictStr, StringConstraints(pattern=r"^[0-9]{4}-(Q[1-4]|0[1-9]|1[0-2])$")]
    amount_minor: Annotated[StrictInt, Field(ge=0, le=10**15)]
    currency: Currency


class SettlementCommandAccepted(_Out):
    """202: the command is durably in ``settlement-commands``; the worker has not decided."""

    campaign_id: str
    pledge_id: str | None = None
    status: Literal["pending"]
    status_url: str


class SettlementCommandDecided(_Out):
    """200 with ``Prefer: wait``: the settlement worker accepted the command."""

    campaign_id: str
    pledge_id: str | None = None
    status: Literal["accepted"]
    event_type: str = Field(description="The event that recorded it.")
    seq: int = Field(description="Its seq in the campaign's settlement stream.")


class SettlementMoney(_Out):
    amount_minor: int
    currency: str


class LedgerBalance(_Out):
    """One account's totals (minor units)."""

    account: LedgerAccount
    debit_minor: int
    credit_minor: int


class SettlementView(_Out):
    """``GET /v1/campaigns/{campaign_id}/settlement``: the settlement read model.

    ``gross``/``fees``/``commission``/``payout`` are the ledger's balances (backer funds,
    payment fees, platform revenue, creator payable): once settled, the ``CampaignSettled``
    figures, less what refunds after payout took back."""

    campaign_id: str
    status: Literal["open", "settling", "settled"]
    outcome: Literal["funded", "failed", "cancelled"] | None
    gross: SettlementMoney
    commission: SettlementMoney
    fees: SettlementMoney
    payout: SettlementMoney
    captured_count: int
    failed_count: int
    released_count: int
    refunded_count: int
    ledger: list[LedgerBalance]
    seq: int = Field(description="Last seq of the campaign's settlement stream shown (0: none).")


class PaymentView(_Out):
    """A pledge's payment, from the settlement read model."""

    status: PaymentStatus
    attempts: int = 0
    retry_until: str | None = Field(
        default=None, description="capture_failed: the backer may fix the payment until then."
    )
    captured_minor: int = 0
    refunded_minor: int = 0
    method_updated: bool = False
    reason: str | None = None


#: The payment of an accepted pledge settlement has recorded nothing for yet.
PENDING_PAYMENT = PaymentView(status="pending").model_dump()
