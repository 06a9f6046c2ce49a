"""An ASGI wrapper that answers 503 in place of the app, to test clients' retries."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import httpx
from starlette.applications import Starlette
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.client import PledgeflowClient, RetryPolicy

__all__ = ["Flaky", "client_through_flaky"]

_UNAVAILABLE = (
    b'{"type":"https://pledgeflow.dev/problems/unavailable","title":"A dependency is '
    b'unavailable; retry later","status":503}'
)


@dataclass
class Flaky:
    """Answers 503 instead of the app: ``before`` the app sees the request, or ``after`` it
    handled it (its answer is dropped), per request in order; records the Idempotency-Keys."""

    app: ASGIApp
    plan: list[str] = field(default_factory=list)
    keys: list[str | None] = field(default_factory=list)
    retry_after: str = "0"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        key = headers.get(b"idempotency-key")
        self.keys.append(key.decode() if key else None)
        step = self.plan.pop(0) if self.plan else "pass"
        if step == "after":

            async def drop(message: Message) -> None:
                return None

            await self.app(scope, receive, drop)
        if step in ("before", "after"):
            await send(
                {
                    "type": "http.response.start",
                    "status": 503,
                    "headers": [
                        (b"content-type", b"application/problem+json"),
                        (b"retry-after", self.retry_after.encode()),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": _UNAVAILABLE})
            return
        await self.app(scope, receive, send)


@asynccontextmanager
async def client_through_flaky(
    app: Starlette, key: str, *, attempts: int = 5, slept: list[float] | None = None
) -> AsyncIterator[tuple[Flaky, PledgeflowClient]]:
    """The typed client with ``key``, talking to ``app`` (its lifespan running) through a
    :class:`Flaky` in process; it retries up to ``attempts`` times without waiting, the waits
    it asked for appended to ``slept``."""
    flaky = Flaky(app)

    async def sleep(seconds: float) -> None:
        if slept is not None:
            slept.append(seconds)

    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=flaky)
        async with PledgeflowClient(
            "http://api",
            key,
            transport=transport,
            sleep=sleep,
            retry=RetryPolicy(attempts=attempts),
        ) as client:
            yield flaky, client
