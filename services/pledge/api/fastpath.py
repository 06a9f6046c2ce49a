"""The hot write routes served at the ASGI level, in front of FastAPI's stack.

``POST /v1/campaigns/{campaign_id}/pledges`` and ``POST /v1/pledges/batch`` carry the launch-day
load. Through FastAPI each request also crosses its per-request OpenTelemetry provider check,
its error, telemetry and body-limit middleware, the exception middleware, an exit stack, the
router and dependency solving: about as much CPU as the request's own work (Pledgeflow's
metrics are Prometheus, recorded here with the same names and labels; FastAPI's native
OpenTelemetry spans, off unless an OTel SDK is configured, do not cover these two routes).

:class:`FastWrites` answers these two routes itself with the very same
:class:`~services.pledge.api.ingest.Ingest` code (so auth, idempotency, rate limit, the problem
documents and the Kafka append are unchanged) and passes every other request - including a
pledge path whose campaign id is malformed, which FastAPI answers with its 422 - to the FastAPI
app, whose routes still document both operations in ``/openapi.json``.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from typing import Any

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from services.pledge.adapters.redis_pipeline import REDIS_UNAVAILABLE
from services.pledge.api.ingest import Ingest
from services.pledge.api.models import ID_PATTERN
from services.pledge.api.problems import (
    ProblemError,
    problem_body,
    problem_response,
    redis_unavailable,
)
from services.pledge.metrics_api import ApiMetrics

__all__ = ["BATCH_ROUTE", "PLEDGE_ROUTE", "FastWrites"]

log = logging.getLogger("pledgeflow.api")

PLEDGE_ROUTE = "/v1/campaigns/{campaign_id}/pledges"
BATCH_ROUTE = "/v1/pledges/batch"
_PREFIX = "/v1/campaigns/"
_SUFFIX = "/pledges"
_ID = re.compile(ID_PATTERN)


class _MappedHeaders(Headers):
    """Request headers looked up in a dict built once (Starlette scans the header list on
    every lookup; a write looks up six). The first occurrence of a name wins, as there."""

    def __init__(self, scope: Scope) -> None:
        super().__init__(scope=scope)
        self._map: dict[str, str] = {
            name.decode("latin-1"): value.decode("latin-1")
            for name, value in reversed(scope["headers"])
        }

    def __getitem__(self, key: str) -> str:
        return self._map[key.lower()]

    def get(self, key: str, default: Any = None) -> Any:
        return self._map.get(key.lower(), default)


class _Request(Request):
    @property
    def headers(self) -> Headers:
        headers: Headers | None = getattr(self, "_mapped_headers", None)
        if headers is None:
            headers = self._mapped_headers = _MappedHeaders(self.scope)
        return headers


class FastWrites:
    """ASGI front: the two hot POST routes directly, everything else to ``app``."""

    def __init__(
        self, app: ASGIApp, ingest: Callable[[], Ingest | None], metrics: ApiMetrics
    ) -> None:
        self.app = app
        self._ingest = ingest
        self._requests: dict[tuple[str, int], Any] = {}
        self._metrics = metrics
        self._latency = {
            route: metrics.latency.labels(route, "POST") for route in (PLEDGE_ROUTE, BATCH_ROUTE)
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        campaign_id = ""
        if path == BATCH_ROUTE:
            route = BATCH_ROUTE
        elif (
            path.startswith(_PREFIX)
            and path.endswith(_SUFFIX)
            and _ID.fullmatch(campaign_id := path[len(_PREFIX) : -len(_SUFFIX)]) is not None
        ):
            route = PLEDGE_ROUTE
        else:
            await self.app(scope, receive, send)
            return
        ingest = self._ingest()
        if ingest is None:  # not started: FastAPI answers (503 problem)
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        try:
            if route is PLEDGE_ROUTE:
                response = await ingest.make_pledge_asgi(scope, receive, campaign_id, path)
            else:
                response = await ingest.batch(_Request(scope, receive), path=path)
        except ProblemError as exc:
            response = problem_response(exc.body(path), exc.headers)
        except REDIS_UNAVAILABLE as exc:
            log.warning("Redis unavailable on POST %s: %r", path, exc)
            response = redis_unavailable(path)
        except Exception:
            log.exception("unexpected error on POST %s", path)
            response = problem_response(problem_body("internal-error", instance=path))
        await response(scope, receive, send)
        status = response.status_code
        counter = self._requests.get((route, status))
        if counter is None:
            counter = self._requests[(route, status)] = self._metrics.requests.labels(
                route, "POST", str(status)
            )
        counter.inc()
        self._latency[route].observe(time.perf_counter() - started)
