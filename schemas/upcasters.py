"""Explicit per-step upcasters that bring stored payloads of old schema versions up to date.

The log is immutable, so an old event is never rewritten: it is upcast on every read. Each step
is a pure function on the payload dict, registered under ``(event_type, from_version)``.
Stored hashes stay valid because the chain is verified on the bytes as stored, before upcasting.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from schemas.errors import DecodeError
from schemas.events import EVENT_TYPES
from schemas.ledger import capture_lines, refund_lines, settled_lines

__all__ = [
    "UPCASTERS",
    "Upcaster",
    "upcast",
    "upcast_campaign_settled_v1_v2",
    "upcast_payment_method_updated_v1_v2",
    "upcast_pledge_captured_v1_v2",
    "upcast_pledge_made_v1_v2",
    "upcast_pledge_refunded_v1_v2",
]

Payload = dict[str, Any]
Upcaster = Callable[[Payload], Payload]


def upcast_pledge_made_v1_v2(payload: Payload) -> Payload:
    """PledgeMade v1 predates reward tiers: a v1 pledge backs the campaign with no tier."""
    return {**payload, "tier_id": None}


def _minor(payload: Payload, key: str) -> int:
    try:
        value = payload[key]["amount_minor"]
    except (KeyError, TypeError):
        raise DecodeError(f"payload.{key}.amount_minor: required to upcast") from None
    if type(value) is not int:
        raise DecodeError(f"payload.{key}.amount_minor: an integer is required")
    return value


def _dumped(lines: Any) -> list[Payload]:
    return [line.model_dump(mode="json") for line in lines]


def _ledger_of(build: Callable[[], Any]) -> list[Payload]:
    try:
        return _dumped(build())
    except ValueError as exc:
        raise DecodeError(f"payload.ledger: {exc}") from None


def upcast_pledge_captured_v1_v2(payload: Payload) -> Payload:
    """PledgeCaptured v1 carried no ledger lines: they are the ones its amount and fee post."""
    lines = _ledger_of(lambda: capture_lines(_minor(payload, "amount"), _minor(payload, "fee")))
    return {**payload, "ledger": lines}


def upcast_pledge_refunded_v1_v2(payload: Payload) -> Payload:
    """PledgeRefunded v1 carried no ledger lines: they follow from amount and fee_refunded."""
    lines = _ledger_of(
        lambda: refund_lines(_minor(payload, "amount"), _minor(payload, "fee_refunded"))
    )
    return {**payload, "ledger": lines}


def upcast_campaign_settled_v1_v2(payload: Payload) -> Payload:
    """CampaignSettled v1 carried no ledger lines: its own posting is the commission."""
    return {**payload, "ledger": _ledger_of(lambda: settled_lines(_minor(payload, "commission")))}


def upcast_payment_method_updated_v1_v2(payload: Payload) -> Payload:
    """PaymentMethodUpdated v1 carried the new token; v2 keeps tokens off the log (the token
    of a v1 fix is not carried forward: the retry uses the payment-token store's)."""
    return {k: v for k, v in payload.items() if k != "payment_token"}


#: ``(event_type, from_version) -> step`` producing ``from_version + 1``.
UPCASTERS: dict[tuple[str, int], Upcaster] = {
    ("PledgeMade", 1): upcast_pledge_made_v1_v2,
    ("PledgeCaptured", 1): upcast_pledge_captured_v1_v2,
    ("PledgeRefunded", 1): upcast_pledge_refunded_v1_v2,
    ("CampaignSettled", 1): upcast_campaign_settled_v1_v2,
    ("PaymentMethodUpdated", 1): upcast_payment_method_updated_v1_v2,
}


def upcast(event_type: str, version: int, payload: Payload) -> tuple[int, Payload]:
    """Apply the chain of steps from ``version`` to the current version of ``event_type``.

    Raises :class:`DecodeError` for an unknown type, a version newer than this reader, or a
    missing step (a gap in the chain is a deployment bug, not something to guess around).
    """
    model = EVENT_TYPES.get(event_type)
    if model is None:
        raise DecodeError(f"event_type: unknown event type {event_type!r}")
    target = model.schema_version
    if version > target or version < 1:
        raise DecodeError(
            f"schema_version: {event_type} v{version} is not readable (this reader knows "
            f"v1..v{target})"
        )
    while version < target:
        step = UPCASTERS.get((event_type, version))
        if step is None:
            raise DecodeError(f"schema_version: no upcaster for {event_type} v{version}")
        payload = step(payload)
        version += 1
    return version, payload
