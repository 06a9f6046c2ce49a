"""The API's notify routes: webhook endpoints and contact details, per tenant (API key).

An ``APIRouter`` with its own lifespan (a Kafka producer and a Redis client), so the API app
includes it with one line: ``app.include_router(notify_router(settings, keys))``. Errors are
the app's RFC 9457 problems (``ProblemError``; request validation is the app's handler).
"""

# No ``from __future__ import annotations``: FastAPI must see the route signatures' types,
# which refer to dependencies defined inside ``notify_router``.
import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal, TypeVar

import redis.asyncio as aioredis
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from fastapi import APIRouter, Depends, Header, Request, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field
from pydantic_settings import BaseSettings

from schemas.topics import Topics
from services.notify.adapters.registration_store import KafkaRegistrationLog, RedisEndpointView
from services.notify.config import NotifySettings
from services.notify.domain import WEBHOOK_EVENT_TYPES, WebhookEndpoint
from services.notify.registrations import (
    EndpointLimitReached,
    InvalidRegistration,
    Registrations,
)
from services.pledge.api.auth import ApiKeys, Principal
from services.pledge.api.openapi import COMMON, problem_content
from services.pledge.api.problems import ProblemError, refusal
from services.pledge.api.reading import header_map, read_body
from services.pledge.api.reading import idempotency_key as read_idempotency_key
from services.streams.kafka_security import kafka_client_kwargs

__all__ = ["notify_router"]

T = TypeVar("T")


class EndpointIn(BaseModel):
    """``POST /v1/webhook-endpoints``."""

    model_config = ConfigDict(extra="forbid")

    url: Annotated[str, Field(min_length=1, max_length=2000)]
    # Documented as the known types (the check itself is Registrations', which names them).
    event_types: Annotated[
        list[str],
        Field(
            min_length=1,
            max_length=50,
            json_schema_extra={"items": {"type": "string", "enum": list(WEBHOOK_EVENT_TYPES)}},
        ),
    ]


class EndpointOut(BaseModel):
    """An endpoint as listed (the secret is shown only at creation and rotation)."""

    id: str
    url: str
    event_types: list[str]


class EndpointCreated(EndpointOut):
    secret: str


class SecretRotated(BaseModel):
    id: str
    secret: str


class ContactIn(BaseModel):
    """``PUT /v1/backers/{id}`` and ``/v1/creators/{id}``."""

    model_config = ConfigDict(extra="forbid")

    email: Annotated[str, Field(min_length=3, max_length=254)]
    locale: Annotated[str, Field(min_length=2, max_length=35)] | None = None


class ContactOut(BaseModel):
    id: str
    email: str
    locale: str | None


def _bounded_route(max_bytes: int) -> type[APIRoute]:
    """A route class whose request body is read as every other write's is (``read_body``:
    JSON media types only, 415; at most ``max_bytes``, 413, counted while it arrives) before
    FastAPI parses it, instead of FastAPI buffering any body whole."""

    class ReadRequest(Request):
        def __init__(self, request: Request, body: bytes) -> None:
            super().__init__(request.scope, request.receive)
            self._read = body

        async def body(self) -> bytes:
            return self._read

    class BoundedRoute(APIRoute):
        def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
            handler = super().get_route_handler()

            async def bounded(request: Request) -> Response:
                if request.method in ("POST", "PUT", "PATCH"):
                    body = await read_body(header_map(request.scope), request.receive, max_bytes)
                    request = ReadRequest(request, body)
                return await handler(request)

            return bounded

    return BoundedRoute


def _out(endpoint: WebhookEndpoint) -> dict[str, Any]:
    return {
        "id": endpoint.endpoint_id,
        "url": endpoint.url,
        "event_types": sorted(endpoint.event_types),
    }


#: Takes a request's token from its key's rate-limit bucket (the app's, shared with every
#: route), raising the 429 problem when it is empty: ``charge(principal, route)``.
Charge = Callable[[Principal, str], Awaitable[None]]


def notify_router(settings: BaseSettings, keys: ApiKeys, charge: Charge | None = None) -> APIRouter:
    """The routes, bound to one deployment's topics and Redis (see the module docstring).
    ``settings`` is any of the services' settings (the notify fields are read from it or the
    environment). Kafka and Redis are connected on the first request, so an app that never
    serves these routes (unit tests with in-memory ports) never connects. With ``charge``
    every request pays one token of its key's bucket, as reads and writes elsewhere do."""
    notify = NotifySettings.model_validate(settings.model_dump())
    topics = Topics(prefix=notify.topic_prefix, partitions=notify.partitions)
    state: dict[str, Any] = {}
    opening = asyncio.Lock()

    async def open_service() -> Registrations:
        async with opening:
            if "svc" not in state:
                client = aioredis.Redis.from_url(notify.redis_url)
                producer = AIOKafkaProducer(
                    bootstrap_servers=notify.kafka_bootstrap,
                    **kafka_client_kwargs(),
                    acks="all",
                    enable_idempotence=True,
                    request_timeout_ms=10_000,
                )
                try:
                    await producer.start()
                except Exception:
                    await client.aclose()
                    raise
                state.update(client=client, producer=producer)
                state["svc"] = Registrations(
                    KafkaRegistrationLog(producer),
                    RedisEndpointView(client, prefix=notify.topic_prefix),
                    topics,
                    allow_private=notify.notify_allow_private_urls,
                    max_endpoints=notify.notify_max_endpoints_per_tenant,
                )
            svc: Registrations = state["svc"]
            return svc

    @asynccontextmanager
    async def lifespan(_: Any) -> AsyncIterator[None]:
        try:
            yield
        finally:
            if "producer" in state:
                await state["producer"].stop()
                await state["client"].aclose()
            state.clear()

    max_body = int(getattr(settings, "api_max_body_bytes", 1024 * 1024))
    router = APIRouter(
        prefix="/v1",
        route_class=_bounded_route(max_body),
        tags=["notifications"],
        lifespan=lifespan,
        responses={
            **COMMON,
            400: problem_content("The body is not valid JSON."),
            404: problem_content("No such webhook endpoint for this tenant."),
        },
    )

    async def tenant(
        request: Request, authorization: Annotated[str | None, Header()] = None
    ) -> str:
        principal = keys.authenticate(authorization)
        if charge is not None:
            route = request.scope.get("route")
            await charge(principal, getattr(route, "path", request.url.path))
        return principal.tenant_id

    async def service() -> Registrations:
        try:
            return await open_service()
        except (KafkaError, OSError) as exc:
            raise ProblemError("unavailable", f"Kafka unreachable: {exc}") from None

    Tenant = Annotated[str, Depends(tenant)]
    Service = Annotated[Registrations, Depends(service)]

    async def recorded(call: Awaitable[T]) -> T:
        """A registration call; Kafka unreachable (or a missing topic) is a 503, not a 500."""
        try:
            return await call
        except KafkaError as exc:
            raise ProblemError("unavailable", f"Kafka unreachable: {exc}") from None

    def invalid(exc: InvalidRegistration) -> ProblemError:
        return ProblemError(
            "validation-error",
            f"invalid field(s): {exc.field}",
            errors=[{"field": exc.field, "message": exc.message}],
        )

    @router.post(
        "/webhook-endpoints",
        status_code=201,
        response_model=EndpointCreated,
        responses={
            409: problem_content(
                "Refused, `reason` `endpoint_limit_reached`: the tenant holds "
                "PLEDGEFLOW_NOTIFY_MAX_ENDPOINTS_PER_TENANT endpoints already."
            )
        },
    )
    async def create_endpoint(
        body: EndpointIn,
        tenant_id: Tenant,
        svc: Service,
        idempotency_key: Annotated[
            str | None,
            Header(
                alias="Idempotency-Key",
                description="Optional here; read as on every write (1-255 visible ASCII).",
            ),
        ] = None,
    ) -> Any:
        """Register a webhook endpoint; the signing secret is in this answer only. With an
        ``Idempotency-Key`` a retried request answers the endpoint it created."""
        key = None if idempotency_key is None else read_idempotency_key(idempotency_key)
        try:
            endpoint = await recorded(
                svc.create_endpoint(tenant_id, body.url, body.event_types, key)
            )
        except InvalidRegistration as exc:
            raise invalid(exc) from None
        except EndpointLimitReached as exc:
            raise refusal("endpoint_limit_reached", str(exc)) from None
        return {**_out(endpoint), "secret": endpoint.secret}

    @router.get("/webhook-endpoints", response_model=dict[str, list[EndpointOut]])
    async def list_endpoints(tenant_id: Tenant, svc: Service) -> Any:
        return {"items": [_out(e) for e in await recorded(svc.list_endpoints(tenant_id))]}

    @router.get("/webhook-endpoints/{endpoint_id}", response_model=EndpointOut)
    async def get_endpoint(endpoint_id: str, tenant_id: Tenant, svc: Service) -> Any:
        endpoint = await recorded(svc.get_endpoint(tenant_id, endpoint_id))
        if endpoint is None:
            raise ProblemError("not-found", f"no webhook endpoint {endpoint_id!r}")
        return _out(endpoint)

    @router.delete("/webhook-endpoints/{endpoint_id}", status_code=204)
    async def delete_endpoint(endpoint_id: str, tenant_id: Tenant, svc: Service) -> Response:
        if not await recorded(svc.delete_endpoint(tenant_id, endpoint_id)):
            raise ProblemError("not-found", f"no webhook endpoint {endpoint_id!r}")
        return Response(status_code=204)

    @router.post("/webhook-endpoints/{endpoint_id}/rotate-secret", response_model=SecretRotated)
    async def rotate_secret(endpoint_id: str, tenant_id: Tenant, svc: Service) -> Any:
        """A new secret; deliveries are signed with the new and the previous one until the
        next rotation, so a receiver can switch without losing a message."""
        rotated = await recorded(svc.rotate_secret(tenant_id, endpoint_id))
        if rotated is None:
            raise ProblemError("not-found", f"no webhook endpoint {endpoint_id!r}")
        return {"id": rotated.endpoint_id, "secret": rotated.secret}

    def contact_routes(kind: Literal["backer", "creator"], path: str) -> None:
        async def put_contact(
            person_id: str, body: ContactIn, tenant_id: Tenant, svc: Service
        ) -> Any:
            try:
                contact = await recorded(
                    svc.put_contact(tenant_id, kind, person_id, body.email, body.locale)
                )
            except InvalidRegistration as exc:
                raise invalid(exc) from None
            return {"id": person_id, "email": contact.email, "locale": contact.locale}

        async def erase_contact(person_id: str, tenant_id: Tenant, svc: Service) -> Response:
            try:
                await recorded(svc.erase_contact(tenant_id, kind, person_id))
            except InvalidRegistration as exc:
                raise invalid(exc) from None
            return Response(status_code=204)

        router.add_api_route(
            f"/{path}/{{person_id}}",
            put_contact,
            methods=["PUT"],
            response_model=ContactOut,
            summary=f"Register the {kind}'s e-mail address and locale",
        )
        router.add_api_route(
            f"/{path}/{{person_id}}",
            erase_contact,
            methods=["DELETE"],
            status_code=204,
            summary=f"Erase the {kind}'s contact details (later messages are skipped)",
        )

    contact_routes("backer", "backers")
    contact_routes("creator", "creators")
    return router
