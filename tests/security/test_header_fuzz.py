"""Every header the API reads, fuzzed (non-ASCII bytes, huge values, repeats): never a 5xx.

The app runs over the in-memory fakes of its ports and is called at the ASGI level, so the
raw header list (any bytes, any repeats) reaches it exactly as a server would hand it over.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest_asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from starlette.types import ASGIApp, Message

from services.pledge.api import create_app
from services.pledge.api.config import ApiSettings
from tests.support.api import KEY_A, KEY_B
from tests.unit.pledge.api.fakes import FakePorts

READ = (b"authorization", b"idempotency-key", b"prefer", b"content-type", b"content-length")
NAMES = (*READ, b"x-correlation-id")
BODY = orjson.dumps({"pledge_id": "p1", "backer_id": "b1", "amount_minor": 100, "currency": "EUR"})
PATHS = (
    ("POST", "/v1/campaigns/c1/pledges", BODY),
    (
        "POST",
        "/v1/pledges/batch",
        orjson.dumps({"pledges": [{**orjson.loads(BODY), "campaign_id": "c1"}]}),
    ),
    ("POST", "/v1/campaigns/c1/close", b'{"reason":"creator_cancelled"}'),
    ("GET", "/v1/campaigns/c1", b""),
)
GOOD = {
    b"authorization": b"Bearer " + KEY_A.encode(),
    b"idempotency-key": b"k-1",
    b"content-type": b"application/json",
}

_values = st.one_of(
    st.binary(max_size=64),
    st.text(max_size=64).map(lambda t: t.encode("utf-8")),
    st.sampled_from(
        [
            "wait=²".encode(),
            b"wait=" + b"9" * 5000,
            b"wait=-1",
            b"wait=1e3",
            b"wait",
            b"Bearer " + b"\xff" * 40,
            b"Bearer",
            b"9" * 5000,
            b"-5",
            b"\xc2\xb2",
            b"application/json; charset=\xff",
            b"x" * 70_000,
            b"",
        ]
    ),
)
_headers = st.lists(st.tuples(st.sampled_from(NAMES), _values), max_size=8)


@pytest_asyncio.fixture
async def app() -> AsyncIterator[ASGIApp]:
    fakes = FakePorts()
    fakes.readmodel.launched("tenant-a/c1", "tenant-a")
    api = create_app(
        ApiSettings(api_keys=f"tenant-a:{KEY_A},tenant-b:{KEY_B}", api_max_wait_seconds=0),
        registry=CollectorRegistry(),
        ports=fakes.opened,
    )
    async with api.router.lifespan_context(api):
        yield api


async def call(
    app: ASGIApp, method: str, path: str, headers: list[tuple[bytes, bytes]], body: bytes
) -> tuple[int, dict[bytes, bytes], bytes]:
    """One request at the ASGI level; (status, headers, body)."""
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 1),
        "server": ("api", 80),
    }
    sent = False
    out: list[Message] = []

    async def receive() -> Message:
        nonlocal sent
        if sent:
            await asyncio.sleep(3600)
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: Message) -> None:
        out.append(message)

    await app(scope, receive, send)
    start = next(m for m in out if m["type"] == "http.response.start")
    content = b"".join(m.get("body", b"") for m in out if m["type"] == "http.response.body")
    return start["status"], dict(start["headers"]), content


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(extra=_headers, route=st.sampled_from(PATHS), keep=st.sets(st.sampled_from(list(GOOD))))
async def test_no_header_value_or_repeat_causes_a_5xx(
    app: ASGIApp, extra: list[tuple[bytes, bytes]], route: tuple[str, str, bytes], keep: set[bytes]
) -> None:
    method, path, body = route
    headers = [(name, GOOD[name]) for name in sorted(keep)] + extra
    status, answer_headers, content = await call(app, method, path, headers, body)
    assert status < 500, (headers, content)
    if status >= 400:
        assert answer_headers[b"content-type"] == b"application/problem+json", content
        assert orjson.loads(content)["status"] == status


async def test_a_superscript_digit_in_prefer_wait_is_not_a_server_error(app: ASGIApp) -> None:
    headers = [*GOOD.items(), (b"prefer", "wait=²".encode())]
    status, _, content = await call(app, "POST", "/v1/campaigns/c1/pledges", headers, BODY)
    assert status < 500, content
    status, _, content = await call(
        app,
        "POST",
        "/v1/campaigns/c1/pledges",
        [*GOOD.items(), (b"prefer", b"wait=" + b"7" * 5000), (b"idempotency-key", b"k-2")],
        BODY,
    )
    assert status < 500, content
