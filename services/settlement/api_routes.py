"""The API's settlement routes: the settlement read model, and the commands the settlement
worker decides (payment-method fix, refund, coproduction revenue report).

Every write is the API's write pipeline (:class:`~services.pledge.api.pipeline.WritePipeline`)
over the settlement ports: authenticate -> body -> gate (rate limit, the tenant's own campaign
or 404, Idempotency-Key) -> append to ``settlement-commands`` -> answer (``Prefer: wait``: the
worker's decision from the settlement read model) -> store for replays. A new payment token
goes to the erasable payment-token store before the command is sent; the command and its event
only say that the method changed.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson
from fastapi import FastAPI
from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response

from schemas.settlement_commands import (
    RefundPledge,
    ReportRevenue,
    UpdatePaymentMethod,
    encode_settlement_command,
)
from schemas.tenancy import pledge_key, qualify
from services.pledge.api.ingest import Ingest
from services.pledge.api.openapi import COMMON, WRITE, json_content, request_body
from services.pledge.api.pipeline import WritePipeline
from services.pledge.api.problems import ProblemError, refusal
from services.pledge.api.reading import header_map
from services.pledge.api.responses import json_response, stored_response
from services.pledge.api.views import conditional, pledge_etag, visible_campaign
from services.settlement.api_models import (
    PaymentMethodRequest,
    RefundBody,
    RevenueBody,
    SettlementCommandAccepted,
    SettlementCommandDecided,
    SettlementView,
)
from services.settlement.api_ports import SettlementPorts
from services.settlement.projection import settlement_view

__all__ = [
    "PAYMENT_METHOD_ROUTE",
    "REFUND_ROUTE",
    "REVENUE_ROUTE",
    "SETTLEMENT_ROUTE",
    "SettlementRoutes",
    "add_settlement_routes",
]

SETTLEMENT_ROUTE = "/v1/campaigns/{campaign_id}/settlement"
PAYMENT_METHOD_ROUTE = "/v1/campaigns/{campaign_id}/pledges/{pledge_id}/payment-method"
REFUND_ROUTE = "/v1/campaigns/{campaign_id}/pledges/{pledge_id}/refund"
REVENUE_ROUTE = "/v1/campaigns/{campaign_id}/revenue"

_SettlementCommand = UpdatePaymentMethod | RefundPledge | ReportRevenue


class SettlementRoutes:
    """The handlers, over the ingest service (keys, gate, reads) and its settlement ports."""

    def __init__(self, ingest: Callable[[], Ingest]) -> None:
        self._ingest = ingest
        self._pipelines: dict[int, WritePipeline] = {}

    def _ports(self, ingest: Ingest) -> SettlementPorts:
        ports = ingest.ports.settlement
        if ports is None:
            raise ProblemError("unavailable", "settlement is not configured")
        return ports

    def _pipeline(self, ingest: Ingest) -> WritePipeline:
        pipeline = self._pipelines.get(id(ingest))
        if pipeline is None:
            ports = self._ports(ingest)
            pipeline = WritePipeline(
                bus=ports.commands,
                gate=ingest.ports.gate,
                decisions=ports.reads,
                metrics=ingest.metrics,
                tokens=ingest.ports.tokens,
            )
            self._pipelines = {id(ingest): pipeline}
        return pipeline

    async def get_settlement(self, request: Request, campaign_id: str) -> Response:
        """``GET /v1/campaigns/{campaign_id}/settlement``."""
        ingest = self._ingest()
        headers = header_map(request.scope)
        principal = await ingest.authenticate(request.scope, headers)
        await ingest.pipeline.charge(principal, SETTLEMENT_ROUTE)
        qualified = qualify(principal.tenant_id, campaign_id)
        row = await ingest.reads.campaign(qualified)
        doc = visible_campaign(row, principal.tenant_id, qualified)
        if doc is None:
            raise ProblemError("not-found", "no such campaign (or not projected yet)")
        reads = self._ports(ingest).reads
        summary = await reads.summary(qualified)
        if summary is None and not await reads.whole():
            raise ProblemError(
                "unavailable",
                "the settlement read model is being rebuilt; retry shortly",
                headers={"Retry-After": "1"},
            )
        goal = doc.get("goal")
        currency = goal.get("currency") if isinstance(goal, dict) else None
        body = settlement_view(
            campaign_id,
            summary,
            campaign_closed=doc.get("status") == "closed",
            campaign_outcome=doc.get("outcome"),
            campaign_currency=currency if isinstance(currency, str) else "",
        )
        # Its ETag is a digest of the body (it changes with the campaign's close as well as
        # with the settlement's seq): If-None-Match answers 304 while nothing changed.
        payload = orjson.dumps(body)
        return conditional(headers, payload, pledge_etag(payload))

    async def payment_method(self, request: Request, campaign_id: str, pledge_id: str) -> Response:
        """``POST .../pledges/{pledge_id}/payment-method``."""

        def build(fields: dict[str, Any], body: BaseModel) -> _SettlementCommand:
            return UpdatePaymentMethod(**fields, pledge_id=pledge_id)

        return await self._write(
            request, campaign_id, pledge_id, PAYMENT_METHOD_ROUTE, PaymentMethodRequest, build
        )

    async def refund(self, request: Request, campaign_id: str, pledge_id: str) -> Response:
        """``POST .../pledges/{pledge_id}/refund``."""

        def build(fields: dict[str, Any], body: BaseModel) -> _SettlementCommand:
            assert isinstance(body, RefundBody)
            return RefundPledge(
                **fields,
                pledge_id=pledge_id,
                amount_minor=body.amount_minor,
                reason=body.reason,
                requested_by=fields["tenant_id"],
            )

        return await self._write(request, campaign_id, pledge_id, REFUND_ROUTE, RefundBody, build)

    async def revenue(self, request: Request, campaign_id: str) -> Response:
        """``POST /v1/campaigns/{campaign_id}/revenue``."""

        def build(fields: dict[str, Any], body: BaseModel) -> _SettlementCommand:
            assert isinstance(body, RevenueBody)
            return ReportRevenue(
                **fields, period=body.period, amount_minor=body.amount_minor, currency=body.currency
            )

        return await self._write(request, campaign_id, None, REVENUE_ROUTE, RevenueBody, build)

    async def _not_fixable(
        self, ingest: Ingest, qualified: str, pledge_id: str
    ) -> ProblemError | None:
        """Why a pledge's payment method may not be replaced now (only a failed capture's
        may: a new token must never redirect a capture that has not failed), or None."""
        record = await self._ports(ingest).reads.payment(qualified, pledge_id)
        if record is not None and record.get("status") == "capture_failed":
            return None
        status = "nothing settled yet" if record is None else record.get("status")
        return refusal("payment_not_failed", f"pledge {pledge_id!r} is {status}: nothing to fix")

    async def _write(
        self,
        request: Request,
        campaign_id: str,
        pledge_id: str | None,
        route: str,
        model: type[BaseModel],
        build: Callable[[dict[str, Any], BaseModel], _SettlementCommand],
    ) -> Response:
        ingest = self._ingest()
        principal, body, write = await ingest.open_write(
            request.scope,
            request.receive,
            route,
            lambda raw: model.model_validate_json(raw or b"{}"),
            lambda: self._pipeline(ingest),
        )
        pipeline = self._pipeline(ingest)
        qualified = qualify(principal.tenant_id, campaign_id)
        gate = await pipeline.gate(write, [qualified])
        if gate.outcome == "replay":
            return stored_response(gate.stored)
        fields: dict[str, Any] = {
            "command_id": write.command_id,
            "tenant_id": principal.tenant_id,
            "correlation_id": write.correlation_id,
            "issued_at": datetime.now(UTC),
            "campaign_id": qualified,
        }
        command = build(fields, body)
        if isinstance(body, PaymentMethodRequest) and pledge_id is not None:
            refused = await self._not_fixable(ingest, qualified, pledge_id)
            if refused is not None:  # refused before the token is stored: kept for replays
                payload = orjson.dumps(refused.body(request.url.path))
                pipeline.store(write, refused.status, payload)
                return json_response(refused.status, payload)
            token = (pledge_key(qualified, pledge_id), body.payment_token)
            await pipeline.put_tokens(write, [token])
        await pipeline.send(write, qualified, encode_settlement_command(command))
        ids: dict[str, Any] = {"campaign_id": campaign_id}
        if pledge_id is not None:
            ids["pledge_id"] = pledge_id
        status_url = (
            f"/v1/campaigns/{campaign_id}/pledges/{pledge_id}"
            if pledge_id is not None
            else f"/v1/campaigns/{campaign_id}/settlement"
        )
        answer_headers: dict[str, str] = {}
        status, payload = await pipeline.answer(
            write,
            lambda d: (
                200,
                {**ids, "status": "accepted", "event_type": d["event_type"], "seq": d["seq"]},
            ),
            ids,
            status_url,
            answer_headers,
            location=False,
        )
        pipeline.store(write, status, payload)
        return json_response(status, payload, answer_headers)


def _write_responses(description: str) -> dict[int | str, dict[str, Any]]:
    return {
        202: json_content(SettlementCommandAccepted, "Command durably in settlement-commands."),
        200: json_content(SettlementCommandDecided, description),
        **WRITE,
    }


def add_settlement_routes(
    app: FastAPI, ingest: Callable[[], Ingest], campaign_param: Any, pledge_param: Any
) -> SettlementRoutes:
    """Register the settlement routes on the API app."""
    routes = SettlementRoutes(ingest)

    @app.get(
        SETTLEMENT_ROUTE,
        summary="A campaign's settlement: status, money and ledger balances",
        response_model=None,
        responses={200: json_content(SettlementView, "The settlement."), **COMMON},
        tags=["settlement"],
    )
    async def get_settlement(request: Request, campaign_id: str = campaign_param) -> Response:
        return await routes.get_settlement(request, campaign_id)

    @app.post(
        PAYMENT_METHOD_ROUTE,
        summary="Fix the payment method of a pledge whose capture failed",
        status_code=202,
        response_model=None,
        responses=_write_responses("Prefer: wait - the new method is recorded."),
        openapi_extra=request_body(PaymentMethodRequest),
        tags=["settlement"],
    )
    async def fix_payment_method(
        request: Request, campaign_id: str = campaign_param, pledge_id: str = pledge_param
    ) -> Response:
        return await routes.payment_method(request, campaign_id, pledge_id)

    @app.post(
        REFUND_ROUTE,
        summary="Refund a captured pledge, in full or in part",
        status_code=202,
        response_model=None,
        responses=_write_responses("Prefer: wait - the refund is requested."),
        openapi_extra=request_body(RefundBody, required=False),
        tags=["settlement"],
    )
    async def refund_pledge(
        request: Request, campaign_id: str = campaign_param, pledge_id: str = pledge_param
    ) -> Response:
        return await routes.refund(request, campaign_id, pledge_id)

    @app.post(
        REVENUE_ROUTE,
        summary="Report a coproduction campaign's revenue for a period",
        status_code=202,
        response_model=None,
        responses=_write_responses("Prefer: wait - the backers' shares are recorded."),
        openapi_extra=request_body(RevenueBody),
        tags=["settlement"],
    )
    async def report_revenue(request: Request, campaign_id: str = campaign_param) -> Response:
        return await routes.revenue(request, campaign_id)

    return routes
