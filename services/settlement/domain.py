"""The pure settlement domain: what a campaign still owes at the gateway, and what happened.

Kept as one module: ``plan``, ``decide`` and the ledger lines all read the same folded
state, and a rule's gateway call, its events and its money must be read together.

No I/O, no clock, no randomness: the worker passes ``now`` in. Two functions over the folded
:class:`~services.settlement.state.SettlementState`:

* :func:`plan` (level-triggered) - the gateway calls owed *now*: captures when funded, voids
  when failed or cancelled, charges at pledge time and refunds in ``charge_then_refund``,
  retries whose time has come, drops after the last try, requested refunds, verification of a
  new pledge's payment method. Each call carries an idempotency key derived from (campaign,
  pledge, action, attempt), so a worker restarted between the gateway call and the event write
  derives the same call with the same key and the gateway answers the same result.
* :func:`decide` - the events an input yields: a gateway result (``PledgeCaptured``,
  ``PledgeCaptureFailed`` with ``retry_until``, ``PledgeReleased``, ``PledgeRefunded``), a
  command (``RefundRequested``, ``PaymentMethodUpdated``, ``RevenueShared`` or
  ``SettlementCommandRejected``) or a :class:`Tick` (``CampaignSettled`` once every pledge is
  resolved and the pledge book matches ``CampaignClosed``'s counts). A result or command seen
  again yields nothing.

Money: commission is ``bps_of(gross, commission_bps)``, a capture's fee is the campaign's
``FeeSchedule.fee_for`` (capped at the amount), payout = gross - commission - fees; each event
carries the ledger lines of ``schemas.ledger``. The refund fee policy is in docs/settlement.md.

One module (over the usual size) on purpose: ``plan`` and ``decide`` share the per-pledge rules
(why money must not be collected, retry timing, which refund is automatic, what resolves a
pledge); split apart, each half would reach into the other's private helpers.
"""

from __future__ import annotations

from collections.abc import Container
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from schemas.events import (
    CampaignSettled,
    Event,
    PaymentMethodUpdated,
    PledgeCaptured,
    PledgeCaptureFailed,
    PledgeRefunded,
    PledgeReleased,
    RefundRequested,
    RevenueShared,
    RevenueShareLine,
    SettlementCommandRejected,
)
from schemas.ledger import capture_lines, refund_lines, settled_lines
from schemas.money import Money, allocate, bps_of
from schemas.settlement_commands import RefundPledge, ReportRevenue, UpdatePaymentMethod
from services.settlement.state import SettlementPledge, SettlementState, refund_key

__all__ = [
    "AUTO_REFUND",
    "DEFAULT_RETRY_SCHEDULE",
    "CallKind",
    "GatewayCall",
    "GatewayResult",
    "Input",
    "Policy",
    "Tick",
    "book_mismatch",
    "decide",
    "plan",
    "plan_pledge",
    "statement",
]

#: Retries after a failed capture, counted from the first failure (Kickstarter's 7 days).
DEFAULT_RETRY_SCHEDULE: tuple[timedelta, ...] = (
    timedelta(days=1),
    timedelta(days=3),
    timedelta(days=7),
)

CallKind = Literal["authorize", "capture", "void", "charge", "refund"]
#: The refund id of the refund settlement owes by itself (cancelled pledge, failed campaign).
AUTO_REFUND = "auto"


@dataclass(frozen=True, slots=True)
class Policy:
    """Settlement knobs (``PLEDGEFLOW_SETTLEMENT_RETRY_SCHEDULE`` shortens the schedule)."""

    retry_schedule: tuple[timedelta, ...] = DEFAULT_RETRY_SCHEDULE

    def __post_init__(self) -> None:
        steps = self.retry_schedule
        if any(step <= timedelta(0) for step in steps) or list(steps) != sorted(steps):
            raise ValueError("retry_schedule: offsets must be positive and increasing")


@dataclass(frozen=True, slots=True)
class GatewayCall:
    """One call owed to the payment gateway; ``key`` is its idempotency key and the causation
    id of the event its result yields."""

    kind: CallKind
    campaign_id: str
    pledge_id: str
    amount: Money
    payment_token: str | None
    key: str
    attempt: int = 1
    #: Why (voids and refunds): ``campaign_failed``, ``pledge_cancelled``, ``dropped``...
    reason: str = ""
    #: The authorization a capture or void settles (authorize_then_capture).
    authorization_key: str | None = None
    #: The capture a refund pays back.
    capture_ref: str | None = None


@dataclass(frozen=True, slots=True)
class GatewayResult:
    """The gateway's answer to ``call``: ``ok`` with its ``reference``, or a decline ``code``."""

    call: GatewayCall
    ok: bool
    reference: str = ""
    code: str = ""
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Tick:
    """Time passed (or a batch was applied): settle the campaign if it is ready."""


Input = GatewayResult | RefundPledge | UpdatePaymentMethod | ReportRevenue | Tick


def _key(state: SettlementState, pledge_id: str, action: str, attempt: int) -> str:
    return f"{state.campaign_id}/{pledge_id}/{action}/{attempt}"


def _call(
    state: SettlementState,
    pledge: SettlementPledge,
    kind: CallKind,
    *,
    attempt: int = 1,
    reason: str = "",
    amount_minor: int | None = None,
) -> GatewayCall:
    authorizes = state.terms is not None and state.terms.settlement_mode == "authorize_then_capture"
    return GatewayCall(
        kind=kind,
        campaign_id=state.campaign_id,
        pledge_id=pledge.pledge_id,
        amount=Money(
            amount_minor=pledge.amount_minor if amount_minor is None else amount_minor,
            currency=state.currency,
        ),
        payment_token=pledge.payment_token,
        key=_key(state, pledge.pledge_id, kind, attempt),
        attempt=attempt,
        reason=reason,
        authorization_key=_key(state, pledge.pledge_id, "authorize", 1) if authorizes else None,
        capture_ref=pledge.gateway_ref,
    )


def _retry_due(pledge: SettlementPledge, policy: Policy, now: datetime) -> bool | None:
    """True: retry now; False: wait; None: no retry left (drop)."""
    failures = pledge.attempts
    schedule = policy.retry_schedule
    if failures > len(schedule):
        return None
    if pledge.method_fixed:
        return True
    assert pledge.first_failed_at is not None
    return now >= pledge.first_failed_at + schedule[failures - 1]


def _refund_call(
    state: SettlementState, pledge: SettlementPledge, key: str, amount_minor: int, reason: str
) -> GatewayCall:
    return GatewayCall(
        kind="refund",
        campaign_id=state.campaign_id,
        pledge_id=pledge.pledge_id,
        amount=Money(amount_minor=amount_minor, currency=state.currency),
        payment_token=pledge.payment_token,
        key=key,
        reason=reason,
        capture_ref=pledge.gateway_ref,
    )


def _stop_reason(state: SettlementState, pledge: SettlementPledge) -> str | None:
    """Why the pledge's money must not (or no longer) be collected, if it must not."""
    if pledge.cancelled:
        return "pledge_cancelled"
    if state.outcome in ("failed", "cancelled"):
        return f"campaign_{state.outcome}"
    return None


def _pledge_calls(
    state: SettlementState, pledge: SettlementPledge, policy: Policy, now: datetime
) -> list[GatewayCall]:
    calls = [
        _refund_call(state, pledge, key, due.amount_minor, due.reason)
        for key, due in pledge.refunds_due.items()
    ]
    assert state.terms is not None
    charges = state.terms.settlement_mode == "charge_then_refund"
    outcome = state.outcome
    stop = _stop_reason(state, pledge)
    status = pledge.status
    if status == "captured":
        if stop is not None and pledge.refundable_minor > 0:
            # The automatic refund of a charge (cancelled pledge, failed campaign): one key.
            key = refund_key(state.campaign_id, pledge.pledge_id, AUTO_REFUND)
            calls.append(_refund_call(state, pledge, key, pledge.refundable_minor, stop))
        return calls
    if status in ("released", "refunded"):
        return calls
    if stop is not None:
        calls.append(_call(state, pledge, "void", reason=stop))
        return calls
    if status == "pending":
        if charges:
            calls.append(_call(state, pledge, "charge"))
        elif outcome == "funded":
            calls.append(_call(state, pledge, "capture"))
        elif outcome is None:
            calls.append(_call(state, pledge, "authorize"))
        return calls
    # status == "failed": retry on the schedule, or drop after the last try.
    if not charges and outcome is None:
        return calls
    due = _retry_due(pledge, policy, now)
    if due is None:
        calls.append(_call(state, pledge, "void", reason="dropped"))
    elif due:
        kind: CallKind = "charge" if charges else "capture"
        calls.append(_call(state, pledge, kind, attempt=pledge.attempts + 1))
    return calls


def plan(
    state: SettlementState, now: datetime, policy: Policy, skip: Container[str] = ()
) -> list[GatewayCall]:
    """Every gateway call owed at ``now``, except those whose key is in ``skip`` (in flight,
    or verifications already done by this process)."""
    if state.terms is None:
        return []
    calls: list[GatewayCall] = []
    for pledge in state.pledges.values():
        for call in _pledge_calls(state, pledge, policy, now):
            if call.key not in skip:
                calls.append(call)
    return calls


def plan_pledge(
    state: SettlementState,
    pledge_id: str,
    now: datetime,
    policy: Policy,
    skip: Container[str] = (),
) -> list[GatewayCall]:
    """:func:`plan` for one pledge (the worker re-plans only the pledges that changed)."""
    pledge = state.pledges.get(pledge_id)
    if state.terms is None or pledge is None:
        return []
    return [c for c in _pledge_calls(state, pledge, policy, now) if c.key not in skip]


def decide(state: SettlementState, given: Input, now: datetime, policy: Policy) -> list[Event]:
    """The events ``given`` yields on ``state`` at ``now`` (nothing for a repeat)."""
    match given:
        case GatewayResult():
            if given.call.key in state.causations:
                return []
            return _on_result(state, given, now, policy)
        case RefundPledge() | UpdatePaymentMethod() | ReportRevenue():
            if given.command_id in state.causations:
                return []
            return _on_command(state, given, now, policy)
        case Tick():
            return _settle(state)


def _fee(state: SettlementState, amount_minor: int) -> int:
    assert state.terms is not None
    return min(state.terms.fee_schedule.fee_for(amount_minor), amount_minor)


def _on_result(
    state: SettlementState, result: GatewayResult, now: datetime, policy: Policy
) -> list[Event]:
    call = result.call
    pledge = state.pledges.get(call.pledge_id)
    if pledge is None or call.kind == "authorize":
        return []
    currency = state.currency

    def money(minor: int) -> Money:
        return Money(amount_minor=minor, currency=currency)

    if call.kind in ("capture", "charge"):
        if pledge.status in ("captured", "released", "refunded") or call.attempt <= pledge.attempts:
            return []
        if result.ok:
            fee = _fee(state, pledge.amount_minor)
            return [
                PledgeCaptured(
                    pledge_id=pledge.pledge_id,
                    backer_id=pledge.backer_id,
                    amount=money(pledge.amount_minor),
                    fee=money(fee),
                    gateway_ref=result.reference,
                    attempt=call.attempt,
                    ledger=capture_lines(pledge.amount_minor, fee),
                )
            ]
        schedule = policy.retry_schedule
        first = pledge.first_failed_at or now
        last_try = call.attempt > len(schedule)
        return [
            PledgeCaptureFailed(
                pledge_id=pledge.pledge_id,
                backer_id=pledge.backer_id,
                amount=money(pledge.amount_minor),
                reason=result.code or "gateway_declined",
                detail=result.detail[:2000],
                attempt=call.attempt,
                retry_until=None if last_try or not schedule else first + schedule[-1],
            )
        ]
    if call.kind == "void":
        if pledge.status in ("captured", "released", "refunded") or not result.ok:
            return []
        return [
            PledgeReleased(
                pledge_id=pledge.pledge_id, amount=money(pledge.amount_minor), reason=call.reason
            )
        ]
    # refund
    automatic = call.key == refund_key(state.campaign_id, pledge.pledge_id, AUTO_REFUND)
    if not result.ok or (call.key not in pledge.refunds_due and not automatic):
        return []
    # Fee policy: a refund the campaign's failure or the pledge's cancellation causes gives
    # the fee back to the campaign (no fees when a campaign fails); any other refund leaves it
    # with the creator, whose payable is debited (docs/settlement.md).
    fee_back = pledge.fee_minor if automatic else 0
    return [
        PledgeRefunded(
            pledge_id=pledge.pledge_id,
            backer_id=pledge.backer_id,
            amount=call.amount,
            fee_refunded=money(fee_back),
            reason=call.reason or "refund",
            gateway_ref=result.reference,
            ledger=refund_lines(call.amount.amount_minor, fee_back),
        )
    ]


def _reject(
    command: RefundPledge | UpdatePaymentMethod | ReportRevenue,
    reason: str,
    detail: str,
    pledge_id: str | None = None,
) -> list[Event]:
    return [
        SettlementCommandRejected(
            command_id=command.command_id,
            command_type=command.command_type,
            pledge_id=pledge_id,
            reason=reason,
            detail=detail,
        )
    ]


def _on_command(
    state: SettlementState,
    command: RefundPledge | UpdatePaymentMethod | ReportRevenue,
    now: datetime,
    policy: Policy,
) -> list[Event]:
    if state.terms is None:
        return _reject(command, "campaign_not_found", f"no campaign {state.campaign_id!r}")
    match command:
        case RefundPledge():
            pledge = state.pledges.get(command.pledge_id)
            if pledge is None:
                return _reject(
                    command,
                    "pledge_not_found",
                    f"no pledge {command.pledge_id!r}",
                    command.pledge_id,
                )
            refundable = pledge.refundable_minor
            if pledge.status != "captured" or refundable <= 0:
                return _reject(
                    command, "pledge_not_captured",
                    f"pledge {pledge.pledge_id!r} is {pledge.status} with nothing left to refund",
                    pledge.pledge_id,
                )  # fmt: skip
            amount = refundable if command.amount_minor is None else command.amount_minor
            if amount > refundable:
                return _reject(
                    command, "refund_exceeds_captured",
                    f"amount_minor {amount} is more than the {refundable} still refundable",
                    pledge.pledge_id,
                )  # fmt: skip
            return [
                RefundRequested(
                    refund_id=command.command_id,
                    pledge_id=pledge.pledge_id,
                    amount=Money(amount_minor=amount, currency=state.currency),
                    reason=command.reason,
                    requested_by=command.requested_by,
                )
            ]
        case UpdatePaymentMethod():
            pledge = state.pledges.get(command.pledge_id)
            if pledge is None:
                return _reject(
                    command,
                    "pledge_not_found",
                    f"no pledge {command.pledge_id!r}",
                    command.pledge_id,
                )
            if pledge.status != "failed":
                return _reject(
                    command, "payment_not_failed",
                    f"pledge {pledge.pledge_id!r} is {pledge.status}: nothing to fix",
                    pledge.pledge_id,
                )  # fmt: skip
            if pledge.retry_until is None or now > pledge.retry_until:
                return _reject(
                    command, "retry_window_closed",
                    f"the retry window of pledge {pledge.pledge_id!r} has closed",
                    pledge.pledge_id,
                )  # fmt: skip
            return [PaymentMethodUpdated(pledge_id=pledge.pledge_id)]
        case ReportRevenue():
            return _share_revenue(state, command)


def _share_revenue(state: SettlementState, command: ReportRevenue) -> list[Event]:
    terms = state.terms
    assert terms is not None
    if terms.kind != "coproduction" or terms.revenue_share is None:
        return _reject(command, "not_coproduction", "only coproduction campaigns share revenue")
    if command.currency != state.currency:
        return _reject(
            command, "currency_mismatch",
            f"currency {command.currency} on a {state.currency} campaign",
        )  # fmt: skip
    if state.settled is None:
        return _reject(
            command, "campaign_not_settled", "revenue is shared once the campaign is settled"
        )
    if command.period in state.revenue_periods:
        return _reject(
            command, "period_already_reported", f"period {command.period} was already reported"
        )
    holders = [p for p in state.pledges.values() if p.captured_minor - p.refunded_minor > 0]
    if not holders:
        return _reject(command, "no_backers", "no captured pledge shares the revenue")
    shared = bps_of(command.amount_minor, terms.revenue_share.share_bps)
    parts = allocate(shared, [p.captured_minor - p.refunded_minor for p in holders])
    currency = state.currency
    return [
        RevenueShared(
            period=command.period,
            revenue=Money(amount_minor=command.amount_minor, currency=currency),
            shared=Money(amount_minor=shared, currency=currency),
            shares=tuple(
                RevenueShareLine(pledge_id=p.pledge_id, backer_id=p.backer_id, amount_minor=part)
                for p, part in zip(holders, parts, strict=True)
            ),
        )
    ]


def book_mismatch(state: SettlementState) -> str | None:
    """Why the pledge book does not (yet) match ``CampaignClosed``'s counts, or None."""
    closed = state.closed
    if closed is None:
        return "the campaign is not closed"
    if state.campaign_seq < closed.last_seq:
        return f"campaign stream folded to seq {state.campaign_seq} of {closed.last_seq}"
    active = [p for p in state.pledges.values() if not p.cancelled]
    total = sum(p.amount_minor for p in active)
    if len(active) != closed.accepted_pledges or total != closed.total.amount_minor:
        return (
            f"{len(active)} active pledges for {total} but CampaignClosed counts "
            f"{closed.accepted_pledges} for {closed.total.amount_minor}"
        )
    return None


def _resolved(state: SettlementState, pledge: SettlementPledge) -> bool:
    if pledge.refunds_due:
        return False
    if pledge.status == "captured":
        return _stop_reason(state, pledge) is None
    return pledge.status in ("released", "refunded")


def statement(state: SettlementState) -> tuple[int, int, int, int]:
    """``(gross, commission, fees, payout)`` in minor units from the events folded so far."""
    assert state.terms is not None
    gross = state.balance("backer_funds")
    fees = state.balance("payment_fees")
    commission = bps_of(gross, state.terms.commission_bps)
    return gross, commission, fees, gross - commission - fees


def _settle(state: SettlementState) -> list[Event]:
    if state.settled is not None or state.terms is None or book_mismatch(state) is not None:
        return []
    if not all(_resolved(state, p) for p in state.pledges.values()):
        return []
    assert state.closed is not None
    gross, commission, fees, payout = statement(state)
    currency = state.currency

    def money(minor: int) -> Money:
        return Money(amount_minor=minor, currency=currency)

    return [
        CampaignSettled(
            outcome=state.closed.outcome,
            gross=money(gross),
            commission=money(commission),
            fees=money(fees),
            payout=money(payout),
            captured_count=state.captured_count,
            failed_count=len(state.failed_pledges),
            refunded_count=state.refunded_count,
            ledger_debits_minor=gross,
            ledger_credits_minor=payout + commission + fees,
            ledger=settled_lines(commission),
        )
    ]
