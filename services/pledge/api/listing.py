"""The listings: a tenant's campaigns, a campaign's pledges, a campaign's events.

Each page is read from the read model's index sets (see
:mod:`services.pledge.adapters.redis_readmodel`) after the position its cursor carries, so
paging is stable while pledges arrive: a member never moves inside a set, so none that
existed when paging began is skipped or shown twice. Cursors are bound to the tenant and to
the listing (route, campaign, status filter) by :class:`~services.pledge.api.cursors.CursorCodec`.

Events are kept by the projector in a sorted set per campaign (score = seq) rather than read
back from Kafka: a campaign's events are interleaved with every other campaign of their
partitions and spread over several topics, so a page read from Kafka would fetch and drop
other campaigns' records (or need a seq -> offset index and a consumer per request), while a
``ZRANGEBYSCORE`` costs O(log n + page) in the store the API already reads.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Literal

import orjson
from fastapi import FastAPI, Query
from starlette.requests import Request
from starlette.responses import Response

from schemas.tenancy import local_id, qualify, tenant_of
from services.pledge.api.cursors import CursorCodec
from services.pledge.api.ingest import Ingest
from services.pledge.api.models import CampaignPage, EventPage, PledgePage
from services.pledge.api.openapi import COMMON, json_content, problem_content
from services.pledge.api.problems import ProblemError
from services.pledge.api.reading import header_map
from services.pledge.api.responses import JSON
from services.pledge.api.views import (
    WITH_PAYMENT,
    event_view,
    pledge_view,
    pledge_visible,
    visible_campaign,
)
from services.settlement.api_models import PENDING_PAYMENT

__all__ = ["MAX_LIMIT", "Listings", "add_listing_routes"]

#: Largest page.
MAX_LIMIT = 500
DEFAULT_LIMIT = 100

CampaignStatus = Literal["open", "closed"]
PledgeStatus = Literal["pending", "accepted", "rejected", "cancelled"]

_LIST_ERRORS = {
    **COMMON,
    400: problem_content("`cursor` not issued for this tenant and listing, or altered."),
}


class Listings:
    """The three listing handlers over the ingest service's reads and key check."""

    def __init__(self, ingest: Ingest, cursors: CursorCodec) -> None:
        self.ingest = ingest
        self.cursors = cursors

    async def campaigns(
        self, request: Request, status: str | None, cursor: str | None, limit: int
    ) -> Response:
        """``GET /v1/campaigns``: the tenant's campaigns in id order (the index holds their
        qualified ids, all under the tenant's prefix, so id order is the tenant's own)."""
        tenant = await self._tenant(request, "/v1/campaigns")
        index = status or "all"
        listing = f"campaigns?status={index}"
        after = self.cursors.decode(tenant, listing, cursor) if cursor else ""
        rows, more = await self.ingest.reads.campaign_page(
            tenant, index, qualify(tenant, after) if after else "", limit
        )
        docs = [
            doc
            for row in rows
            if row.doc is not None
            and isinstance(qualified := row.doc.get("campaign_id"), str)
            and (doc := visible_campaign(row, tenant, qualified)) is not None
            and tenant_of(qualified) == tenant
        ]
        return self._page(docs, tenant, listing, None if more is None else local_id(more))

    async def pledges(
        self,
        request: Request,
        campaign_id: str,
        status: str | None,
        cursor: str | None,
        limit: int,
    ) -> Response:
        """``GET /v1/campaigns/{campaign_id}/pledges``: its pledges in id order, each as its
        own GET shows it. ``status=pending`` leaves out the rows its GET shows ``expired``
        (still in the pending index: no decision came); such a page may hold fewer than
        ``limit``, and its cursor resumes after the last row read, so paging is unchanged."""
        route = "/v1/campaigns/{campaign_id}/pledges"
        tenant, qualified = await self._campaign_owner(request, campaign_id, route)
        index = status or "all"
        listing = f"campaigns/{campaign_id}/pledges?status={index}"
        after = self.cursors.decode(tenant, listing, cursor) if cursor else ""
        rows, more = await self.ingest.reads.pledge_page(qualified, index, after, limit)
        expire_before_ms = time.time() * 1000 - self.ingest.pending_expiry_ms
        # Its payment as its own GET shows it, from the record read beside its row.
        payments = self.ingest.ports.settlement is not None
        views = []
        for row in rows:
            if pledge_visible(row, tenant, qualified, str(row.doc.get("pledge_id"))):
                view = pledge_view(row, expire_before_ms)
                if payments and row.status in WITH_PAYMENT:
                    view["payment"] = row.payment or PENDING_PAYMENT
                views.append(view)
        items = [v for v in views if v["status"] == "pending"] if status == "pending" else views
        return self._page(items, tenant, listing, more)

    async def events(
        self,
        request: Request,
        campaign_id: str,
        after_seq: int,
        cursor: str | None,
        limit: int,
    ) -> Response:
        """``GET /v1/campaigns/{campaign_id}/events``: its events in seq order."""
        route = "/v1/campaigns/{campaign_id}/events"
        tenant, qualified = await self._campaign_owner(request, campaign_id, route)
        listing = f"campaigns/{campaign_id}/events"
        if cursor:
            position = self.cursors.decode(tenant, listing, cursor)
            after_seq = int(position) if position.isdigit() else 0
        events, more = await self.ingest.reads.event_page(qualified, after_seq, limit)
        next_cursor = None if more is None else self.cursors.encode(tenant, listing, str(more))
        body = b'{"data":[%s],"next_cursor":%s}' % (
            b",".join(event_view(event) for event in events),
            orjson.dumps(next_cursor),
        )
        return Response(body, media_type=JSON)

    async def _tenant(self, request: Request, route: str) -> str:
        """The caller's tenant; the request pays a rate-limit token like every GET."""
        scope = request.scope
        principal = await self.ingest.authenticate(scope, header_map(scope))
        await self.ingest.pipeline.charge(principal, route)
        return principal.tenant_id

    async def _campaign_owner(
        self, request: Request, campaign_id: str, route: str
    ) -> tuple[str, str]:
        """The caller's tenant and its campaign's qualified id; 404 (as for a campaign of
        another tenant) when it has none of that id."""
        tenant = await self._tenant(request, route)
        qualified = qualify(tenant, campaign_id)
        row = await self.ingest.reads.campaign(qualified)
        if visible_campaign(row, tenant, qualified) is None:
            raise ProblemError("not-found", "no such campaign (or not projected yet)")
        return tenant, qualified

    def _page(
        self, items: Sequence[object], tenant: str, listing: str, more: str | None
    ) -> Response:
        next_cursor = None if more is None else self.cursors.encode(tenant, listing, more)
        return Response(orjson.dumps({"data": items, "next_cursor": next_cursor}), media_type=JSON)


_Limit = Query(DEFAULT_LIMIT, ge=1, le=MAX_LIMIT, description="Page size (1-500).")
_Cursor = Query(None, max_length=512, description="`next_cursor` of the previous page (opaque).")

_CampaignStatus = Query(None, description="Only `open` or `closed` ones.")
_PledgeStatus = Query(None, description="Only pledges in this status.")
_AfterSeq = Query(0, ge=0, description="Only events with a greater `seq`.")


def add_listing_routes(
    app: FastAPI, ingest: Callable[[], Ingest], cursors: CursorCodec, campaign_id_param: object
) -> None:
    """Register the three listing routes on ``app``."""

    def listings() -> Listings:
        return Listings(ingest(), cursors)

    @app.get(
        "/v1/campaigns",
        summary="List the tenant's campaigns",
        description="The campaigns of the API key's tenant in id order, a page at a time. "
        "Pass `next_cursor` back as `cursor` for the next page; it is bound to this tenant "
        "and this `status` filter.",
        response_model=None,
        responses={200: json_content(CampaignPage, "A page of campaigns."), **_LIST_ERRORS},
        tags=["campaigns"],
    )
    async def list_campaigns(
        request: Request,
        status: CampaignStatus | None = _CampaignStatus,
        cursor: str | None = _Cursor,
        limit: int = _Limit,
    ) -> Response:
        return await listings().campaigns(request, status, cursor, limit)

    @app.get(
        "/v1/campaigns/{campaign_id}/pledges",
        summary="List a campaign's pledges",
        description="The campaign's pledges in id order, pending ones included (a pledge "
        "whose command is in Kafka but not decided yet), each as its own GET shows it: "
        "`status=pending` leaves out those shown `expired` (a page may then hold fewer than "
        "`limit`; follow `next_cursor`). Paging is stable while pledges arrive: none that "
        "existed when paging began is skipped or repeated.",
        response_model=None,
        responses={200: json_content(PledgePage, "A page of pledges."), **_LIST_ERRORS},
        tags=["pledges"],
    )
    async def list_pledges(
        request: Request,
        campaign_id: str = campaign_id_param,  # type: ignore[assignment]
        status: PledgeStatus | None = _PledgeStatus,
        cursor: str | None = _Cursor,
        limit: int = _Limit,
    ) -> Response:
        return await listings().pledges(request, campaign_id, status, cursor, limit)

    @app.get(
        "/v1/campaigns/{campaign_id}/events",
        summary="List a campaign's events",
        description="The campaign's own events (its envelopes, hash chain included) in `seq` "
        "order after `after_seq`: how an integrator catches up after downtime without "
        "access to Kafka. An empty page with a null `next_cursor` means caught up; poll "
        "again later with `after_seq` = the last `seq` seen. `campaign_id` is your own id; "
        "the `hash` was computed over the tenant-qualified id `<tenant>/<campaign>`, so put "
        "that back to verify the chain.",
        response_model=None,
        responses={200: json_content(EventPage, "A page of events."), **_LIST_ERRORS},
        tags=["campaigns"],
    )
    async def list_events(
        request: Request,
        campaign_id: str = campaign_id_param,  # type: ignore[assignment]
        after_seq: int = _AfterSeq,
        cursor: str | None = _Cursor,
        limit: int = _Limit,
    ) -> Response:
        return await listings().events(request, campaign_id, after_seq, cursor, limit)
