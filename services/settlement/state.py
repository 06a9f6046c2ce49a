"""Settlement state of one campaign, folded from its campaign stream and its settlement stream.

Pure: :func:`evolve` applies one envelope of either stream (in each stream's ``seq`` order) and
does no I/O. The state is all the worker needs to derive what it still owes (captures, voids,
refunds, retries, the final ``CampaignSettled``): a worker restarted anywhere folds the same
logs and derives the same next actions (``services.settlement.domain.plan``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from schemas.envelope import Envelope
from schemas.events import (
    CampaignClosed,
    CampaignLaunched,
    CampaignSettled,
    CampaignTerms,
    GoalReached,
    PaymentMethodUpdated,
    PledgeCancelled,
    PledgeCaptured,
    PledgeCaptureFailed,
    PledgeMade,
    PledgeRefunded,
    PledgeRejected,
    PledgeReleased,
    RefundRequested,
    RevenueShared,
    SettlementCommandRejected,
)
from schemas.ledger import LEDGER_ACCOUNTS, LedgerAccount, LedgerLine

__all__ = [
    "PaymentStatus",
    "PendingRefund",
    "SettlementPledge",
    "SettlementState",
    "evolve",
    "refund_key",
]

#: Where a pledge's money stands: ``pending`` (nothing settled yet), ``captured`` (collected,
#: possibly partly refunded), ``failed`` (a capture failed; retries may follow), ``released``
#: (never collected: voided, dropped or cancelled), ``refunded`` (collected, all paid back).
PaymentStatus = Literal["pending", "captured", "failed", "released", "refunded"]


def refund_key(campaign_id: str, pledge_id: str, refund_id: str) -> str:
    """Idempotency key (and causation id of ``PledgeRefunded``) of one refund."""
    return f"{campaign_id}/{pledge_id}/refund/{refund_id}"


@dataclass(frozen=True, slots=True)
class PendingRefund:
    """A refund owed to a backer (requested or automatic) that the gateway has not paid yet."""

    refund_id: str
    amount_minor: int
    reason: str


@dataclass(slots=True)
class SettlementPledge:
    """One accepted pledge as settlement sees it."""

    pledge_id: str
    backer_id: str
    amount_minor: int
    payment_token: str | None
    cancelled: bool = False
    status: PaymentStatus = "pending"
    #: Capture (or charge) attempts recorded, failed or not.
    attempts: int = 0
    #: When the first capture failed: the retry schedule counts from here.
    first_failed_at: datetime | None = None
    retry_until: datetime | None = None
    #: The backer gave a new payment method since the last failure: retry at once.
    method_fixed: bool = False
    fee_minor: int = 0
    captured_minor: int = 0
    refunded_minor: int = 0
    gateway_ref: str | None = None
    #: Refunds owed, by idempotency key (:func:`refund_key`).
    refunds_due: dict[str, PendingRefund] = field(default_factory=dict)

    @property
    def refundable_minor(self) -> int:
        """What may still be refunded: collected, less paid back and owed back."""
        owed = sum(r.amount_minor for r in self.refunds_due.values())
        return self.captured_minor - self.refunded_minor - owed


@dataclass
class SettlementState:
    """Everything settlement knows of one campaign."""

    campaign_id: str
    terms: CampaignTerms | None = None
    pledges: dict[str, SettlementPledge] = field(default_factory=dict)
    closed: CampaignClosed | None = None
    #: Last seq folded of each stream.
    campaign_seq: int = 0
    settlement_seq: int = 0
    settled: CampaignSettled | None = None
    settled_seq: int = 0
    #: Causation ids of settlement events: a command or gateway result seen again is a no-op.
    causations: set[str] = field(default_factory=set)
    revenue_periods: set[str] = field(default_factory=set)
    captured_count: int = 0
    refunded_count: int = 0
    failed_pledges: set[str] = field(default_factory=set)
    #: ``account -> [debits, credits]`` over every settlement event's ledger lines.
    ledger: dict[LedgerAccount, list[int]] = field(
        default_factory=lambda: {a: [0, 0] for a in LEDGER_ACCOUNTS}
    )

    @property
    def currency(self) -> str:
        """The campaign's currency (its goal's)."""
        if self.terms is None:
            raise ValueError(f"campaign {self.campaign_id!r} has no terms yet")
        return self.terms.goal.currency

    @property
    def outcome(self) -> str | None:
        """``funded``/``failed``/``cancelled`` once closed, else None."""
        return None if self.closed is None else self.closed.outcome

    def balance(self, account: LedgerAccount) -> int:
        """Credits minus debits of ``account`` (debits minus credits for ``backer_funds``)."""
        debits, credits = self.ledger[account]
        return debits - credits if account == "backer_funds" else credits - debits


def evolve(state: SettlementState, envelope: Envelope) -> None:
    """Apply one envelope of the campaign or settlement stream to ``state`` (in place)."""
    if envelope.campaign_id != state.campaign_id:
        raise ValueError(f"{envelope.campaign_id!r} event folded into {state.campaign_id!r}")
    if envelope.stream == "campaign":
        state.campaign_seq = envelope.seq
        _campaign_event(state, envelope)
    elif envelope.stream == "settlement":
        state.settlement_seq = envelope.seq
        state.causations.add(envelope.causation_id)
        _settlement_event(state, envelope)


def _campaign_event(state: SettlementState, envelope: Envelope) -> None:
    match envelope.payload:
        case CampaignLaunched() as launched:
            state.terms = CampaignTerms.model_validate(
                {k: getattr(launched, k) for k in CampaignTerms.model_fields}
            )
        case PledgeMade() as made:
            state.pledges[made.pledge_id] = SettlementPledge(
                pledge_id=made.pledge_id,
                backer_id=made.backer_id,
                amount_minor=made.amount.amount_minor,
                payment_token=made.payment_token,
            )
        case PledgeCancelled() as cancelled:
            pledge = state.pledges.get(cancelled.pledge_id)
            if pledge is not None:
                pledge.cancelled = True
        case CampaignClosed() as closed:
            state.closed = closed
        case PledgeRejected() | GoalReached():
            pass
        case _:
            pass


def _post(state: SettlementState, lines: tuple[LedgerLine, ...]) -> None:
    for line in lines:
        totals = state.ledger[line.account]
        totals[0] += line.debit_minor
        totals[1] += line.credit_minor


def _settlement_event(state: SettlementState, envelope: Envelope) -> None:
    payload = envelope.payload
    match payload:
        case PledgeCaptured():
            pledge = state.pledges[payload.pledge_id]
            pledge.status = "captured"
            pledge.attempts = max(pledge.attempts, payload.attempt)
            pledge.fee_minor = payload.fee.amount_minor
            pledge.captured_minor = payload.amount.amount_minor
            pledge.gateway_ref = payload.gateway_ref
            state.captured_count += 1
            _post(state, payload.ledger)
        case PledgeCaptureFailed():
            pledge = state.pledges[payload.pledge_id]
            pledge.status = "failed"
            pledge.attempts = max(pledge.attempts, payload.attempt)
            if pledge.first_failed_at is None:
                pledge.first_failed_at = envelope.occurred_at
            pledge.retry_until = payload.retry_until
            pledge.method_fixed = False
            state.failed_pledges.add(payload.pledge_id)
        case PledgeReleased():
            state.pledges[payload.pledge_id].status = "released"
        case PledgeRefunded():
            pledge = state.pledges[payload.pledge_id]
            pledge.refunds_due.pop(envelope.causation_id, None)
            pledge.refunded_minor += payload.amount.amount_minor
            if pledge.refunded_minor >= pledge.captured_minor:
                pledge.status = "refunded"
            state.refunded_count += 1
            _post(state, payload.ledger)
        case RefundRequested():
            pledge = state.pledges[payload.pledge_id]
            key = refund_key(state.campaign_id, payload.pledge_id, payload.refund_id)
            pledge.refunds_due[key] = PendingRefund(
                payload.refund_id, payload.amount.amount_minor, payload.reason
            )
        case PaymentMethodUpdated():
            pledge = state.pledges[payload.pledge_id]
            # The new token is in the payment-token store: the event carries none, and a token
            # the pledge's own event carried (before tokens left the log) is stale now.
            pledge.payment_token = None
            pledge.method_fixed = True
        case CampaignSettled():
            state.settled = payload
            state.settled_seq = envelope.seq
            _post(state, payload.ledger)
        case RevenueShared():
            state.revenue_periods.add(payload.period)
        case SettlementCommandRejected():
            pass
        case _:
            pass
