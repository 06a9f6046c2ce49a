"""The endpoints: one small handler each, between HTTP and the ports. The API never decides
a pledge.

Kept as one module: one small handler per endpoint, side by side, so the endpoints read
as one table of the same pipeline.

Every write is the same pipeline (see :mod:`~services.pledge.api.pipeline`): authenticate ->
read body -> gate -> append command -> answer -> store. The handlers take the raw ASGI
``scope`` and ``receive`` whoever serves the route (the ASGI front for the two hot routes,
FastAPI for the others), so there is one path per endpoint.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TypeVar, cast

import orjson
from pydantic import ValidationError
from starlette.responses import Response
from starlette.types import Receive, Scope

from schemas.commands import (
    CancelPledge,
    CloseCampaign,
    LaunchCampaign,
    MakePledgeTemplate,
    encode_command,
)
from schemas.money import FeeSchedule
from schemas.tenancy import pledge_key, qualified_fields, qualify
from services.pledge.api.auth import ApiKeys, Principal, anonymous_bucket
from services.pledge.api.batch import (
    batch_items,
    check_items,
    not_found_result,
    payload_text,
    pending_result,
)
from services.pledge.api.command_ids import batch_command_ids, issued_at
from services.pledge.api.models import CancelRequest, CloseRequest, LaunchRequest, PledgeRequest
from services.pledge.api.pipeline import WritePipeline
from services.pledge.api.ports import IngestPorts, ReadModelReader
from services.pledge.api.problems import ProblemError, validation_problem
from services.pledge.api.reading import (
    HeaderMap,
    Write,
    begin_write,
    header,
    header_map,
    plain_pledge_body,
    read_body,
)
from services.pledge.api.responses import (
    RawResponse,
    json_response,
    raw_headers,
    stored_response,
)
from services.pledge.api.views import (
    WITH_PAYMENT,
    campaign_etag,
    conditional,
    pledge_etag,
    pledge_view,
    pledge_visible,
    visible_campaign,
)
from services.pledge.metrics_api import ApiMetrics
from services.pledge.projection import pending_pledge_row
from services.settlement.api_models import PENDING_PAYMENT

__all__ = ["BATCH_ROUTE", "LAUNCH_ROUTE", "PLEDGE_ROUTE", "Ingest"]

LAUNCH_ROUTE = "/v1/campaigns"
PLEDGE_ROUTE = "/v1/campaigns/{campaign_id}/pledges"
BATCH_ROUTE = "/v1/pledges/batch"
CANCEL_ROUTE = "/v1/campaigns/{campaign_id}/pledges/{pledge_id}/cancel"
CLOSE_ROUTE = "/v1/campaigns/{campaign_id}/close"

B = TypeVar("B")


class Ingest:
    """The endpoints' behaviour; one per app, holding the ports."""

    def __init__(
        self,
        *,
        keys: ApiKeys,
        ports: IngestPorts,
        metrics: ApiMetrics,
        max_body_bytes: int,
        max_wait_seconds: int,
        batch_max_items: int,
        pending_expiry_seconds: int = 3600,
    ) -> None:
        self.keys = keys
        self.ports = ports
        self.reads: ReadModelReader = ports.reads
        self.metrics = metrics
        self.pipeline = WritePipeline(
            bus=ports.bus,
            gate=ports.gate,
            decisions=ports.decisions,
            metrics=metrics,
            tokens=ports.tokens,
        )
        #: Payment tokens go to their erasable store, never into commands and events.
        self.tokens_out = ports.tokens is not None
        self.max_body_bytes = max_body_bytes
        self.max_wait_seconds = max_wait_seconds
        self.batch_max_items = batch_max_items
        self.pending_expiry_ms = pending_expiry_seconds * 1000

    async def authenticate(self, scope: Scope, headers: HeaderMap) -> Principal:
        """The caller, or 401; a refused caller pays a token of its address's bucket (429
        once empty), so guessing keys is rate-limited like everything else."""
        try:
            return self.keys.authenticate(header(headers, b"authorization"))
        except ProblemError:
            client = scope.get("client")
            address = client[0] if client else "unknown"
            await self.pipeline.charge_key(anonymous_bucket(address), "unauthenticated")
            raise

    # --- writes ------------------------------------------------------------------------------

    async def open_write(
        self,
        scope: Scope,
        receive: Receive,
        route: str,
        parse: Callable[[bytes], B],
        pipeline_of: Callable[[], WritePipeline] | None = None,
    ) -> tuple[Principal, B, Write]:
        """The opening of a write (all but the inlined pledge route): the caller, its body
        parsed by ``parse`` (a pydantic error -> 422) and the write begun; a refusal in the
        body steps pays a token. ``pipeline_of`` (default: this one) is asked after
        authenticating."""
        headers = header_map(scope)
        principal = await self.authenticate(scope, headers)
        pipeline = self.pipeline if pipeline_of is None else pipeline_of()
        async with pipeline.refusals_charged(principal, route):
            raw = await read_body(headers, receive, self.max_body_bytes)
            try:
                body = parse(raw)
            except ValidationError as exc:
                raise validation_problem(exc) from None
            write = begin_write(scope, headers, principal, raw, route, self.max_wait_seconds)
        return principal, body, write

    async def make_pledge(self, scope: Scope, receive: Receive, campaign_id: str) -> Response:
        """``POST /v1/campaigns/{campaign_id}/pledges``: the launch-day route.

        The body is checked as a plain dict first (pydantic names the faults of one it does
        not accept); the command and the 202 body come from text templates and the response
        carries its header list ready-made. ``campaign_id`` has been checked by the router.
        """
        headers = header_map(scope)
        principal = await self.authenticate(scope, headers)
        pipeline = self.pipeline
        tenant_id = principal.tenant_id
        qualified = qualify(tenant_id, campaign_id)
        # pipeline.refusals_charged, inlined: an async context manager per request is a
        # measurable share of this route's CPU.
        try:
            raw = await read_body(headers, receive, self.max_body_bytes)
            fields = plain_pledge_body(raw, campaign_id)
            if fields is None:
                try:
                    body = PledgeRequest.model_validate_json(raw)
                except ValidationError as exc:
                    raise validation_problem(exc) from None
                fields = (
                    campaign_id,
                    body.backer_id,
                    body.amount_minor,
                    body.currency,
                    body.pledge_id,
                    body.tier_id,
                    body.payment_token,
                    body.locale,
                )
            write = begin_write(scope, headers, principal, raw, PLEDGE_ROUTE, self.max_wait_seconds)
        except ProblemError:
            await pipeline.charge(principal, PLEDGE_ROUTE)
            raise
        gate = await pipeline.gate(write, [qualified])
        if gate.outcome == "replay":
            return stored_response(gate.stored)
        pledge_id = fields[4] or f"p-{write.command_id}"
        template = MakePledgeTemplate(
            tenant_id=tenant_id,
            correlation_id=write.correlation_id,
            fingerprint=write.fingerprint,
            issued_at=issued_at(),
        )
        # The token and the command share one Kafka round trip: the token is staged (appended,
        # not awaited), the command appended and awaited, then the token's acknowledgement
        # (appended again within the request if that round lost it; docs/security.md).
        tokens: list[tuple[str, str]] = []
        if self.tokens_out and fields[6] is not None:
            tokens.append((pledge_key(qualified, pledge_id), fields[6]))
        staged = await pipeline.stage_tokens(write, tokens)
        command_fields = qualified_fields(fields, tenant_id, self.tokens_out)
        await pipeline.send(
            write, qualified, template.command(command_fields, write.command_id, pledge_id), staged
        )
        if staged is not None:
            await pipeline.tokens_stored(write, staged, tokens)
        extra: list[tuple[bytes, bytes]]
        if write.wait <= 0:  # the usual answer, written as orjson would
            status = 202
            status_url = f"/v1/campaigns/{campaign_id}/pledges/{pledge_id}"
            payload = (
                f'{{"pledge_id":"{pledge_id}","campaign_id":"{campaign_id}"'
                f',"status":"pending","status_url":"{status_url}"}}'
            ).encode()
            extra = [(b"location", status_url.encode())]
        else:
            answer_headers: dict[str, str] = {}
            status, payload = await pipeline.pledge_answer(
                write, campaign_id, pledge_id, 201, "accepted", answer_headers, location=True
            )
            extra = [(k.lower().encode(), v.encode()) for k, v in answer_headers.items()]
        row = pending_pledge_row(
            pledge_id=pledge_id,
            campaign_id=qualified,
            backer_id=fields[1],
            amount_minor=fields[2],
            currency=fields[3],
            tier_id=fields[5],
            tenant_id=tenant_id,
        )
        pipeline.store(write, status, payload, [(qualified, pledge_id, orjson.dumps(row))])
        return RawResponse(status, payload, raw_headers(status, payload, extra))

    async def launch(self, scope: Scope, receive: Receive) -> Response:
        """``POST /v1/campaigns``."""
        principal, body, write = await self.open_write(
            scope, receive, LAUNCH_ROUTE, LaunchRequest.model_validate_json
        )
        pipeline = self.pipeline
        async with pipeline.refusals_charged(principal, LAUNCH_ROUTE):  # the command's fields
            campaign_id = body.campaign_id or f"c-{write.command_id}"
            qualified = qualify(principal.tenant_id, campaign_id)
            fields = body.model_dump(exclude={"campaign_id"})
            if fields["fee_schedule"] is None:
                fields["fee_schedule"] = FeeSchedule.kickstarter_default(body.goal.currency)
            try:
                command = LaunchCampaign(
                    command_id=write.command_id,
                    tenant_id=principal.tenant_id,
                    correlation_id=write.correlation_id,
                    fingerprint=write.fingerprint,
                    issued_at=datetime.now(UTC),
                    campaign_id=qualified,
                    **fields,
                )
            except ValidationError as exc:
                raise validation_problem(exc) from None
        gate = await pipeline.gate(write, [qualified], launch=True)
        if gate.outcome == "replay":
            return stored_response(gate.stored)
        await pipeline.send(write, qualified, encode_command(command))
        answer_headers: dict[str, str] = {}
        status, payload = await pipeline.answer(
            write,
            lambda d: (201, {"campaign_id": campaign_id, "status": "open", "seq": d["seq"]}),
            {"campaign_id": campaign_id},
            f"/v1/campaigns/{campaign_id}",
            answer_headers,
            location=True,
        )
        pipeline.store(write, status, payload)
        return json_response(status, payload, answer_headers)

    async def cancel(
        self, scope: Scope, receive: Receive, campaign_id: str, pledge_id: str
    ) -> Response:
        """``POST /v1/campaigns/{campaign_id}/pledges/{pledge_id}/cancel`` (body optional)."""
        principal, body, write = await self.open_write(
            scope,
            receive,
            CANCEL_ROUTE,
            lambda raw: CancelRequest.model_validate_json(raw) if raw.strip() else CancelRequest(),
        )
        pipeline = self.pipeline
        qualified = qualify(principal.tenant_id, campaign_id)
        gate = await pipeline.gate(write, [qualified])
        if gate.outcome == "replay":
            return stored_response(gate.stored)
        command = CancelPledge(
            command_id=write.command_id,
            tenant_id=principal.tenant_id,
            correlation_id=write.correlation_id,
            fingerprint=write.fingerprint,
            issued_at=datetime.now(UTC),
            campaign_id=qualified,
            pledge_id=pledge_id,
            reason=body.reason,
        )
        await pipeline.send(write, qualified, encode_command(command))
        answer_headers: dict[str, str] = {}
        status, payload = await pipeline.pledge_answer(
            write, campaign_id, pledge_id, 200, "cancelled", answer_headers, location=False
        )
        pipeline.store(write, status, payload)
        return json_response(status, payload, answer_headers)

    async def close(self, scope: Scope, receive: Receive, campaign_id: str) -> Response:
        """``POST /v1/campaigns/{campaign_id}/close``."""
        principal, body, write = await self.open_write(
            scope, receive, CLOSE_ROUTE, CloseRequest.model_validate_json
        )
        pipeline = self.pipeline
        qualified = qualify(principal.tenant_id, campaign_id)
        gate = await pipeline.gate(write, [qualified])
        if gate.outcome == "replay":
            return stored_response(gate.stored)
        command = CloseCampaign(
            command_id=write.command_id,
            tenant_id=principal.tenant_id,
            correlation_id=write.correlation_id,
            fingerprint=write.fingerprint,
            issued_at=datetime.now(UTC),
            campaign_id=qualified,
            reason=body.reason,
        )
        await pipeline.send(write, qualified, encode_command(command))
        answer_headers: dict[str, str] = {}
        status, payload = await pipeline.answer(
            write,
            lambda d: (
                200,
                {
                    "campaign_id": campaign_id,
                    "status": "closed",
                    "outcome": d.get("close_outcome"),
                    "seq": d["seq"],
                },
            ),
            {"campaign_id": campaign_id},
            f"/v1/campaigns/{campaign_id}",
            answer_headers,
            location=False,
        )
        pipeline.store(write, status, payload)
        return json_response(status, payload, answer_headers)

    async def batch(self, scope: Scope, receive: Receive) -> Response:
        """``POST /v1/pledges/batch``: up to ``batch_max_items`` pledges; each item is
        validated, owned-checked and sent on its own (one command each, so never
        half-applied) and answered in ``results``."""
        principal, items, write = await self.open_write(
            scope, receive, BATCH_ROUTE, lambda raw: batch_items(raw, self.batch_max_items)
        )
        pipeline = self.pipeline
        tenant_id = principal.tenant_id
        #: per item: its result (JSON text), or None while it is to be sent
        results: list[str | None] = [None] * len(items)
        valid, invalid = check_items(items, results)
        campaigns = list(dict.fromkeys([fields[0] for _, fields in valid]))
        # One token per item (valid or not): a batch costs what its items sent alone would.
        gate = await pipeline.gate(
            write,
            [qualify(tenant_id, c) for c in campaigns],
            many=True,
            cost=max(1, len(items)),
        )
        if gate.outcome == "replay":
            return stored_response(gate.stored)
        not_found = 0
        if gate.foreign:
            foreign_campaigns = {campaigns[i] for i in gate.foreign}
            kept = []
            for index, fields in valid:
                if fields[0] in foreign_campaigns:
                    not_found += 1
                    results[index] = not_found_result(index, fields[0])
                else:
                    kept.append((index, fields))
            valid = kept
        template = MakePledgeTemplate(
            tenant_id=principal.tenant_id,
            correlation_id=write.correlation_id,
            fingerprint=write.fingerprint,
            issued_at=issued_at(),
        )
        command = template.command
        command_ids = batch_command_ids(
            principal.tenant_id, write.idempotency_key, [index for index, _ in valid]
        )
        commands: list[tuple[str, bytes]] = []
        tokens: list[tuple[str, str]] = []
        for (index, fields), command_id in zip(valid, command_ids, strict=True):
            campaign_id = fields[0]
            pledge_id = fields[4] or f"p-{command_id}"
            sent = qualified_fields(fields, tenant_id, self.tokens_out)
            if self.tokens_out and fields[6] is not None:
                tokens.append((pledge_key(sent[0], pledge_id), fields[6]))
            commands.append((sent[0], command(sent, command_id, pledge_id)))
            results[index] = pending_result(index, campaign_id, pledge_id)
        # Tokens and commands in one Kafka round trip, as on the single-pledge route.
        staged = await pipeline.stage_tokens(write, tokens)
        if commands:
            await pipeline.send_all(write, commands, staged)
        if staged is not None:
            await pipeline.tokens_stored(write, staged, tokens)
        counts = self.metrics.batch_items
        counts.labels("pending").inc(len(commands))
        if invalid:
            counts.labels("invalid").inc(invalid)
        if not_found:
            counts.labels("not_found").inc(not_found)
        payload = payload_text(cast(list[str], results), len(commands))
        pipeline.store(write, 202, payload)
        return json_response(202, payload)

    # --- reads -------------------------------------------------------------------------------

    async def get_campaign(self, scope: Scope, campaign_id: str) -> Response:
        """``GET /v1/campaigns/{campaign_id}``: the tenant's own campaign, read under its
        qualified id and only shown when the stored document says it is that campaign; the
        ``ETag`` is its seq (``If-None-Match`` -> 304)."""
        headers = header_map(scope)
        principal = await self.authenticate(scope, headers)
        await self.pipeline.charge(principal, "/v1/campaigns/{campaign_id}")
        qualified = qualify(principal.tenant_id, campaign_id)
        row = await self.reads.campaign(qualified)
        doc = visible_campaign(row, principal.tenant_id, qualified)
        if row is None or doc is None:
            raise ProblemError("not-found", "no such campaign (or not projected yet)")
        return conditional(headers, orjson.dumps(doc), campaign_etag(row.seq))

    async def get_pledge(self, scope: Scope, campaign_id: str, pledge_id: str) -> Response:
        """``GET /v1/campaigns/{campaign_id}/pledges/{pledge_id}`` (``ETag`` / 304)."""
        headers = header_map(scope)
        principal = await self.authenticate(scope, headers)
        await self.pipeline.charge(principal, "/v1/campaigns/{campaign_id}/pledges/{pledge_id}")
        qualified = qualify(principal.tenant_id, campaign_id)
        row = await self.reads.pledge(qualified, pledge_id)
        # The stored document must be this very (tenant, campaign, pledge): a key that some
        # other layout or writer let collide is never shown.
        if row is None or not pledge_visible(row, principal.tenant_id, qualified, pledge_id):
            raise ProblemError("not-found", "no such pledge")
        expire_before_ms = time.time() * 1000 - self.pending_expiry_ms
        view = pledge_view(row, expire_before_ms)
        settlement = self.ports.settlement
        if settlement is not None and row.status in WITH_PAYMENT:
            # Where its money stands (services/settlement/projection.py); nothing recorded
            # yet: pending (authorized, or being charged).
            payment = await settlement.reads.payment(qualified, pledge_id)
            view["payment"] = payment or PENDING_PAYMENT
        body = orjson.dumps(view)
        return conditional(headers, body, pledge_etag(body))
