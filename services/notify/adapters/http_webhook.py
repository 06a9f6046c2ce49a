"""The HTTP adapter of the webhook port: one signed POST, redirects refused, SSRF re-checked.

The host is resolved and checked at each delivery (:func:`services.notify.ssrf.check_url`) and
the request goes to the checked address (the ``Host`` header and TLS server name stay the
URL's host), so a DNS answer changed after registration cannot aim the POST inwards.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import aiohttp
from yarl import URL

from services.notify.ssrf import UnsafeUrl, check_url

__all__ = ["HttpWebhookSender", "PostOutcome", "WebhookPoster"]


@dataclass(frozen=True, slots=True)
class PostOutcome:
    """What one attempt gave: ``ok``, or a stable ``reason`` code; ``retryable`` if worth it."""

    ok: bool
    reason: str = "delivered"
    detail: str = ""
    retryable: bool = True
    status: int | None = None


class WebhookPoster(Protocol):
    """Posts one signed body; never raises for a delivery failure (returns the outcome)."""

    async def post(self, url: str, headers: dict[str, str], body: bytes) -> PostOutcome: ...


class HttpWebhookSender:
    """aiohttp, one small connection pool per endpoint URL; ``timeout`` bounds each attempt.

    aiohttp rather than httpx: measured on this box against the same local receiver, 8 in
    flight, one httpx POST cost ~0.8-0.9 ms of CPU and one aiohttp POST ~0.1 ms, and a
    webhook delivery is little else (see bench/README.md, notify). One pool per endpoint
    rather than one big one: a slow endpoint then holds only its own connections, never a
    neighbour's on the same host.
    """

    def __init__(
        self, *, allow_private: bool, timeout: float = 10.0, connections_per_endpoint: int = 8
    ) -> None:
        self.allow_private = allow_private
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._connections = connections_per_endpoint
        self._clients: dict[str, aiohttp.ClientSession] = {}

    def _client(self, url: str) -> aiohttp.ClientSession:
        client = self._clients.get(url)
        if client is None:
            client = self._clients[url] = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._connections, use_dns_cache=False),
                timeout=self._timeout,
                # our own headers only (plus Host, Content-Length): no Accept-Encoding to decode
                skip_auto_headers=("Accept", "Accept-Encoding"),
            )
        return client

    async def aclose(self) -> None:
        for client in self._clients.values():
            await client.close()
        self._clients.clear()

    async def post(self, url: str, headers: dict[str, str], body: bytes) -> PostOutcome:
        try:
            target = await check_url(url, allow_private=self.allow_private)
        except UnsafeUrl as exc:
            return PostOutcome(False, "unsafe_url", str(exc), retryable=False)
        parsed = URL(url)
        # the POST goes to the checked address; Host and the TLS server name stay the URL's
        pinned = URL.build(
            scheme=parsed.scheme,
            host=target.addresses[0],
            port=target.port,
            path=parsed.raw_path,
            query_string=parsed.raw_query_string,
            encoded=True,
        )
        host_header = target.host if target.port in (80, 443) else f"{target.host}:{target.port}"
        try:
            async with self._client(url).post(
                pinned,
                data=body,
                headers={**headers, "host": host_header, "user-agent": "Pledgeflow-Webhooks/1"},
                allow_redirects=False,
                server_hostname=target.host if target.scheme == "https" else None,
            ) as answer:
                status = answer.status
                text = (await answer.read())[:200].decode(errors="replace")
        except TimeoutError as exc:
            return PostOutcome(False, "timeout", repr(exc)[:500])
        except (aiohttp.ClientError, OSError) as exc:
            return PostOutcome(False, "connection_error", repr(exc)[:500])
        if 200 <= status < 300:
            return PostOutcome(True, status=status)
        if 300 <= status < 400:
            return PostOutcome(
                False, "redirect_refused", "redirects are not followed", status=status
            )
        return PostOutcome(False, f"http_{status}", text, status=status)
