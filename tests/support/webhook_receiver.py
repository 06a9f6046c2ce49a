"""A local webhook receiver for tests: verifies every request the Standard Webhooks way.

Each endpoint is a path ``/hook/<name>`` with its own secret. A receiver can be told to fail
its first N requests, to be down (503) until told otherwise, or to answer with a redirect.
Every request is kept with whether its signature verified. Async tests use
:func:`running_receiver`; synchronous ones :func:`receiver_in_thread`.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from services.simulate.receiver import serve_app


@dataclass
class Received:
    name: str
    webhook_id: str
    verified: bool
    status: int
    body: dict[str, Any] | None


@dataclass
class Receiver:
    """The receiver's state; ``url(name)`` is where an endpoint named ``name`` is reached."""

    base: str = ""
    secrets: dict[str, str] = field(default_factory=dict)
    fail_first: dict[str, int] = field(default_factory=dict)
    down: set[str] = field(default_factory=set)
    redirect: set[str] = field(default_factory=set)
    delay: dict[str, float] = field(default_factory=dict)
    received: list[Received] = field(default_factory=list)

    def url(self, name: str) -> str:
        return f"{self.base}/hook/{name}"

    def delivered(self, name: str) -> list[Received]:
        """Requests to ``name`` that verified and were answered 2xx."""
        return [r for r in self.received if r.name == name and r.verified and r.status < 300]

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        name = scope["path"].rsplit("/", 1)[-1]
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        secret = self.secrets.get(name)
        verified = False
        if secret is not None:
            try:
                Webhook(secret).verify(body, headers)
                verified = True
            except WebhookVerificationError:
                verified = False
        if name in self.delay:
            await asyncio.sleep(self.delay[name])
        status = 200 if verified else 400
        if verified and name in self.down:
            status = 503
        elif verified and self.fail_first.get(name, 0) > 0:
            self.fail_first[name] -= 1
            status = 500
        elif verified and name in self.redirect:
            status = 302
        self.received.append(
            Received(name, headers.get("webhook-id", ""), verified, status, _json(body))
        )
        extra = [(b"location", b"http://127.0.0.1:9/elsewhere")] if status == 302 else []
        await send({"type": "http.response.start", "status": status, "headers": extra})
        await send({"type": "http.response.body", "body": b""})


def _json(body: bytes) -> dict[str, Any] | None:
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


@contextlib.asynccontextmanager
async def running_receiver() -> AsyncIterator[Receiver]:
    """A :class:`Receiver` served by uvicorn on a free loopback port (the simulation's
    :func:`~services.simulate.receiver.serve_app`)."""
    receiver = Receiver()
    async with serve_app(receiver) as base:
        receiver.base = base
        yield receiver


@contextlib.contextmanager
def receiver_in_thread() -> Iterator[Receiver]:
    """:func:`running_receiver` on its own event loop in a thread, for synchronous tests."""
    started: queue.Queue[tuple[Receiver, asyncio.AbstractEventLoop, asyncio.Event] | BaseException]
    started = queue.Queue()

    async def serve() -> None:
        try:
            stop = asyncio.Event()
            async with running_receiver() as receiver:
                started.put((receiver, asyncio.get_running_loop(), stop))
                await stop.wait()
        except BaseException as exc:  # handed to the test's thread
            started.put(exc)

    thread = threading.Thread(target=asyncio.run, args=(serve(),), daemon=True)
    thread.start()
    got = started.get(timeout=30)
    if isinstance(got, BaseException):
        raise got
    receiver, loop, stop = got
    try:
        yield receiver
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=30)
