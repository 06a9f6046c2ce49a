"""The GET bodies built from read-model rows, and their validators (``ETag``).

One builder per resource, used by the single-resource routes and by the listings alike, so
an item of a page is byte for byte the body of its own URL. A campaign's version is its
``seq`` (every change of it is an event); a pledge's row changes at several seqs (decided,
cancelled, a refusal noted beside it), so its ETag is a digest of the body.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson
from starlette.responses import Response

from schemas.tenancy import local_id
from services.pledge.adapters.redis_readmodel import CampaignRow, PledgeRow
from services.pledge.api.reading import HeaderMap, header
from services.pledge.api.responses import JSON

__all__ = [
    "WITH_PAYMENT",
    "campaign_etag",
    "conditional",
    "event_view",
    "pledge_etag",
    "pledge_view",
    "pledge_visible",
    "visible_campaign",
]


#: Statuses of a pledge whose body shows ``payment`` (money was or may be moved for it).
WITH_PAYMENT = frozenset({"accepted", "cancelled"})


def visible_campaign(
    row: CampaignRow | None, tenant_id: str, qualified: str
) -> dict[str, Any] | None:
    """The campaign's body when ``tenant_id`` may see it (launched, theirs, and the stored
    document is the campaign ``qualified`` names), with the tenant's own id; else None."""
    if row is None or row.doc is None or row.doc.get("status") not in ("open", "closed"):
        return None
    if row.tenant_id != tenant_id or row.doc.get("campaign_id") != qualified:
        return None
    return {**row.doc, "campaign_id": local_id(qualified)}


def pledge_visible(row: PledgeRow, tenant_id: str, qualified: str, pledge_id: str) -> bool:
    """True when the stored pledge is this very (tenant, campaign, pledge)."""
    doc = row.doc
    return (
        doc.get("campaign_id") == qualified
        and doc.get("pledge_id") == pledge_id
        and doc.get("tenant_id", tenant_id) == tenant_id
    )


def pledge_view(row: PledgeRow, expire_before_ms: float) -> dict[str, Any]:
    """A pledge's public body: the tenant's own campaign id, the stored tenant left out, a
    row pending since before ``expire_before_ms`` shown ``expired`` (no decision came for far
    longer than a decision takes: say so, not "pending"), a cancellation folded in."""
    view = row.doc.copy()  # same members and order as before, without the stored tenant
    view.pop("tenant_id", None)
    campaign_id = view.get("campaign_id")
    if isinstance(campaign_id, str):
        view["campaign_id"] = local_id(campaign_id)
    view["status"] = row.status
    view["last_refusal"] = row.refusal
    if (
        row.status == "pending"
        and row.pending_since is not None
        and row.pending_since < expire_before_ms
    ):
        view["status"] = "expired"
        view["reason"] = "no_decision"
    if row.cancel is not None:
        view["seq"], view["reason"] = row.cancel["seq"], row.cancel["reason"]
    return view


def event_view(stored: bytes) -> bytes:
    """An event of the events listing as its tenant sees it: the envelope's campaign id
    stripped to the tenant's own. The stored text is the canonical encoding the processor
    hashed, under the qualified id: a reader verifies the chain by putting
    ``"<tenant>/<campaign>"`` back (event payloads carry no campaign id)."""
    event = orjson.loads(stored)
    if isinstance(event.get("campaign_id"), str):
        event["campaign_id"] = local_id(event["campaign_id"])
    return orjson.dumps(event)


def campaign_etag(seq: int) -> str:
    """A campaign's strong validator: its last applied seq."""
    return f'"{seq}"'


def pledge_etag(body: bytes) -> str:
    """A pledge's strong validator: a digest of its body."""
    return '"' + hashlib.blake2b(body, digest_size=12).hexdigest() + '"'


def _matches(if_none_match: str, etag: str) -> bool:
    if if_none_match.strip() == "*":
        return True
    for candidate in if_none_match.split(","):
        candidate = candidate.strip()
        if candidate.removeprefix("W/") == etag:  # If-None-Match compares weakly (RFC 9110)
            return True
    return False


def conditional(headers: HeaderMap, body: bytes, etag: str) -> Response:
    """200 with ``ETag``, or 304 (no body) when ``If-None-Match`` already names it."""
    if_none_match = header(headers, b"if-none-match")
    if if_none_match is not None and _matches(if_none_match, etag):
        return Response(status_code=304, headers={"ETag": etag})
    return Response(body, media_type=JSON, headers={"ETag": etag})
