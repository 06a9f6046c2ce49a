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

from collections.abc import Callable, Sequence
from typing import Literal

import orjson
from fastapi import FastAPI, Query
from starlette.requests import Request
from starlette.responses import Response

from services.pledge.api.cursors import CursorCodec
from services.pledge.api.ingest import Ingest
from services.pledge.api.models import CampaignPage, EventPage, PledgePage
from services.pledge.api.openapi import COMMON, json_content, problem_content
from services.pledge.api.problems import ProblemError
from services.pledge.api.reading import header_map
from services.pledge.api.responses import JSON
from services.pledge.api.views import pledge_view, visible_campaign

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
        """``GET /v1/campaigns``: the tenant's campaigns in id order."""
        tenant = self.ingest.authenticate(header_map(request.scope)).tenant_id
        index = status or "all"
        listing = f"campaigns?status={index}"
        after = self.cursors.decode(tenant, listing, cursor) if cursor else ""
        rows, more = await self.ingest.reads.campaign_page(tenant, index, after, limit)
        docs = [doc for row in rows if (doc := visible_campaign(row, tenant)) is not None]
        return self._page(docs, tenant, listing, more)

    async def pledges(
        self,
        request: Request,
        campaign_id: str,
        status: str | None,
        cursor: str | None,
        limit: int,
    ) -> Response:
        """``GET /v1/campaigns/{campaign_id}/pledges``: its pledges in id order."""
        tenant = await self._campaign_owner(request, campaign_id)
        index = status or "all"
        listing = f"campaigns/{campaign_id}/pledges?status={index}"
        after = self.cursors.decode(tenant, listing, cursor) if cursor else ""
        rows, more = await self.ingest.reads.pledge_page(campaign_id, index, after, limit)
        return self._page([pledge_view(row) for row in rows], tenant, listing, more)

    async def events(
        self,
        request: Request,
        campaign_id: str,
        after_seq: int,
        cursor: str | None,
        limit: int,
    ) -> Response:
        """``GET /v1/campaigns/{campaign_id}/events``: its events in seq order."""
        tenant = await self._campaign_owner(request, campaign_id)
        listing = f"campaigns/{campaign_id}/events"
        if cursor:
            position = self.cursors.decode(tenant, listing, cursor)
            after_seq = int(position) if position.isdigit() else 0
        events, more = await self.ingest.reads.event_page(campaign_id, after_seq, limit)
        next_cursor = None if more is None else self.cursors.encode(tenant, listing, str(more))
        # The stored events are already the public JSON: joined, not parsed again.
        body = b'{"data":[%s],"next_cursor":%s}' % (b",".join(events), orjson.dumps(next_cursor))
        return Response(body, media_type=JSON)

    async def _campaign_owner(self, request: Request, campaign_id: str) -> str:
        tenant = self.ingest.authenticate(header_map(request.scope)).tenant_id
        row = await self.ingest.reads.campaign(campaign_id)
        if visible_campaign(row, tenant) is None:
            raise ProblemError("not-found", "no such campaign (or not projected yet)")
        return tenant

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
        "whose command is in Kafka but not decided yet). Paging is stable while pledges "
        "arrive: none that existed when paging began is skipped or repeated.",
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
        "again later with `after_seq` = the last `seq` seen.",
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
