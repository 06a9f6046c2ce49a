"""Answers of the API: response objects, the one error mapping and the one request metric.

Every request - served by the ASGI front or by a FastAPI route - ends here: an exception
becomes its answer through :func:`error_response` (a :class:`ProblemError` its problem
document, an unreachable Redis a 503, anything else a logged 500), and its status and time
are recorded through :class:`RequestMetrics` under the route template.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from redis.exceptions import ResponseError as RedisResponseError
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.pledge.adapters.redis_pipeline import REDIS_UNAVAILABLE
from services.pledge.api.problems import (
    PROBLEM_MEDIA_TYPE,
    ProblemError,
    problem_body,
    problem_response,
    redis_unavailable,
)
from services.pledge.metrics_api import ApiMetrics

__all__ = [
    "JSON",
    "MetricsMiddleware",
    "RawResponse",
    "RequestMetrics",
    "error_response",
    "json_response",
    "raw_headers",
    "stored_response",
]

log = logging.getLogger("pledgeflow.api")

JSON = "application/json"
_JSON_BYTES = b"application/json"
_PROBLEM_BYTES = PROBLEM_MEDIA_TYPE.encode()


class RawResponse(Response):
    """A response whose header list the caller built (no header mapping to re-encode)."""

    def __init__(self, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
        self.status_code = status
        self.body = body
        self.raw_headers = headers
        self.background = None


def raw_headers(
    status: int, body: bytes, extra: list[tuple[bytes, bytes]]
) -> list[tuple[bytes, bytes]]:
    """The header list Starlette's ``Response`` would send: extra headers, length, type."""
    media = _PROBLEM_BYTES if status >= 400 else _JSON_BYTES
    return [*extra, (b"content-length", b"%d" % len(body)), (b"content-type", media)]


def json_response(
    status: int, payload: bytes, headers: Mapping[str, str] | None = None
) -> Response:
    """A write's answer: JSON, or a problem document from 400 on."""
    return Response(
        payload,
        status_code=status,
        media_type=PROBLEM_MEDIA_TYPE if status >= 400 else JSON,
        headers=dict(headers or {}),
    )


def stored_response(stored: bytes) -> Response:
    """The answer replayed to a retry: the stored status and body, marked as a replay."""
    status = int(stored[:3])
    return Response(
        stored[3:],
        status_code=status,
        media_type=PROBLEM_MEDIA_TYPE if status >= 400 else JSON,
        headers={"Idempotent-Replayed": "true"},
    )


def error_response(
    exc: Exception, method: str, path: str, metrics: RequestMetrics | None = None
) -> Response:
    """The answer to a request that raised ``exc`` (never a bare 500 without a problem).

    Redis at its ``maxmemory`` (policy ``noeviction``: idempotency and read-model keys are
    never evicted silently) refuses writes with an ``OOM`` error: that is a 503 like an
    unreachable Redis, counted so that an alert fires."""
    if isinstance(exc, ProblemError):
        return problem_response(exc.body(path), exc.headers)
    if isinstance(exc, RedisResponseError) and str(exc).startswith(
        ("OOM ", "command not allowed when used memory")
    ):
        log.warning("Redis out of memory on %s %s: %r", method, path, exc)
        if metrics is not None:
            metrics.out_of_memory()
        return redis_unavailable(path)
    if isinstance(exc, REDIS_UNAVAILABLE):
        log.warning("Redis unavailable on %s %s: %r", method, path, exc)
        return redis_unavailable(path)
    log.exception("unexpected error on %s %s", method, path, exc_info=exc)
    return problem_response(problem_body("internal-error", instance=path))


class RequestMetrics:
    """``pledgeflow_api_requests_total`` and the request duration histogram, with the
    labelled children cached (looking a child up by labels costs more than counting)."""

    def __init__(self, metrics: ApiMetrics) -> None:
        self._metrics = metrics
        self._counters: dict[tuple[str, str, int], Any] = {}
        self._timers: dict[tuple[str, str], Any] = {}

    def out_of_memory(self) -> None:
        """Count a request refused because Redis is at its ``maxmemory``."""
        self._metrics.redis_out_of_memory.inc()

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        """Count one answered request and record how long it took."""
        counter = self._counters.get((route, method, status))
        if counter is None:
            counter = self._counters[(route, method, status)] = self._metrics.requests.labels(
                route, method, str(status)
            )
        counter.inc()
        timer = self._timers.get((route, method))
        if timer is None:
            timer = self._timers[(route, method)] = self._metrics.latency.labels(route, method)
        timer.observe(seconds)


class MetricsMiddleware:
    """Counts and times every HTTP request FastAPI serves, by route template (pure ASGI:
    cheap), through the same :class:`RequestMetrics` as the ASGI front."""

    def __init__(self, app: ASGIApp, metrics: RequestMetrics) -> None:
        self.app = app
        self.metrics = metrics

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
            self.metrics.observe(path, scope["method"], status, time.perf_counter() - started)
