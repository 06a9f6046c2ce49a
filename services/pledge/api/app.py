"""The FastAPI application: routes, error handlers, metrics middleware, OpenAPI, lifespan.

Handlers take the raw :class:`~starlette.requests.Request` and validate bodies themselves with
pydantic's JSON parser (one pass, strict, field-named errors); the request schemas are still
published in ``/openapi.json``.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import redis.asyncio as aioredis
from fastapi import FastAPI, Path
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from schemas.topics import Topics
from services.pledge.adapters.command_bus import CommandBus
from services.pledge.adapters.redis_ingest import IngestStore
from services.pledge.adapters.redis_pipeline import REDIS_UNAVAILABLE, AutoPipeline
from services.pledge.adapters.redis_readmodel import Keys, ReadModelStore
from services.pledge.api.auth import ApiKeys
from services.pledge.api.fastpath import FastWrites
from services.pledge.api.ingest import Ingest
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
    Problem,
    json_schema_of,
)
from services.pledge.api.problems import (
    PROBLEM_MEDIA_TYPE,
    ProblemError,
    problem_body,
    problem_response,
    redis_unavailable,
)
from services.pledge.config import PledgeSettings
from services.pledge.metrics_api import ApiMetrics, api_metrics

__all__ = ["create_app"]

log = logging.getLogger("pledgeflow.api")

_CampaignId = Path(pattern=ID_PATTERN, description="Campaign id.")
_PledgeId = Path(pattern=ID_PATTERN, description="Pledge id.")

_SCHEMA_MODELS: tuple[type[BaseModel], ...] = (
    LaunchRequest,
    PledgeRequest,
    BatchRequest,
    CancelRequest,
    CloseRequest,
    Problem,
)

_HEADERS = [
    {
        "name": "Idempotency-Key",
        "in": "header",
        "required": True,
        "description": "Unique per operation (1-255 visible ASCII). A retry with the same key "
        "and body gets the first response; another body with the same key gets 422. "
        "Kept 24 h.",
        "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[!-~]+$"},
    },
    {
        "name": "Prefer",
        "in": "header",
        "required": False,
        "description": "`wait=N` (N <= 10): wait up to N s for the processor's decision; "
        "201/200 when accepted, 409 when refused, 202 when N elapsed first.",
        "schema": {"type": "string", "pattern": "^wait=(10|[0-9])$"},
    },
]


def _problem(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}},
    }


def _ref(model: type[BaseModel]) -> str:
    return f"#/components/schemas/{model.__name__}"


def _json(model: type[BaseModel], description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {
            "application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}
        },
    }


_TEXT = {
    "description": "text exposition",
    "content": {"text/plain": {"schema": {"type": "string"}}},
}
_COMMON: dict[int | str, dict[str, Any]] = {
    401: _problem("Missing or unknown API key."),
    404: _problem("No such campaign or pledge for this tenant."),
    422: _problem("Invalid field(s), named in `errors`."),
    429: _problem("Rate limit of the API key exceeded (see Retry-After)."),
    500: _problem("Unexpected server error."),
    503: _problem("Kafka or Redis unavailable; retry."),
}
_WRITE: dict[int | str, dict[str, Any]] = {
    **_COMMON,
    400: _problem("Missing or malformed Idempotency-Key."),
    409: _problem("Refused by the processor (`reason`), or same Idempotency-Key in progress."),
    413: _problem("Body larger than 1 MiB."),
    415: _problem("Body is not application/json."),
}


def _body(model: type[BaseModel], required: bool = True) -> dict[str, Any]:
    return {
        "parameters": _HEADERS,
        "requestBody": {
            "required": required,
            "content": {"application/json": {"schema": {"$ref": _ref(model)}}},
        },
    }


class MetricsMiddleware:
    """Counts and times every HTTP request by route template (pure ASGI: cheap)."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics
        self._children: dict[tuple[str, str, int], Any] = {}
        self._timers: dict[tuple[str, str], Any] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", "unmatched")
            method = scope["method"]
            key = (path, method, status)
            counter = self._children.get(key)
            if counter is None:
                counter = self._children[key] = self.metrics.requests.labels(
                    path, method, str(status)
                )
            counter.inc()
            timer = self._timers.get((path, method))
            if timer is None:
                timer = self._timers[(path, method)] = self.metrics.latency.labels(path, method)
            timer.observe(time.perf_counter() - started)


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


def create_app(
    settings: PledgeSettings | None = None, *, registry: CollectorRegistry | None = None
) -> FastAPI:
    """The ingest API. Adapters are started by the lifespan (uvicorn runs it; in-process
    tests enter ``app.router.lifespan_context(app)``)."""
    settings = settings or PledgeSettings()
    keys = ApiKeys.parse(settings.api_keys)
    metrics = api_metrics(registry)
    metrics_registry = registry or REGISTRY
    topics = Topics(prefix=settings.topic_prefix, partitions=settings.partitions)
    rm_keys = Keys(settings.topic_prefix)
    state: dict[str, Ingest] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        client = aioredis.Redis.from_url(settings.redis_url, max_connections=64)
        pipeline = AutoPipeline(client)
        bus = CommandBus(
            settings.kafka_bootstrap,
            topics.commands,
            flush_interval_ms=settings.api_produce_interval_ms,
            on_produce=metrics.produce_latency.labels("command").observe,
        )
        store = IngestStore(
            pipeline,
            rm_keys,
            rate_per_second=settings.api_rate_per_second,
            burst=settings.api_rate_burst,
            lock_seconds=settings.api_idempotency_lock_seconds,
            ttl_seconds=settings.api_idempotency_ttl_seconds,
        )
        readmodel = ReadModelStore(client, rm_keys)
        await store.load_scripts()
        await bus.start()
        state["ingest"] = Ingest(
            keys=keys,
            bus=bus,
            store=store,
            readmodel=readmodel,
            metrics=metrics,
            max_body_bytes=settings.api_max_body_bytes,
            max_wait_seconds=settings.api_max_wait_seconds,
            batch_max_items=settings.api_batch_max_items,
        )
        _tune_gc()
        try:
            yield
        finally:
            state.pop("ingest", None)
            await bus.stop()
            await pipeline.aclose()
            await client.aclose()

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
            raise ProblemError("unavailable", "starting up")
        return service

    # --- errors ------------------------------------------------------------------------------

    async def on_problem(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ProblemError)
        return problem_response(exc.body(request.url.path), exc.headers)

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

    async def on_redis(request: Request, exc: Exception) -> Response:
        log.warning("Redis unavailable on %s %s: %r", request.method, request.url.path, exc)
        return redis_unavailable(request.url.path)

    async def on_error(request: Request, exc: Exception) -> Response:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return problem_response(problem_body("internal-error", instance=request.url.path))

    app.add_exception_handler(ProblemError, on_problem)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    for redis_error in REDIS_UNAVAILABLE:
        app.add_exception_handler(redis_error, on_redis)
    app.add_exception_handler(Exception, on_error)
    app.add_middleware(MetricsMiddleware, metrics=metrics)

    # --- routes ------------------------------------------------------------------------------

    @app.post(
        "/v1/campaigns",
        summary="Launch a campaign",
        status_code=202,
        response_model=None,
        responses={
            202: _json(CampaignAccepted, "Launch command durably in Kafka."),
            201: _json(CampaignDecided, "Prefer: wait - the campaign is open."),
            **_WRITE,
        },
        openapi_extra=_body(LaunchRequest),
        tags=["campaigns"],
    )
    async def launch_campaign(request: Request) -> Response:
        return await ingest().launch(request)

    @app.get(
        "/v1/campaigns/{campaign_id}",
        summary="Campaign summary from the read model",
        response_model=None,
        responses={200: _json(CampaignView, "The campaign."), **_COMMON},
        tags=["campaigns"],
    )
    async def get_campaign(request: Request, campaign_id: str = _CampaignId) -> Response:
        return await ingest().get_campaign(request, campaign_id)

    @app.post(
        "/v1/campaigns/{campaign_id}/pledges",
        summary="Make a pledge",
        status_code=202,
        response_model=None,
        responses={
            202: _json(PledgeAccepted, "Pledge command durably in Kafka."),
            201: _json(PledgeDecided, "Prefer: wait - the pledge was accepted."),
            **_WRITE,
        },
        openapi_extra=_body(PledgeRequest),
        tags=["pledges"],
    )
    async def make_pledge(request: Request, campaign_id: str = _CampaignId) -> Response:
        return await ingest().make_pledge(request, campaign_id)

    @app.post(
        "/v1/pledges/batch",
        summary="Make up to 1,000 pledges, answered per item",
        status_code=202,
        response_model=None,
        responses={202: _json(BatchResponse, "Per-item results."), **_WRITE},
        openapi_extra=_body(BatchRequest),
        tags=["pledges"],
    )
    async def batch_pledges(request: Request) -> Response:
        return await ingest().batch(request)

    @app.get(
        "/v1/campaigns/{campaign_id}/pledges/{pledge_id}",
        summary="Pledge status (and why it was refused)",
        response_model=None,
        responses={200: _json(PledgeView, "The pledge."), **_COMMON},
        tags=["pledges"],
    )
    async def get_pledge(
        request: Request, campaign_id: str = _CampaignId, pledge_id: str = _PledgeId
    ) -> Response:
        return await ingest().get_pledge(request, campaign_id, pledge_id)

    @app.post(
        "/v1/campaigns/{campaign_id}/pledges/{pledge_id}/cancel",
        summary="Cancel a pledge",
        status_code=202,
        response_model=None,
        responses={
            202: _json(CancelAccepted, "Cancel command durably in Kafka."),
            200: _json(CancelDecided, "Prefer: wait - the pledge is cancelled."),
            **_WRITE,
        },
        openapi_extra=_body(CancelRequest, required=False),
        tags=["pledges"],
    )
    async def cancel_pledge(
        request: Request, campaign_id: str = _CampaignId, pledge_id: str = _PledgeId
    ) -> Response:
        return await ingest().cancel(request, campaign_id, pledge_id)

    @app.post(
        "/v1/campaigns/{campaign_id}/close",
        summary="Close a campaign early (creator cancel, platform suspension)",
        status_code=202,
        response_model=None,
        responses={
            202: _json(CloseAccepted, "Close command durably in Kafka."),
            200: _json(CloseDecided, "Prefer: wait - the campaign is closed."),
            **_WRITE,
        },
        openapi_extra=_body(CloseRequest),
        tags=["campaigns"],
    )
    async def close_campaign(request: Request, campaign_id: str = _CampaignId) -> Response:
        return await ingest().close(request, campaign_id)

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
        responses={200: {"description": "ready"}, 503: _problem("not ready")},
    )
    async def readyz() -> Response:
        service = state.get("ingest")
        if service is None:
            raise ProblemError("unavailable", "starting up")
        kafka_ok, redis_ok = await asyncio.gather(service.bus.ready(), _redis_ok(service))
        if not (kafka_ok and redis_ok):
            down = [name for name, ok in (("kafka", kafka_ok), ("redis", redis_ok)) if not ok]
            raise ProblemError("unavailable", "not reachable: " + ", ".join(down))
        return Response(b'{"kafka":"ok","redis":"ok"}', media_type="application/json")

    @app.get(
        "/metrics",
        summary="Prometheus metrics",
        tags=["ops"],
        response_model=None,
        responses={200: _TEXT},
    )
    async def prometheus() -> Response:
        return Response(generate_latest(metrics_registry), media_type=CONTENT_TYPE_LATEST)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        components = schema.setdefault("components", {})
        schemas = components.setdefault("schemas", {})
        models: tuple[type[BaseModel], ...] = (
            *_SCHEMA_MODELS,
            CampaignAccepted,
            CampaignDecided,
            PledgeAccepted,
            PledgeDecided,
            CancelAccepted,
            CancelDecided,
            CloseAccepted,
            CloseDecided,
            BatchResponse,
            CampaignView,
            PledgeView,
        )
        for model in models:
            model_schema = json_schema_of(model)
            schemas.update(model_schema.pop("$defs", {}))
            schemas[model.__name__] = model_schema
        components["securitySchemes"] = {
            "bearerAuth": {"type": "http", "scheme": "bearer", "description": "API key"}
        }
        for path, operations in schema["paths"].items():
            if path.startswith("/v1/"):
                for operation in operations.values():
                    operation["security"] = [{"bearerAuth": []}]
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]

    # The hot write routes are answered in front of FastAPI (see fastpath.py); their routes
    # above stay as the documentation and serve what the front passes on.
    app.front = FastWrites(
        lambda scope, receive, send: FastAPI.__call__(app, scope, receive, send),
        lambda: state.get("ingest"),
        metrics,
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


async def _redis_ok(service: Ingest) -> bool:
    try:
        return bool(await asyncio.wait_for(service.readmodel.client.ping(), 2.0))
    except Exception:
        return False
