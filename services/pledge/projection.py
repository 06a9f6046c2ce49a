"""The read model's projection: every row shape, and the event -> rows function (pure: no
I/O, no clock).

A pledge row (``rm:p:<campaign>:<pledge>`` ``doc``) is written twice in its life: *pending* by
the API once its command is in Kafka (so a status URL answers at once), then *accepted* or
*rejected* by the projector when the processor has decided. Both writers build it here, so
the ``GET /v1/campaigns/{campaign_id}/pledges/{pledge_id}`` body has one shape whoever wrote
it. Member order is part of the stored bytes: keep it.

:func:`project` applies one event to a campaign summary (exactly the
``GET /v1/campaigns/{id}`` body) and returns the pledge and decision changes as
``(key, op, value)`` for the projector's Lua script (``services/pledge/projector``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

from schemas.canonical import format_timestamp
from schemas.codec import encode
from schemas.envelope import Envelope
from schemas.events import (
    CampaignClosed,
    CampaignLaunched,
    GoalReached,
    PledgeCancelled,
    PledgeMade,
    PledgeRejected,
    RejectionReason,
)

if TYPE_CHECKING:
    from services.pledge.adapters.redis_readmodel import Keys

__all__ = [
    "accepted_pledge_row",
    "cancellation",
    "dump",
    "initial_summary",
    "pending_pledge_row",
    "pledge_row",
    "project",
    "refusal_note",
    "rejected_pledge_row",
    "with_listing_ops",
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


#: Refusals of a *cancellation*: the pledge keeps its status, the refusal is noted beside it.
_CANCEL_REFUSALS = frozenset(
    {
        RejectionReason.PLEDGE_NOT_FOUND,
        RejectionReason.PLEDGE_NOT_ACTIVE,
        RejectionReason.CANCELLATION_WINDOW_CLOSED,
    }
)


def initial_summary(campaign_id: str) -> dict[str, Any]:
    """The summary of a campaign no event of which was applied yet."""
    return {"campaign_id": campaign_id, "status": "absent", "seq": 0}


def project(
    summary: dict[str, Any], tenant: str | None, envelope: Envelope, keys: Keys
) -> tuple[str | None, list[tuple[str, str, bytes]]]:
    """Apply one event (the next seq) to ``summary`` in place.

    Returns the campaign's tenant (known from its launch) and the pledge/decision changes as
    ``(key, op, value)`` for :data:`APPLY_SCRIPT`.
    """
    payload = envelope.payload
    campaign_id = envelope.campaign_id
    seq = envelope.seq
    ops: list[tuple[str, str, bytes]] = []
    decision: dict[str, Any] = {
        "outcome": "accepted",
        "seq": seq,
        "event_type": envelope.event_type,
    }
    match payload:
        case CampaignLaunched():
            tenant = payload.tenant_id
            summary.clear()
            summary.update(
                {
                    "campaign_id": campaign_id,
                    "title": payload.title,
                    "creator_id": payload.creator_id,
                    "status": "open",
                    "outcome": None,
                    "funding_model": payload.funding_model,
                    "kind": payload.kind,
                    "goal": payload.goal.model_dump(),
                    "total": {"amount_minor": 0, "currency": payload.goal.currency},
                    "pledge_count": 0,
                    "goal_reached_at": None,
                    "deadline": format_timestamp(payload.deadline),
                    "tiers": [
                        {
                            "tier_id": tier.tier_id,
                            "title": tier.title,
                            "min_amount_minor": tier.min_amount_minor,
                            "quantity_limit": tier.quantity_limit,
                            "remaining": tier.quantity_limit,
                        }
                        for tier in payload.tiers
                    ],
                    "seq": seq,
                }
            )
        case PledgeMade():
            if "total" in summary:
                summary["total"]["amount_minor"] += payload.amount.amount_minor
                summary["pledge_count"] += 1
                _tier_taken(summary, payload.tier_id, 1)
            doc = accepted_pledge_row(payload, campaign_id, seq, tenant)
            ops.append((keys.pledge(campaign_id, payload.pledge_id), "set:accepted", dump(doc)))
        case PledgeRejected():
            decision.update(outcome="refused", reason=str(payload.reason), detail=payload.detail)
            # A refused launch or close carries the command id as its pledge id: no pledge.
            if payload.pledge_id != envelope.causation_id:
                key = keys.pledge(campaign_id, payload.pledge_id)
                if payload.reason in _CANCEL_REFUSALS:
                    ops.append((key, "note", dump(refusal_note(payload, seq))))
                else:
                    doc = rejected_pledge_row(payload, campaign_id, seq, tenant)
                    ops.append((key, "refuse", dump(doc)))
        case PledgeCancelled():
            if "total" in summary:
                summary["total"]["amount_minor"] -= payload.amount.amount_minor
                summary["pledge_count"] -= 1
                _tier_taken(summary, payload.tier_id, -1)
            cancel = cancellation(seq, payload.reason)
            ops.append((keys.pledge(campaign_id, payload.pledge_id), "cancel", dump(cancel)))
        case GoalReached():
            if summary.get("goal_reached_at") is None and "total" in summary:
                summary["goal_reached_at"] = format_timestamp(envelope.occurred_at)
        case CampaignClosed():
            summary["status"] = "closed"
            summary["outcome"] = payload.outcome
            decision["close_outcome"] = payload.outcome
        case _:
            pass  # another stream's event on a campaign topic: nothing to show
    summary["seq"] = seq
    ops.append((keys.decision(envelope.causation_id), "decide", dump(decision)))
    return tenant, with_listing_ops(ops, envelope, tenant, keys)


def _tier_taken(summary: dict[str, Any], tier_id: str | None, count: int) -> None:
    if tier_id is None:
        return
    for tier in summary["tiers"]:
        if tier["tier_id"] == tier_id and tier["remaining"] is not None:
            tier["remaining"] -= count


def dump(value: dict[str, Any]) -> bytes:
    """Compact JSON bytes of a row (what the Lua script stores)."""
    return orjson.dumps(value)


#: One change of :data:`APPLY_SCRIPT`: (key, op, value).
Op = tuple[str, str, bytes]

_PLEDGE_CHANGES = ("set:", "refuse", "cancel")


def with_listing_ops(ops: list[Op], envelope: Envelope, tenant: str | None, keys: Keys) -> list[Op]:
    """``ops`` of one event (the projection's pledge and decision changes) with the listing
    upkeep added: each pledge change followed by its ``ix`` op, a launch or close by the
    tenant's ``cx`` op, and the event itself (``ev``) for the events listing. Pure."""
    campaign_id = envelope.campaign_id
    pledge_prefix = keys.pledge(campaign_id, "")
    index_base = keys.pledge_index(campaign_id, "")
    out: list[Op] = []
    for key, op, value in ops:
        out.append((key, op, value))
        if key.startswith(pledge_prefix) and op.startswith(_PLEDGE_CHANGES):
            out.append((index_base, "ix:" + key[len(pledge_prefix) :], b""))
    payload = envelope.payload
    if tenant and isinstance(payload, CampaignLaunched | CampaignClosed):
        status = b"open" if isinstance(payload, CampaignLaunched) else b"closed"
        out.append((keys.campaign_index(tenant, ""), "cx:" + campaign_id, status))
    # Its canonical encoding (the Kafka value, the hashed text): a reader can verify the chain.
    out.append((keys.events(campaign_id), f"ev:{envelope.seq}", encode(envelope)))
    return out
