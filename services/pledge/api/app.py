"""The FastAPI application (the API process's composition root): adapters, routes, error
handlers, metrics middleware, lifespan.

Kept as one module: the API process's composition root - wiring only, in the order the
process starts it.

Handlers (``ingest.py``) take the raw ASGI scope and validate bodies themselves with
pydantic's JSON parser (one pass, strict, field-named errors); the request schemas are still
published in ``/openapi.json`` (``openapi.py``).
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import redis.asyncio as aioredis
from fastapi import FastAPI, Path
from fastapi.exceptions import RequestValidationError
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from redis.exceptions import ResponseError as RedisResponseError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from services.notify.api_routes import notify_router
from services.pledge.adapters.command_bus import CommandBus
from services.pledge.adapters.payment_tokens import KafkaPaymentTokens
from services.pledge.adapters.redis_decisions import RedisDecisions
from services.pledge.adapters.redis_ingest import IngestStore
from services.pledge.adapters.redis_pipeline import REDIS_UNAVAILABLE, AutoPipeline
from services.pledge.adapters.redis_readmodel import JoinedHash, Keys, ReadModelStore
from services.pledge.api.auth import ApiKeys
from services.pledge.api.config import ApiSettings, api_settings
from services.pledge.api.cursors import CursorCodec
from services.pledge.api.fastpath import FastWrites
from services.pledge.api.ingest import Ingest
from services.pledge.api.listing import add_listing_routes
from services.pledge.api.models import (
    ID_PATTERN,
    BatchRequest,
    BatchResponse,
    CampaignAccepted,
    CampaignDecided,
    CampaignView,
    CancelAccepted,
    CancelDecided,
    CancelRequest,
    CloseAccepted,
    CloseDecided,
    CloseRequest,
    LaunchRequest,
    PledgeAccepted,
    PledgeDecided,
    PledgeRequest,
    PledgeView,
)
from services.pledge.api.openapi import (
    COMMON,
    TEXT,
    WRITE,
    build_openapi,
    json_content,
    problem_content,
    request_body,
)
from services.pledge.api.ops_port import ops_port_of
from services.pledge.api.ports import IngestPorts
from services.pledge.api.problems import ProblemError, problem_body, problem_response
from services.pledge.api.responses import MetricsMiddleware, RequestMetrics, error_response
from services.pledge.metrics_api import ApiMetrics, api_metrics
from services.settlement.adapters.redis_readmodel import (
    PAYMENT_FIELDS,
    RedisSettlementReads,
    SettlementKeys,
    payment_from_fields,
)
from services.settlement.api_ports import SettlementPorts
from services.settlement.api_routes import add_settlement_routes
from services.streams.log_limits import limit_repeated_root_logs

__all__ = ["create_app"]

log = logging.getLogger("pledgeflow.api")

_CampaignId = Path(pattern=ID_PATTERN, description="Campaign id.")
_PledgeId = Path(pattern=ID_PATTERN, description="Pledge id.")


class _IngestApi(FastAPI):
    """FastAPI with a pure-ASGI front for the hot write routes (``front``, set once built).

    FastAPI's own ``__call__`` checks its OpenTelemetry providers on every request and
    Starlette's middleware stack follows; the front skips both for the two hot routes.
    """

    front: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.front is None:
            await super().__call__(scope, receive, send)
        else:
            await self.front(scope, receive, send)


#: Opens the ports for the app's lifetime (the real adapters, or fakes in unit tests).
PortsFactory = Callable[[], AbstractAsyncContextManager[IngestPorts]]


def create_app(
    settings: ApiSettings | None = None,
    *,
    registry: CollectorRegistry | None = None,
    ports: PortsFactory | None = None,
) -> FastAPI:
    """The ingest API. Adapters are started by the lifespan (uvicorn runs it; in-process
    tests enter ``app.router.lifespan_context(app)``); ``ports`` replaces the Kafka and Redis
    adapters (unit tests pass in-memory fakes)."""
    config = api_settings(settings)
    limit_repeated_root_logs()
    keys = ApiKeys.parse(config.api_keys)
    metrics = api_metrics(registry)
    metrics_registry = registry or REGISTRY
    open_ports = ports or (lambda: real_ports(config, metrics))
    state: dict[str, Ingest] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with open_ports() as opened, ops_port_of(config, metrics_registry, opened):
            state["ingest"] = Ingest(
                keys=keys,
                ports=opened,
                metrics=metrics,
                max_body_bytes=config.api_max_body_bytes,
                max_wait_seconds=config.api_max_wait_seconds,
                batch_max_items=config.api_batch_max_items,
                pending_expiry_seconds=config.api_pending_expiry_seconds,
            )
            _tune_gc()
            try:
                yield
            finally:
                state.pop("ingest", None)

    app = _IngestApi(
        title="Pledgeflow ingest API",
        version="1.0.0",
        description=(
            "Send pledges to the campaign processor. Writes answer 202 once the command is "
            "durably in Kafka (acks=all); `Prefer: wait=N` waits for the decision. Every "
            "error is RFC 9457 `application/problem+json`."
        ),
        lifespan=lifespan,
        openapi_url="/openapi.json",
        docs_url="/docs",
        redoc_url=None,
    )

    def ingest() -> Ingest:
        service = state.get("ingest")
        if service is None:
            raise ProblemError("unavailable", "starting up", headers={"Retry-After": "1"})
        return service

    # --- errors: one mapping (responses.error_response) for routes and the ASGI front ---------

    async def on_error(request: Request, exc: Exception) -> Response:
        return error_response(exc, request.method, request.url.path, request_metrics)

    async def on_validation(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        errors = []
        for item in exc.errors():
            loc = [str(p) for p in item.get("loc", ()) if p not in ("path", "query", "header")]
            errors.append({"field": ".".join(loc) or "request", "message": str(item.get("msg"))})
        fields = ", ".join(dict.fromkeys(e["field"] for e in errors))
        body = problem_body(
            "validation-error",
            detail=f"invalid field(s): {fields}",
            instance=request.url.path,
            errors=errors,
        )
        return problem_response(body)

    async def on_http(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        slug = {404: "not-found", 405: "method-not-allowed", 413: "payload-too-large"}.get(
            exc.status_code, "validation-error"
        )
        body = problem_body(
            slug, detail=str(exc.detail), instance=request.url.path, status=exc.status_code
        )
        return problem_response(body, getattr(exc, "headers", None))

    app.add_exception_handler(ProblemError, on_error)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    # Redis errors are answered here, not by the catch-all below (Starlette re-raises what
    # reaches that one): a full Redis (OOM) is a 503 on reads too, never a 500.
    for redis_error in (*REDIS_UNAVAILABLE, RedisResponseError):
        app.add_exception_handler(redis_error, on_error)
    app.add_exception_handler(Exception, on_error)
    request_metrics = RequestMetrics(metrics)
    app.add_middleware(MetricsMiddleware, metrics=request_metrics)

    # --- routes ------------------------------------------------------------------------------

    @app.post(
        "/v1/campaigns",
        summary="Launch a campaign",
        status_code=202,
        response_model=None,
        responses={
            202: json_content(CampaignAccepted, "Launch command durably in Kafka."),
            201: json_content(CampaignDecided, "Prefer: wait - the campaign is open."),
            **WRITE,
        },
        openapi_extra=request_body(LaunchRequest),
        tags=["campaigns"],
    )
    async def launch_campaign(request: Request) -> Response:
        return await ingest().launch(request.scope, request.receive)

    @app.get(
        "/v1/campaigns/{campaign_id}",
        summary="Campaign summary from the read model",
        response_model=None,
        responses={200: json_content(CampaignView, "The campaign."), **COMMON},
        tags=["campaigns"],
    )
    async def get_campaign(request: Request, campaign_id: str = _CampaignId) -> Response:
        return await ingest().get_campaign(request.scope, campaign_id)

    @app.post(
        "/v1/campaigns/{campaign_id}/pledges",
        summary="Make a pledge",
        status_code=202,
        response_model=None,
        responses={
            202: json_content(PledgeAccepted, "Pledge command durably in Kafka."),
            201: json_content(PledgeDecided, "Prefer: wait - the pledge was accepted."),
            **WRITE,
        },
        openapi_extra=request_body(PledgeRequest),
        tags=["pledges"],
    )
    async def make_pledge(request: Request, campaign_id: str = _CampaignId) -> Response:
        return await ingest().make_pledge(request.scope, request.receive, campaign_id)

    @app.post(
        "/v1/pledges/batch",
        summary="Make up to 1,000 pledges, answered per item",
        status_code=202,
        response_model=None,
        responses={202: json_content(BatchResponse, "Per-item results."), **WRITE},
        openapi_extra=request_body(BatchRequest),
        tags=["pledges"],
    )
    async def batch_pledges(request: Request) -> Response:
        return await ingest().batch(request.scope, request.receive)

    @app.get(
        "/v1/campaigns/{campaign_id}/pledges/{pledge_id}",
        summary="Pledge status (and why it was refused)",
        response_model=None,
        responses={200: json_content(PledgeView, "The pledge."), **COMMON},
        tags=["pledges"],
    )
    async def get_pledge(
        request: Request, campaign_id: str = _CampaignId, pledge_id: str = _PledgeId
    ) -> Response:
        return await ingest().get_pledge(request.scope, campaign_id, pledge_id)

    add_listing_routes(app, ingest, CursorCodec(config.cursor_key()), _CampaignId)
    add_settlement_routes(app, ingest, _CampaignId, _PledgeId)  # services/settlement/api_routes

    @app.post(
        "/v1/campaigns/{campaign_id}/pledges/{pledge_id}/cancel",
        summary="Cancel a pledge",
        status_code=202,
        response_model=None,
        responses={
            202: json_content(CancelAccepted, "Cancel command durably in Kafka."),
            200: json_content(CancelDecided, "Prefer: wait - the pledge is cancelled."),
            **WRITE,
        },
        openapi_extra=request_body(CancelRequest, required=False),
        tags=["pledges"],
    )
    async def cancel_pledge(
        request: Request, campaign_id: str = _CampaignId, pledge_id: str = _PledgeId
    ) -> Response:
        return await ingest().cancel(request.scope, request.receive, campaign_id, pledge_id)

    @app.post(
        "/v1/campaigns/{campaign_id}/close",
        summary="Close a campaign early (creator cancel, platform suspension)",
        status_code=202,
        response_model=None,
        responses={
            202: json_content(CloseAccepted, "Close command durably in Kafka."),
            200: json_content(CloseDecided, "Prefer: wait - the campaign is closed."),
            **WRITE,
        },
        openapi_extra=request_body(CloseRequest),
        tags=["campaigns"],
    )
    async def close_campaign(request: Request, campaign_id: str = _CampaignId) -> Response:
        return await ingest().close(request.scope, request.receive, campaign_id)

    @app.get(
        "/healthz",
        summary="Liveness",
        tags=["ops"],
        response_model=None,
        responses={200: {"description": "alive"}},
    )
    async def healthz() -> Response:
        return Response(b'{"status":"ok"}', media_type="application/json")

    @app.get(
        "/readyz",
        summary="Readiness: Kafka and Redis reachable",
        tags=["ops"],
        response_model=None,
        responses={200: {"description": "ready"}, 503: problem_content("not ready")},
    )
    async def readyz() -> Response:
        if config.metrics_port:  # served on the ops port only (ops_port.py)
            raise ProblemError("not-found", "no such resource")
        service = state.get("ingest")
        if service is None:
            raise ProblemError("unavailable", "starting up", headers={"Retry-After": "1"})
        kafka_ok, redis_ok = await asyncio.gather(
            service.ports.bus.ready(), service.ports.gate.ready()
        )
        if not (kafka_ok and redis_ok):
            down = [name for name, ok in (("kafka", kafka_ok), ("redis", redis_ok)) if not ok]
            raise ProblemError(
                "unavailable", "not reachable: " + ", ".join(down), headers={"Retry-After": "1"}
            )
        return Response(b'{"kafka":"ok","redis":"ok"}', media_type="application/json")

    @app.get(
        "/metrics",
        summary="Prometheus metrics",
        tags=["ops"],
        response_model=None,
        responses={200: TEXT},
    )
    async def prometheus() -> Response:
        if config.metrics_port:  # served on the ops port only (ops_port.py)
            raise ProblemError("not-found", "no such resource")
        return Response(generate_latest(metrics_registry), media_type=CONTENT_TYPE_LATEST)

    app.include_router(notify_router(config, keys))  # webhook endpoints, contacts (notify)
    app.openapi = lambda: build_openapi(app)  # type: ignore[method-assign]

    # The hot write routes are answered in front of FastAPI (see fastpath.py); their routes
    # above stay as the documentation and serve what the front passes on.
    app.front = FastWrites(
        lambda scope, receive, send: FastAPI.__call__(app, scope, receive, send),
        lambda: state.get("ingest"),
        request_metrics,
    )
    return app


#: Generation-0 threshold of the cyclic GC once the API has started. A batch request
#: allocates some 10,000 short-lived, mostly acyclic objects; with the default 700 it ran
#: a dozen young collections per batch.
GC_GEN0_THRESHOLD = 50_000


def _tune_gc() -> None:
    """Freeze what start-up loaded and collect young objects less often.

    FastAPI, pydantic and the OpenAPI models leave several hundred thousand long-lived
    objects; every full collection rescanned them (about 60 ms each on the dev box, paused
    requests included: a large part of the p99). ``gc.freeze`` moves them out of the
    collector's sight; garbage made before it is collected first.
    """
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(max(GC_GEN0_THRESHOLD, gc.get_threshold()[0]), gen1, gen2)


@asynccontextmanager
async def real_ports(settings: ApiSettings, metrics: ApiMetrics) -> AsyncIterator[IngestPorts]:
    """The Kafka and Redis adapters, started, for the app's lifetime."""
    topics = settings.topics()
    rm_keys = Keys(settings.topic_prefix)
    client = aioredis.Redis.from_url(settings.redis_url, max_connections=64)
    pipeline = AutoPipeline(client)
    bus = CommandBus(
        settings.kafka_bootstrap,
        topics.commands,
        flush_interval_ms=settings.api_produce_interval_ms,
        on_produce=metrics.produce_latency.labels("command").observe,
        send_timeout_s=settings.api_send_timeout_seconds,
        record_topics=[topics.payment_tokens],
    )
    store = IngestStore(
        pipeline,
        rm_keys,
        rate_per_second=settings.api_rate_per_second,
        burst=settings.api_rate_burst,
        lock_seconds=settings.api_idempotency_lock_seconds,
        ttl_seconds=settings.api_idempotency_ttl_seconds,
    )
    # The tokens share the command bus: one producer, one flusher, shared produce requests.
    tokens = KafkaPaymentTokens(settings.kafka_bootstrap, topics.payment_tokens, bus=bus)
    settlement_bus = CommandBus(
        settings.kafka_bootstrap,
        topics.settlement_commands,
        flush_interval_ms=settings.api_produce_interval_ms,
        on_produce=metrics.produce_latency.labels("settlement_command").observe,
        send_timeout_s=settings.api_send_timeout_seconds,
    )
    settlement_keys = SettlementKeys(settings.topic_prefix)
    await store.load_scripts()
    await bus.start()
    await settlement_bus.start()
    try:
        yield IngestPorts(
            bus=bus,
            gate=store,
            decisions=RedisDecisions(pipeline, rm_keys),
            # A listing page reads each pledge's payment record in its own script.
            reads=ReadModelStore(
                client,
                rm_keys,
                payments=JoinedHash(settlement_keys.pledge, PAYMENT_FIELDS, payment_from_fields),
            ),
            tokens=tokens,
            settlement=SettlementPorts(
                commands=settlement_bus,
                reads=RedisSettlementReads(client, settlement_keys),
            ),
        )
    finally:
        await settlement_bus.stop()
        await bus.stop()
        await pipeline.aclose()
        await client.aclose()
