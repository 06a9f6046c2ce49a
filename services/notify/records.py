"""The stored form of a notification (Redis queue, dead-letter topic): JSON, lossless.

A notification's params hold :class:`~schemas.money.Money` and datetimes; they are tagged
(``{"$money": [minor, "EUR"]}``, ``{"$time": "2026-..."}``) so they come back as the same types
and an e-mail rendered after a restart or a redrive is the one that would have been sent.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

import orjson

from schemas.canonical import format_timestamp, to_utc
from schemas.money import Money
from services.notify.domain import Notification

__all__ = ["decode_notification", "encode_notification", "lane_of"]


def lane_of(notification: Notification) -> str:
    """The delivery lane: ``webhook:<endpoint>`` per endpoint; for e-mail
    ``email|<tenant>/<kind>/<person>``, whose part before ``|`` (the SMTP relay) shares the
    concurrency limit and circuit breaker and whose whole names the person, whose messages
    are sent one at a time, in order."""
    n = notification
    if n.channel == "webhook":
        return f"webhook:{n.recipient}"
    return f"email|{n.tenant_id}/{n.recipient_kind}/{n.recipient}"


def _tag(value: Any) -> Any:
    if isinstance(value, Money):
        return {"$money": [value.amount_minor, value.currency]}
    if isinstance(value, datetime):
        return {"$time": format_timestamp(value)}
    if isinstance(value, dict):
        return {k: _tag(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_tag(v) for v in value]
    return value


def _untag(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {"$money"}:
            minor, currency = value["$money"]
            return Money(amount_minor=minor, currency=currency)
        if set(value) == {"$time"}:
            return to_utc(datetime.fromisoformat(value["$time"]))
        return {k: _untag(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_untag(v) for v in value]
    return value


def encode_notification(n: Notification) -> bytes:
    """JSON bytes of ``n`` (see the module docstring for the tags)."""
    return orjson.dumps(
        {
            "notification_id": n.notification_id,
            "cause_event_id": str(n.cause_event_id),
            "campaign_id": n.campaign_id,
            "tenant_id": n.tenant_id,
            "event_type": n.event_type,
            "occurred_at": format_timestamp(n.occurred_at),
            "channel": n.channel,
            "recipient_kind": n.recipient_kind,
            "recipient": n.recipient,
            "template": n.template,
            "params": _tag(n.params),
            "locale_hint": n.locale_hint,
        }
    )


def decode_notification(data: bytes | str) -> Notification:
    """The notification :func:`encode_notification` wrote; ValueError on anything else."""
    try:
        raw = orjson.loads(data)
        return Notification(
            notification_id=str(raw["notification_id"]),
            cause_event_id=UUID(raw["cause_event_id"]),
            campaign_id=str(raw["campaign_id"]),
            tenant_id=str(raw["tenant_id"]),
            event_type=str(raw["event_type"]),
            occurred_at=to_utc(datetime.fromisoformat(raw["occurred_at"])),
            channel=raw["channel"],
            recipient_kind=raw["recipient_kind"],
            recipient=str(raw["recipient"]),
            template=str(raw["template"]),
            params=_untag(raw["params"]),
            locale_hint=raw["locale_hint"],
        )
    except (KeyError, TypeError, orjson.JSONDecodeError) as exc:
        raise ValueError(f"not a stored notification: {exc!r}") from None
