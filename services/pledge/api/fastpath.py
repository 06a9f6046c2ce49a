"""The hot write routes served at the ASGI level, in front of FastAPI's stack.

``POST /v1/campaigns/{campaign_id}/pledges`` and ``POST /v1/pledges/batch`` carry the launch-day
load. Through FastAPI each request also crosses its per-request OpenTelemetry provider check,
its error, telemetry and body-limit middleware, the exception middleware, an exit stack, the
router and dependency solving: about as much CPU as the request's own work (Pledgeflow's
metrics are Prometheus, recorded here with the same names and labels; FastAPI's native
OpenTelemetry spans, off unless an OTel SDK is configured, do not cover these two routes).

:class:`FastWrites` calls the very same handlers as the FastAPI routes
(:class:`~services.pledge.api.ingest.Ingest` takes the ASGI scope either way) and answers
errors and records metrics through the same :func:`~services.pledge.api.responses.error_response`
and :class:`~services.pledge.api.responses.RequestMetrics`. Every other request - including a
pledge path whose campaign id is malformed, which FastAPI answers with its 422 - goes on to the
FastAPI app, whose routes still document both operations in ``/openapi.json``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable

from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from services.pledge.api.ingest import BATCH_ROUTE, PLEDGE_ROUTE, Ingest
from services.pledge.api.models import ID_PATTERN
from services.pledge.api.responses import RequestMetrics, error_response

__all__ = ["BATCH_ROUTE", "PLEDGE_ROUTE", "FastWrites"]

_PREFIX = "/v1/campaigns/"
_SUFFIX = "/pledges"
_ID = re.compile(ID_PATTERN)


class FastWrites:
    """ASGI front: the two hot POST routes directly, everything else to ``app``."""

    def __init__(
        self, app: ASGIApp, ingest: Callable[[], Ingest | None], metrics: RequestMetrics
    ) -> None:
        self.app = app
        self._ingest = ingest
        self._metrics = metrics

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
        response: Response
        try:
            if route is PLEDGE_ROUTE:
                response = await ingest.make_pledge(scope, receive, campaign_id)
            else:
                response = await ingest.batch(scope, receive)
        except Exception as exc:
            response = error_response(exc, "POST", path, self._metrics)
        await response(scope, receive, send)
        self._metrics.observe(route, "POST", response.status_code, time.perf_counter() - started)
