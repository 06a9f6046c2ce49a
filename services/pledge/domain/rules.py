"""The business rules, one function per command: given the state (not changed) and ``now``,
the events a command yields, unstamped; a refusal is a ``PledgeRejected`` with a stable
reason code. :mod:`~services.pledge.domain.decisions` dispatches to them and stamps the
result; the rules themselves are listed in the package's docstring.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from schemas.canonical import format_timestamp
from schemas.commands import CancelPledge, CloseCampaign, LaunchCampaign, MakePledge
from schemas.construct import trusted_model
from schemas.events import (
    CampaignClosed,
    CampaignLaunched,
    CampaignTerms,
    CloseOutcome,
    CloseReason,
    Event,
    GoalReached,
    PledgeCancelled,
    PledgeMade,
    PledgeRejected,
    RejectionReason,
)
from schemas.money import Money
from services.pledge.domain.state import UNKNOWN_BACKER, CampaignState, PledgeRecord, Policy

__all__ = [
    "closed",
    "decide_cancel",
    "decide_close",
    "decide_launch",
    "decide_pledge",
    "pledge_made",
    "pledge_refused",
]

R = RejectionReason
#: Currency of the zero amount carried by a refusal on a campaign with no terms yet.
_FALLBACK_CURRENCY = "EUR"
_TERMS_FIELDS = tuple(CampaignTerms.model_fields)


def pledge_refused(command: MakePledge, reason: RejectionReason, detail: str) -> list[Event]:
    return [
        PledgeRejected(
            pledge_id=command.pledge_id,
            backer_id=command.backer_id,
            amount=command.amount,
            reason=reason,
            detail=detail,
        )
    ]


def decide_pledge(state: CampaignState, command: MakePledge, now: datetime) -> list[Event]:
    # The hot path: the command's fields are read from its __dict__ and the terms' from the
    # state's slots (pydantic models define __getattr__, which slows every attribute read).
    fields = command.__dict__
    if fields["pledge_id"] in state.pledges:
        return []
    if state.terms is None:
        return pledge_refused(
            command, R.CAMPAIGN_NOT_FOUND, f"campaign {state.campaign_id} was never launched"
        )
    if fields["tenant_id"] != state._tenant_id:
        return pledge_refused(command, R.TENANT_MISMATCH, "the campaign belongs to another tenant")
    if state.status != "open":
        return pledge_refused(command, R.CAMPAIGN_CLOSED, "the campaign is closed")
    if now >= state._deadline:
        return pledge_refused(
            command,
            R.DEADLINE_PASSED,
            f"the campaign's deadline {format_timestamp(state._deadline)} has passed",
        )
    amount = fields["amount"].__dict__
    currency = state._currency
    if amount["currency"] != currency:
        return pledge_refused(
            command,
            R.CURRENCY_MISMATCH,
            f"the campaign takes {currency}, not {amount['currency']}",
        )
    minor: int = amount["amount_minor"]
    if minor <= 0:
        return pledge_refused(command, R.INVALID_AMOUNT, "a pledge amount must be positive")
    tier_id = fields["tier_id"]
    if tier_id is not None:
        tier = state._tiers.get(tier_id)
        if tier is None:
            return pledge_refused(command, R.UNKNOWN_TIER, f"the campaign has no tier {tier_id!r}")
        min_minor, limit = tier
        if minor < min_minor:
            return pledge_refused(
                command,
                R.BELOW_TIER_MINIMUM,
                f"tier {tier_id!r} needs at least "
                f"{Money.model_construct(amount_minor=min_minor, currency=currency)}",
            )
        if limit is not None and state.tier_used.get(tier_id, 0) >= limit:
            return pledge_refused(
                command, R.TIER_SOLD_OUT, f"all {limit} of tier {tier_id!r} are taken"
            )
    events: list[Event] = [pledge_made(command, fields)]
    total = state.total_minor + minor
    if state.goal_reached_at is None and total >= state._goal_minor:
        events.append(
            GoalReached(
                total=Money.model_construct(amount_minor=total, currency=currency),
                pledge_count=state.pledge_count + 1,
            )
        )
    return events


_PLEDGE_MADE_FIELDS = frozenset(PledgeMade.model_fields)


def pledge_made(command: MakePledge, fields: dict[str, Any] | None = None) -> PledgeMade:
    """``PledgeMade`` of an accepted ``command`` (whose ``__dict__`` is ``fields``) without
    validating it again: every field comes from the validated command, whose fields carry the
    same constraints (the hot path)."""
    if fields is None:
        fields = command.__dict__
    payment_token = fields["payment_token"]
    locale = fields["locale"]
    if (payment_token is not None and type(payment_token) is not str) or (
        locale is not None and type(locale) is not str
    ):
        # The command's lax ``str`` may hold what the event's StrictStr refuses: validate.
        return PledgeMade(
            pledge_id=command.pledge_id,
            backer_id=command.backer_id,
            amount=command.amount,
            tier_id=command.tier_id,
            payment_token=payment_token,
            locale=locale,
        )
    return trusted_model(
        PledgeMade,
        {
            "pledge_id": fields["pledge_id"],
            "backer_id": fields["backer_id"],
            "amount": fields["amount"],
            "tier_id": fields["tier_id"],
            "payment_token": payment_token,
            "locale": locale,
        },
        _PLEDGE_MADE_FIELDS,
    )


def _cancel_refused(
    state: CampaignState,
    command: CancelPledge,
    record: PledgeRecord | None,
    reason: RejectionReason,
    detail: str,
) -> list[Event]:
    currency = state.currency or _FALLBACK_CURRENCY
    return [
        PledgeRejected(
            pledge_id=command.pledge_id,
            backer_id=UNKNOWN_BACKER if record is None else record.backer_id,
            amount=Money.model_construct(
                amount_minor=0 if record is None else record.amount_minor, currency=currency
            ),
            reason=reason,
            detail=detail,
        )
    ]


def decide_cancel(
    state: CampaignState, command: CancelPledge, now: datetime, policy: Policy
) -> list[Event]:
    record = state.pledges.get(command.pledge_id)
    terms = state.terms
    # Unknown first, whatever else is wrong: this reason never marks the pledge id as used.
    if record is None or record.status == "rejected" or terms is None:
        return _cancel_refused(
            state, command, None, R.PLEDGE_NOT_FOUND, f"no accepted pledge {command.pledge_id}"
        )
    if command.tenant_id != terms.tenant_id:
        return _cancel_refused(
            state, command, record, R.TENANT_MISMATCH, "the campaign belongs to another tenant"
        )
    if state.status != "open":
        return _cancel_refused(state, command, record, R.CAMPAIGN_CLOSED, "the campaign is closed")
    if record.status != "active":
        return _cancel_refused(
            state, command, record, R.PLEDGE_NOT_ACTIVE, "the pledge was already cancelled"
        )
    if now >= terms.deadline:
        return _cancel_refused(
            state, command, record, R.DEADLINE_PASSED, "the campaign's deadline has passed"
        )
    goal_minor = terms.goal.amount_minor
    if (
        policy.refuse_late_cancellation_below_goal
        and terms.deadline - now < policy.late_window
        and state.total_minor >= goal_minor
        and state.total_minor - record.amount_minor < goal_minor
    ):
        return _cancel_refused(
            state,
            command,
            record,
            R.CANCELLATION_WINDOW_CLOSED,
            "in the last hours before the deadline a cancellation may not take the total "
            "below the goal",
        )
    return [
        PledgeCancelled(
            pledge_id=command.pledge_id,
            amount=Money.model_construct(
                amount_minor=record.amount_minor, currency=terms.goal.currency
            ),
            tier_id=record.tier_id,
            reason=command.reason,
        )
    ]


def decide_launch(state: CampaignState, command: LaunchCampaign, now: datetime) -> list[Event]:
    def refused(reason: RejectionReason, detail: str) -> list[Event]:
        return [
            PledgeRejected(
                pledge_id=command.command_id,
                backer_id=command.creator_id,
                amount=command.goal,
                reason=reason,
                detail=detail,
            )
        ]

    if state.status != "absent":
        return refused(R.ALREADY_LAUNCHED, f"campaign {state.campaign_id} was already launched")
    if command.deadline <= now:
        return refused(
            R.DEADLINE_IN_PAST,
            f"the deadline {format_timestamp(command.deadline)} is not in the future",
        )
    # Goal > 0, unique tier ids and the coproduction terms are checked by CampaignTerms.
    return [CampaignLaunched(**{name: getattr(command, name) for name in _TERMS_FIELDS})]


def decide_close(state: CampaignState, command: CloseCampaign, now: datetime) -> list[Event]:
    terms = state.terms
    if terms is None or state.status != "open":
        return []
    if command.tenant_id != terms.tenant_id:
        return [
            PledgeRejected(
                pledge_id=command.command_id,
                backer_id=command.tenant_id,
                amount=Money.model_construct(amount_minor=0, currency=terms.goal.currency),
                reason=R.TENANT_MISMATCH,
                detail="the campaign belongs to another tenant",
            )
        ]
    reason: CloseReason = command.reason
    if now >= terms.deadline and reason != "platform_suspended":
        reason = "deadline"
    elif reason == "deadline":
        return []  # before the deadline: the timer closes it when the time comes
    return [closed(state, terms, reason)]


def closed(state: CampaignState, terms: CampaignLaunched, reason: CloseReason) -> CampaignClosed:
    outcome: CloseOutcome
    if reason != "deadline":
        outcome = "cancelled"
    elif state.total_minor >= terms.goal.amount_minor or (
        terms.funding_model == "keep_it_all" and state.pledge_count > 0
    ):
        outcome = "funded"
    else:
        outcome = "failed"
    return CampaignClosed(
        outcome=outcome,
        reason=reason,
        total=Money.model_construct(amount_minor=state.total_minor, currency=terms.goal.currency),
        accepted_pledges=state.pledge_count,
        last_seq=state.seq + 1,
    )
