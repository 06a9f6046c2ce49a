"""The HTTP adapter of the webhook port: one signed POST, redirects refused, SSRF re-checked.

The host is resolved and checked at each delivery (:func:`services.notify.ssrf.check_url`) and
the request goes to the checked address (the ``Host`` header and TLS server name stay the
URL's host), so a DNS answer changed after registration cannot aim the POST inwards.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import httpx

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
    """httpx, one small connection pool per endpoint URL; ``timeout`` bounds each attempt.

    One pool per endpoint rather than one big one: httpcore scans every pooled connection for
    each request, so a shared pool's cost grows with the number of endpoints; and a slow
    endpoint then holds only its own connections, never a neighbour's on the same host.
    """

    def __init__(
        self, *, allow_private: bool, timeout: float = 10.0, connections_per_endpoint: int = 8
    ) -> None:
        self.allow_private = allow_private
        self._timeout = httpx.Timeout(timeout)
        self._limits = httpx.Limits(
            max_connections=connections_per_endpoint,
            max_keepalive_connections=connections_per_endpoint,
        )
        self._clients: dict[str, httpx.AsyncClient] = {}

    def _client(self, url: str) -> httpx.AsyncClient:
        client = self._clients.get(url)
        if client is None:
            client = self._clients[url] = httpx.AsyncClient(
                follow_redirects=False, timeout=self._timeout, limits=self._limits
            )
        return client

    async def aclose(self) -> None:
        for client in self._clients.values():
            await client.aclose()
        self._clients.clear()

    async def post(self, url: str, headers: dict[str, str], body: bytes) -> PostOutcome:
        try:
            target = await check_url(url, allow_private=self.allow_private)
        except UnsafeUrl as exc:
            return PostOutcome(False, "unsafe_url", str(exc), retryable=False)
        address = target.addresses[0]
        literal = f"[{address}]" if ":" in address else address
        pinned = httpx.URL(url).copy_with(host=literal)
        host_header = target.host if target.port in (80, 443) else f"{target.host}:{target.port}"
        extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
        try:
            answer = await self._client(url).post(
                pinned,
                content=body,
                headers={**headers, "host": host_header, "user-agent": "Pledgeflow-Webhooks/1"},
                extensions=extensions,
            )
        except httpx.TimeoutException as exc:
            return PostOutcome(False, "timeout", repr(exc)[:500])
        except httpx.HTTPError as exc:
            return PostOutcome(False, "connection_error", repr(exc)[:500])
        if 200 <= answer.status_code < 300:
            return PostOutcome(True, status=answer.status_code)
        if 300 <= answer.status_code < 400:
            return PostOutcome(
                False, "redirect_refused", "redirects are not followed", status=answer.status_code
            )
        return PostOutcome(
            False, f"http_{answer.status_code}", answer.text[:200], status=answer.status_code
        )
