"""The typed async client of the Pledgeflow API (httpx).

What every integrator would otherwise write again:

* **Idempotency**: each write generates one ``Idempotency-Key`` per logical call (or takes
  the caller's) and sends that same key on every retry, so a retried write is one command;
* **Retries**: 429, 503 (and 502/504), a 409 "request in progress" and transport errors are
  retried with capped exponential back-off and full jitter, or after the server's
  ``Retry-After`` when it gives one; other errors are raised at once;
* **Errors**: problem documents become typed exceptions (:mod:`services.client.errors`);
* **Models**: requests and answers are the API's own pydantic models
  (:mod:`services.pledge.api.models`);
* **Reads**: ``ETag`` revalidation (a 304 returns the cached object) and async iterators over
  the cursor listings (:mod:`services.client.pages`).

Kept as one module: the client is one class with one method per endpoint, its public surface
read as one table; the walking of listings lives in :mod:`services.client.pages`.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, TypeVar

import httpx
import orjson
from pydantic import BaseModel

from schemas.pledge_fields import ID_PATTERN
from services.client.errors import PledgeflowError, error_for
from services.client.pages import walk
from services.client.retry import RetryPolicy, retry_after
from services.pledge.api.models import (
    BatchRequest,
    BatchResponse,
    CampaignAccepted,
    CampaignDecided,
    CampaignPage,
    CampaignView,
    CancelAccepted,
    CancelDecided,
    CancelRequest,
    CloseAccepted,
    CloseDecided,
    CloseRequest,
    EventPage,
    EventView,
    LaunchRequest,
    PledgeAccepted,
    PledgeDecided,
    PledgePage,
    PledgeRequest,
    PledgeView,
)
from services.settlement.api_models import (
    PaymentMethodRequest,
    RefundBody,
    RevenueBody,
    SettlementCommandAccepted,
    SettlementCommandDecided,
    SettlementView,
)

__all__ = ["PledgeflowClient", "RetryPolicy"]

M = TypeVar("M", bound=BaseModel)
Body = BaseModel | Mapping[str, Any]

_RETRY_STATUSES = frozenset({429, 502, 503, 504})
_IN_PROGRESS = "https://pledgeflow.dev/problems/request-in-progress"


def _json(body: Body | None) -> bytes | None:
    if body is None:
        return None
    if isinstance(body, BaseModel):
        return body.model_dump_json(exclude_unset=True).encode()
    return orjson.dumps(dict(body))


_ID = re.compile(ID_PATTERN)


def _path(template: str, **ids: str) -> str:
    """``template`` with its ids in; ValueError naming an id that is not one (a ``/``, ``..``,
    ``?`` or ``#`` in it would address another resource or add a query)."""
    for name, value in ids.items():
        if not isinstance(value, str) or not _ID.fullmatch(value):
            raise ValueError(f"{name}: {value!r} is not an id ({ID_PATTERN})")
    return template.format(**ids)


class PledgeflowClient:
    """One API key against one API. Use as ``async with PledgeflowClient(url, key) as api``."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = 30.0,
        retry: RetryPolicy | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        max_connections: int = 100,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        etag_cache_size: int = 1024,
    ) -> None:
        self.retry = retry or RetryPolicy()
        self._sleep = sleep
        self._http = httpx.AsyncClient(
            base_url=base_url,
            headers={"Authorization": f"Bearer {api_key}", "Accept": "application/json"},
            timeout=timeout,
            transport=transport,
            limits=httpx.Limits(max_connections=max_connections),
        )
        self._etags: OrderedDict[str, tuple[str, BaseModel]] = OrderedDict()
        self._etag_cache_size = etag_cache_size

    async def __aenter__(self) -> PledgeflowClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # --- transport ----------------------------------------------------------------------------

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: Body | None = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        idempotency_key: str | None = None,
        extensions: dict[str, Any] | None = None,
    ) -> httpx.Response:
        """One logical call: sent, retried while retryable, the answer (< 400 or 304) returned
        or its problem raised. Writes carry ``idempotency_key`` (generated when None) on every
        attempt; ``extensions`` are httpx's request extensions (e.g. ``trace``)."""
        sent_headers = dict(headers or {})
        content = _json(body)
        if method == "POST":
            sent_headers["Idempotency-Key"] = idempotency_key or uuid.uuid4().hex
        if content is not None:
            sent_headers["Content-Type"] = "application/json"
        query = {k: v for k, v in (params or {}).items() if v is not None}
        attempt = 0
        while True:
            try:
                response = await self._http.request(
                    method,
                    path,
                    content=content,
                    params=query,
                    headers=sent_headers,
                    extensions=extensions,
                )
            except httpx.TransportError:
                if attempt + 1 >= self.retry.attempts:
                    raise
                await self._sleep(self.retry.delay(attempt, None))
                attempt += 1
                continue
            if response.status_code < 400:
                return response
            if attempt + 1 < self.retry.attempts and self._retryable(response):
                await self._sleep(self.retry.delay(attempt, retry_after(response)))
                attempt += 1
                continue
            raise error_for(response.status_code, response.content)

    @staticmethod
    def _retryable(response: httpx.Response) -> bool:
        if response.status_code in _RETRY_STATUSES:
            return True
        if response.status_code == 409:
            try:
                return bool(orjson.loads(response.content).get("type") == _IN_PROGRESS)
            except (orjson.JSONDecodeError, AttributeError):
                return False
        return False

    async def _write(
        self,
        path: str,
        body: Body | None,
        pending: type[M],
        decided: type[BaseModel],
        wait: int | None,
        idempotency_key: str | None,
    ) -> Any:
        headers = {"Prefer": f"wait={wait}"} if wait else None
        response = await self.request(
            "POST", path, body=body, headers=headers, idempotency_key=idempotency_key
        )
        model = pending if response.status_code == 202 else decided
        return model.model_validate_json(response.content)

    async def _get_cached(self, path: str, model: type[M]) -> M:
        """GET with ``If-None-Match`` of the copy seen last: a 304 returns that copy."""
        cached = self._etags.get(path)
        headers = {"If-None-Match": cached[0]} if cached is not None else None
        response = await self.request("GET", path, headers=headers)
        if response.status_code == 304 and cached is not None:
            self._etags.move_to_end(path)
            return cached[1]  # type: ignore[return-value]
        value = model.model_validate_json(response.content)
        etag = response.headers.get("etag")
        if etag:
            self._etags[path] = (etag, value)
            self._etags.move_to_end(path)
            while len(self._etags) > self._etag_cache_size:
                self._etags.popitem(last=False)
        return value

    # --- writes -------------------------------------------------------------------------------

    async def launch_campaign(
        self,
        campaign: LaunchRequest | Mapping[str, Any],
        *,
        wait: int | None = None,
        idempotency_key: str | None = None,
    ) -> CampaignAccepted | CampaignDecided:
        """``POST /v1/campaigns``: 202 accepted, or (``wait``) decided."""
        result: CampaignAccepted | CampaignDecided = await self._write(
            "/v1/campaigns", campaign, CampaignAccepted, CampaignDecided, wait, idempotency_key
        )
        return result

    async def make_pledge(
        self,
        campaign_id: str,
        pledge: PledgeRequest | Mapping[str, Any],
        *,
        wait: int | None = None,
        idempotency_key: str | None = None,
    ) -> PledgeAccepted | PledgeDecided:
        """``POST /v1/campaigns/{id}/pledges``; a refusal (with ``wait``) raises Refused."""
        result: PledgeAccepted | PledgeDecided = await self._write(
            _path("/v1/campaigns/{campaign_id}/pledges", campaign_id=campaign_id),
            pledge,
            PledgeAccepted,
            PledgeDecided,
            wait,
            idempotency_key,
        )
        return result

    async def batch_pledges(
        self, batch: BatchRequest | Mapping[str, Any], *, idempotency_key: str | None = None
    ) -> BatchResponse:
        """``POST /v1/pledges/batch``: answered per item."""
        response = await self.request(
            "POST", "/v1/pledges/batch", body=batch, idempotency_key=idempotency_key
        )
        return BatchResponse.model_validate_json(response.content)

    async def cancel_pledge(
        self,
        campaign_id: str,
        pledge_id: str,
        cancel: CancelRequest | Mapping[str, Any] | None = None,
        *,
        wait: int | None = None,
        idempotency_key: str | None = None,
    ) -> CancelAccepted | CancelDecided:
        """``POST /v1/campaigns/{id}/pledges/{pledge_id}/cancel``."""
        result: CancelAccepted | CancelDecided = await self._write(
            _path(
                "/v1/campaigns/{campaign_id}/pledges/{pledge_id}/cancel",
                campaign_id=campaign_id,
                pledge_id=pledge_id,
            ),
            cancel if cancel is not None else {},
            CancelAccepted,
            CancelDecided,
            wait,
            idempotency_key,
        )
        return result

    async def close_campaign(
        self,
        campaign_id: str,
        close: CloseRequest | Mapping[str, Any],
        *,
        wait: int | None = None,
        idempotency_key: str | None = None,
    ) -> CloseAccepted | CloseDecided:
        """``POST /v1/campaigns/{id}/close``."""
        result: CloseAccepted | CloseDecided = await self._write(
            _path("/v1/campaigns/{campaign_id}/close", campaign_id=campaign_id),
            close,
            CloseAccepted,
            CloseDecided,
            wait,
            idempotency_key,
        )
        return result

    async def fix_payment_method(
        self,
        campaign_id: str,
        pledge_id: str,
        fix: PaymentMethodRequest | Mapping[str, Any],
        *,
        wait: int | None = None,
        idempotency_key: str | None = None,
    ) -> SettlementCommandAccepted | SettlementCommandDecided:
        """``POST /v1/campaigns/{id}/pledges/{pledge_id}/payment-method``."""
        result: SettlementCommandAccepted | SettlementCommandDecided = await self._write(
            _path(
                "/v1/campaigns/{campaign_id}/pledges/{pledge_id}/payment-method",
                campaign_id=campaign_id,
                pledge_id=pledge_id,
            ),
            fix,
            SettlementCommandAccepted,
            SettlementCommandDecided,
            wait,
            idempotency_key,
        )
        return result

    async def refund_pledge(
        self,
        campaign_id: str,
        pledge_id: str,
        refund: RefundBody | Mapping[str, Any] | None = None,
        *,
        wait: int | None = None,
        idempotency_key: str | None = None,
    ) -> SettlementCommandAccepted | SettlementCommandDecided:
        """``POST /v1/campaigns/{id}/pledges/{pledge_id}/refund`` (no body: a full refund)."""
        result: SettlementCommandAccepted | SettlementCommandDecided = await self._write(
            _path(
                "/v1/campaigns/{campaign_id}/pledges/{pledge_id}/refund",
                campaign_id=campaign_id,
                pledge_id=pledge_id,
            ),
            refund if refund is not None else {},
            SettlementCommandAccepted,
            SettlementCommandDecided,
            wait,
            idempotency_key,
        )
        return result

    async def report_revenue(
        self,
        campaign_id: str,
        revenue: RevenueBody | Mapping[str, Any],
        *,
        wait: int | None = None,
        idempotency_key: str | None = None,
    ) -> SettlementCommandAccepted | SettlementCommandDecided:
        """``POST /v1/campaigns/{id}/revenue`` (coproduction campaigns)."""
        result: SettlementCommandAccepted | SettlementCommandDecided = await self._write(
            _path("/v1/campaigns/{campaign_id}/revenue", campaign_id=campaign_id),
            revenue,
            SettlementCommandAccepted,
            SettlementCommandDecided,
            wait,
            idempotency_key,
        )
        return result

    # --- reads --------------------------------------------------------------------------------

    async def get_settlement(self, campaign_id: str) -> SettlementView:
        """``GET /v1/campaigns/{id}/settlement``: status, money and ledger balances
        (ETag-revalidated)."""
        return await self._get_cached(
            _path("/v1/campaigns/{campaign_id}/settlement", campaign_id=campaign_id), SettlementView
        )

    async def get_campaign(self, campaign_id: str) -> CampaignView:
        """``GET /v1/campaigns/{id}`` (revalidated with its ETag when seen before)."""
        return await self._get_cached(
            _path("/v1/campaigns/{campaign_id}", campaign_id=campaign_id), CampaignView
        )

    async def get_pledge(self, campaign_id: str, pledge_id: str) -> PledgeView:
        """``GET /v1/campaigns/{id}/pledges/{pledge_id}`` (ETag-revalidated)."""
        return await self._get_cached(
            _path(
                "/v1/campaigns/{campaign_id}/pledges/{pledge_id}",
                campaign_id=campaign_id,
                pledge_id=pledge_id,
            ),
            PledgeView,
        )

    async def campaign_page(
        self, *, status: str | None = None, cursor: str | None = None, limit: int = 100
    ) -> CampaignPage:
        """One page of ``GET /v1/campaigns``."""
        return CampaignPage.model_validate_json(
            await self._campaign_page(status, cursor, limit, {})
        )

    async def _campaign_page(
        self, status: str | None, cursor: str | None, limit: int, extensions: dict[str, Any]
    ) -> bytes:
        params = {"status": status, "cursor": cursor, "limit": limit}
        response = await self.request("GET", "/v1/campaigns", params=params, extensions=extensions)
        return response.content

    async def pledge_page(
        self,
        campaign_id: str,
        *,
        status: str | None = None,
        cursor: str | None = None,
        limit: int = 100,
    ) -> PledgePage:
        """One page of ``GET /v1/campaigns/{id}/pledges``."""
        return PledgePage.model_validate_json(
            await self._pledge_page(campaign_id, status, cursor, limit, {})
        )

    async def _pledge_page(
        self,
        campaign_id: str,
        status: str | None,
        cursor: str | None,
        limit: int,
        extensions: dict[str, Any],
    ) -> bytes:
        params = {"status": status, "cursor": cursor, "limit": limit}
        response = await self.request(
            "GET",
            _path("/v1/campaigns/{campaign_id}/pledges", campaign_id=campaign_id),
            params=params,
            extensions=extensions,
        )
        return response.content

    async def event_page(
        self,
        campaign_id: str,
        *,
        after_seq: int = 0,
        cursor: str | None = None,
        limit: int = 100,
    ) -> EventPage:
        """One page of ``GET /v1/campaigns/{id}/events``."""
        return EventPage.model_validate_json(
            await self._event_page(campaign_id, after_seq, cursor, limit, {})
        )

    async def _event_page(
        self,
        campaign_id: str,
        after_seq: int,
        cursor: str | None,
        limit: int,
        extensions: dict[str, Any],
    ) -> bytes:
        params = {"after_seq": after_seq if cursor is None else None, "cursor": cursor}
        response = await self.request(
            "GET",
            _path("/v1/campaigns/{campaign_id}/events", campaign_id=campaign_id),
            params={**params, "limit": limit},
            extensions=extensions,
        )
        return response.content

    def campaigns(
        self, *, status: str | None = None, limit: int = 500
    ) -> AsyncIterator[CampaignView]:
        """Every campaign of the tenant (optionally by status), page after page."""

        async def fetch(cursor: str | None, extensions: dict[str, Any]) -> bytes:
            return await self._campaign_page(status, cursor, limit, extensions)

        return walk(fetch, CampaignPage)

    def pledges(
        self, campaign_id: str, *, status: str | None = None, limit: int = 500
    ) -> AsyncIterator[PledgeView]:
        """Every pledge of the campaign (optionally by status), page after page."""

        async def fetch(cursor: str | None, extensions: dict[str, Any]) -> bytes:
            return await self._pledge_page(campaign_id, status, cursor, limit, extensions)

        return walk(fetch, PledgePage)

    def events(
        self, campaign_id: str, *, after_seq: int = 0, limit: int = 500
    ) -> AsyncIterator[EventView]:
        """The campaign's events after ``after_seq`` up to the newest one projected."""

        async def fetch(cursor: str | None, extensions: dict[str, Any]) -> bytes:
            return await self._event_page(campaign_id, after_seq, cursor, limit, extensions)

        return walk(fetch, EventPage)

    async def ready(self) -> bool:
        """``GET /readyz``: True when the API reaches Kafka and Redis."""
        try:
            await self.request("GET", "/readyz")
        except (PledgeflowError, httpx.TransportError):
            return False
        return True
