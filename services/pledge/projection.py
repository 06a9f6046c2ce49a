"""The read model's pledge rows, built in one place (pure: no I/O, no clock).

A pledge row (``rm:p:<campaign>:<pledge>`` ``doc``) is written twice in its life: *pending* by
the API once its command is in Kafka (so a status URL answers at once), then *accepted* or
*rejected* by the projector when the processor has decided. Both writers build it here, so
the ``GET /v1/campaigns/{campaign_id}/pledges/{pledge_id}`` body has one shape whoever wrote
it. Member order is part of the stored bytes: keep it.
"""

from __future__ import annotations

from typing import Any

from schemas.events import PledgeMade, PledgeRejected

__all__ = [
    "accepted_pledge_row",
    "cancellation",
    "pending_pledge_row",
    "pledge_row",
    "refusal_note",
    "rejected_pledge_row",
]


def pledge_row(
    *,
    pledge_id: str,
    campaign_id: str,
    status: str,
    backer_id: str,
    amount_minor: int,
    currency: str,
    tier_id: str | None,
    seq: int | None,
    reason: str | None,
    detail: str | None,
    tenant_id: str | None,
) -> dict[str, Any]:
    """A pledge row's document (``tenant_id`` is stored, never shown)."""
    return {
        "pledge_id": pledge_id,
        "campaign_id": campaign_id,
        "status": status,
        "backer_id": backer_id,
        "amount": {"amount_minor": amount_minor, "currency": currency},
        "tier_id": tier_id,
        "seq": seq,
        "reason": reason,
        "detail": detail,
        "tenant_id": tenant_id,
    }


def pending_pledge_row(
    *,
    pledge_id: str,
    campaign_id: str,
    backer_id: str,
    amount_minor: int,
    currency: str,
    tier_id: str | None,
    tenant_id: str,
) -> dict[str, Any]:
    """The row the API writes once the ``MakePledge`` is in Kafka (not decided yet)."""
    return pledge_row(
        pledge_id=pledge_id,
        campaign_id=campaign_id,
        status="pending",
        backer_id=backer_id,
        amount_minor=amount_minor,
        currency=currency,
        tier_id=tier_id,
        seq=None,
        reason=None,
        detail=None,
        tenant_id=tenant_id,
    )


def accepted_pledge_row(
    payload: PledgeMade, campaign_id: str, seq: int, tenant_id: str | None
) -> dict[str, Any]:
    """The row of a pledge the processor accepted (its ``PledgeMade`` is at ``seq``)."""
    return pledge_row(
        pledge_id=payload.pledge_id,
        campaign_id=campaign_id,
        status="accepted",
        backer_id=payload.backer_id,
        amount_minor=payload.amount.amount_minor,
        currency=payload.amount.currency,
        tier_id=payload.tier_id,
        seq=seq,
        reason=None,
        detail=None,
        tenant_id=tenant_id,
    )


def rejected_pledge_row(
    payload: PledgeRejected, campaign_id: str, seq: int, tenant_id: str | None
) -> dict[str, Any]:
    """The row of a pledge the processor refused (the tier is not shown: it was not taken)."""
    return pledge_row(
        pledge_id=payload.pledge_id,
        campaign_id=campaign_id,
        status="rejected",
        backer_id=payload.backer_id,
        amount_minor=payload.amount.amount_minor,
        currency=payload.amount.currency,
        tier_id=None,
        seq=seq,
        reason=str(payload.reason),
        detail=payload.detail,
        tenant_id=tenant_id,
    )


def refusal_note(payload: PledgeRejected, seq: int) -> dict[str, Any]:
    """A refused operation on an existing pledge (a late cancellation), kept beside its row."""
    return {"reason": str(payload.reason), "detail": payload.detail, "seq": seq}


def cancellation(seq: int, reason: str) -> dict[str, Any]:
    """The cancellation stored beside a cancelled pledge's row."""
    return {"seq": seq, "reason": reason}
