"""A platform's webhook receiver on loopback: what the simulation registers, and the benches'
sink (``bench/webhook_sink.py`` runs this app as its own process).

``POST /hook/<name>[/<delay_ms>]``. When a secret is known for ``<name>`` the request is
verified the Standard Webhooks way (the ``standardwebhooks`` package: ``webhook-id``,
``webhook-timestamp``, ``webhook-signature``) and answered 400 when it does not verify; with
no secret known it is accepted unverified (the benches measure the dispatcher, not the
receiver). ``delay_ms`` holds the answer back (a network and receiver latency stand-in).
Deliveries are de-duplicated by ``webhook-id``, as Standard Webhooks asks of receivers, and
counted per campaign (``data.campaign_id`` of the body).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import IO, Any

import orjson
import uvicorn
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

__all__ = ["WebhookReceiver", "serve_app", "serve_receiver"]


@dataclass
class WebhookReceiver:
    """The receiver's state and its ASGI app (the instance is the app)."""

    base: str = ""
    secrets: dict[str, str] = field(default_factory=dict)
    #: ``webhook-id`` of every verified delivery (a repeat is counted in ``repeats``).
    verified_ids: set[str] = field(default_factory=set)
    repeats: int = 0
    #: Requests whose signature did not verify (``webhook-id`` or ``?``), in arrival order.
    unverified: list[str] = field(default_factory=list)
    #: Unsigned deliveries to endpoints without a secret (the benches' mode).
    accepted_unsigned: int = 0
    by_campaign: Counter[str] = field(default_factory=Counter)
    by_type: Counter[str] = field(default_factory=Counter)
    #: When set, each request's arrival (``time.time()``) and body are appended, one line each
    #: (``<seconds> <body>``): the end-to-end bench measures latency against another process's
    #: clock reading.
    arrivals: IO[bytes] | None = None

    def url(self, name: str) -> str:
        return f"{self.base}/hook/{name}"

    @property
    def delivered(self) -> int:
        """Distinct verified deliveries."""
        return len(self.verified_ids)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        parts = scope["path"].strip("/").split("/")
        name = parts[1] if len(parts) > 1 else ""
        delay_ms = int(parts[2]) if len(parts) > 2 and parts[2].isdigit() else 0
        if self.arrivals is not None:
            self.arrivals.write(b"%.6f %s\n" % (time.time(), body.replace(b"\n", b" ")))
            self.arrivals.flush()
        status = self._receive(name, body, scope["headers"])
        if delay_ms:
            await asyncio.sleep(delay_ms / 1000)
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    def _receive(self, name: str, body: bytes, raw_headers: list[tuple[bytes, bytes]]) -> int:
        secret = self.secrets.get(name)
        if secret is None:
            self.accepted_unsigned += 1
            return 200
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in raw_headers}
        webhook_id = headers.get("webhook-id", "?")
        try:
            Webhook(secret).verify(body, headers)
        except WebhookVerificationError:
            self.unverified.append(webhook_id)
            return 400
        if webhook_id in self.verified_ids:
            self.repeats += 1
            return 200
        self.verified_ids.add(webhook_id)
        try:
            document = orjson.loads(body)
            data = document.get("data") or {}
            self.by_campaign[str(data.get("campaign_id", "?"))] += 1
            self.by_type[str(document.get("type", "?"))] += 1
        except (orjson.JSONDecodeError, AttributeError):
            pass
        return 200


@contextlib.asynccontextmanager
async def serve_app(app: Any, *, host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[str]:
    """Serve the ASGI ``app`` with uvicorn on ``host:port`` (0: a free port, bound here so no
    other process can take it first) in this event loop; yields its base URL once it
    listens, and stops it when the block ends."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    config = uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                task.result()
                raise RuntimeError("the webhook receiver stopped while starting")
            await asyncio.sleep(0.02)
        yield f"http://{host}:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        await task
        sock.close()


@contextlib.asynccontextmanager
async def serve_receiver(
    receiver: WebhookReceiver | None = None, *, host: str = "127.0.0.1", port: int = 0
) -> AsyncIterator[WebhookReceiver]:
    """Serve ``receiver`` (a new one when None) with uvicorn on ``host:port`` (0: a free
    port) in this event loop; ``receiver.base`` is its URL while the block runs."""
    receiver = receiver or WebhookReceiver()
    async with serve_app(receiver, host=host, port=port) as base:
        receiver.base = base
        yield receiver
