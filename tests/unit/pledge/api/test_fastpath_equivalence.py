"""The ASGI front (``fastpath.py``) answers the hot routes exactly as FastAPI's routes would.

Two apps over fresh fakes take the same sequence of requests: one as deployed (the front
answers ``POST /v1/campaigns/{id}/pledges`` and ``POST /v1/pledges/batch``), one with the
front switched off so that FastAPI's middleware, router and route functions serve them. Every
answer must be the same bytes (status, header list, body), and the same commands, tokens and
request metrics must follow.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import pytest
import pytest_asyncio
from prometheus_client import CollectorRegistry

from services.pledge.api import create_app
from services.pledge.api.command_ids import command_id_for
from services.pledge.api.config import ApiSettings
from tests.support.api import AUTH_A, AUTH_B, KEY_A, KEY_B, pledge_body
from tests.unit.pledge.api.fakes import FakePorts

PLEDGE = "/v1/campaigns/c-1/pledges"
BATCH = "/v1/pledges/batch"
JSON = {"Content-Type": "application/json"}
ISSUED_AT = re.compile(rb'"issued_at":"[^"]*"')


@dataclass
class Side:
    client: httpx.AsyncClient
    fakes: FakePorts
    registry: CollectorRegistry


@pytest_asyncio.fixture
async def sides() -> AsyncIterator[tuple[Side, Side]]:
    """(front, FastAPI): the same app twice, the second with its front switched off."""
    opened: list[Side] = []
    stack: list[Any] = []
    for front in (True, False):
        fakes = FakePorts()
        for campaign_id in ("c-1", "c-2"):
            fakes.readmodel.launched(f"tenant-a/{campaign_id}", "tenant-a")
        fakes.readmodel.launched("tenant-b/c-9", "tenant-b")
        fakes.readmodel.decisions[command_id_for("tenant-a", "k-decided")] = {
            "outcome": "accepted",
            "seq": 7,
            "event_type": "PledgeMade",
        }
        fakes.readmodel.decisions[command_id_for("tenant-a", "k-refused")] = {
            "outcome": "refused",
            "seq": 3,
            "reason": "tier_sold_out",
            "detail": "tier t1 is sold out",
        }
        registry = CollectorRegistry()
        settings = ApiSettings(
            api_keys=f"tenant-a:{KEY_A},tenant-b:{KEY_B}",
            api_max_wait_seconds=10,
            api_batch_max_items=3,
            api_max_body_bytes=2048,
        )
        app: Any = create_app(settings, registry=registry, ports=fakes.opened)
        assert app.front is not None
        if not front:
            app.front = None
        lifespan = app.router.lifespan_context(app)
        await lifespan.__aenter__()
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api")
        stack.append((lifespan, client))
        opened.append(Side(client, fakes, registry))
    yield opened[0], opened[1]
    for lifespan, client in reversed(stack):
        await client.aclose()
        await lifespan.__aexit__(None, None, None)


def js(value: Any) -> bytes:
    return orjson.dumps(value)


def key(k: str, auth: dict[str, str] = AUTH_A, /, **extra: str) -> dict[str, str]:
    return {**JSON, **auth, "Idempotency-Key": k, **extra}


#: (path, headers, body) in order: replays and conflicts depend on what came before.
REQUESTS: list[tuple[str, dict[str, str], bytes]] = [
    # accepted, generated and given pledge ids, correlation ids valid and not
    (PLEDGE, key("k-1"), js(pledge_body("p-1"))),
    (PLEDGE, key("k-2", **{"X-Correlation-Id": "corr-7"}), js(pledge_body(None))),
    (PLEDGE, key("k-3", **{"X-Correlation-Id": "bad id!"}), js(pledge_body("p-3"))),
    (PLEDGE, key("k-min"), js({"backer_id": "b-2", "amount_minor": 1, "currency": "JPY"})),
    # replay (same key, same body) and conflict (same key, another body)
    (PLEDGE, key("k-1"), js(pledge_body("p-1"))),
    (PLEDGE, key("k-1"), js(pledge_body("p-1", amount_minor=9900))),
    # Prefer: wait with a decision (201 / 409), an unknown preference, a capped wait
    (PLEDGE, key("k-decided", Prefer="wait=5"), js(pledge_body("p-d"))),
    (PLEDGE, key("k-refused", Prefer="respond-async, wait=99"), js(pledge_body("p-r"))),
    (PLEDGE, key("k-pref", Prefer="wait=1.5"), js(pledge_body("p-4"))),
    # auth and tenancy
    (PLEDGE, {**JSON, "Idempotency-Key": "k-5"}, js(pledge_body("p-5"))),
    (PLEDGE, key("k-5", {"Authorization": "Bearer nope-0123456789"}), js(pledge_body("p-5"))),
    (PLEDGE, key("k-5", {"Authorization": "Basic abc"}), js(pledge_body("p-5"))),
    (PLEDGE, key("k-6", AUTH_B), js(pledge_body("p-6"))),  # tenant A's campaign
    ("/v1/campaigns/c-404/pledges", key("k-7"), js(pledge_body("p-7"))),
    ("/v1/campaigns/c-9/pledges", key("k-8"), js(pledge_body("p-8"))),  # tenant B's
    # campaign ids the front must leave to FastAPI's path check (its 422)
    ("/v1/campaigns/c-1%0A/pledges", key("k-p1"), js(pledge_body("p-p1"))),
    ("/v1/campaigns/c%201/pledges", key("k-p2"), js(pledge_body("p-p2"))),
    ("/v1/campaigns/" + "c" * 300 + "/pledges", key("k-p3"), js(pledge_body("p-p3"))),
    # Idempotency-Key rules
    (PLEDGE, {**JSON, **AUTH_A}, js(pledge_body("p-9"))),
    (PLEDGE, key(""), js(pledge_body("p-9"))),
    (PLEDGE, key("k e"), js(pledge_body("p-9"))),
    (PLEDGE, key("k" * 256), js(pledge_body("p-9"))),
    # bodies pydantic refuses (the same problem+json)
    (PLEDGE, key("k-10"), b"{not json"),
    (PLEDGE, key("k-11"), b""),
    (PLEDGE, key("k-12"), b"[]"),
    (PLEDGE, key("k-13"), js({"backer_id": "b-1"})),
    (PLEDGE, key("k-14"), js(pledge_body("p-14", amount_minor=-5))),
    (PLEDGE, key("k-15"), js(pledge_body("p-15", amount_minor=2.5))),
    (PLEDGE, key("k-16"), js(pledge_body("p-16", amount_minor="2500"))),
    (PLEDGE, key("k-17"), js(pledge_body("p-17", currency="XXX"))),
    (PLEDGE, key("k-18"), js(pledge_body("p-18", currency="eur"))),
    (PLEDGE, key("k-19"), js(pledge_body("p-19", surprise=1))),
    (PLEDGE, key("k-20"), js(pledge_body("bad id"))),
    (PLEDGE, key("k-21"), js(pledge_body("p-21", locale="x" * 100))),
    (PLEDGE, key("k-22"), js(pledge_body("p-22")).replace(b"2500", b"1" + b"0" * 30)),
    (PLEDGE, key("k-23"), js(pledge_body("p-23", backer_id=None))),
    # transport-level rules: content type, size, length
    (PLEDGE, {**key("k-24"), "Content-Type": "text/plain"}, js(pledge_body("p-24"))),
    (PLEDGE, key("k-25"), js(pledge_body("p-25", backer_id="b" * 4000))),
    (PLEDGE, {**key("k-26"), "Content-Length": "+12"}, js(pledge_body("p-26"))),
    # the batch route
    (BATCH, key("k-b1"), js({"pledges": [{**pledge_body("p-b1"), "campaign_id": "c-1"}]})),
    (BATCH, key("k-b1"), js({"pledges": [{**pledge_body("p-b1"), "campaign_id": "c-1"}]})),
    (BATCH, key("k-b2"), js({"pledges": [{**pledge_body("p-b2"), "campaign_id": "c-9"}]})),
    (BATCH, key("k-b3"), js({"pledges": []})),
    (BATCH, key("k-b4"), js({"pledges": [{**pledge_body(f"p-{i}"), "campaign_id": "c-2"}
                                         for i in range(4)]})),  # over the item limit
    (BATCH, key("k-b5"), js({"pledges": [{**pledge_body("p-b5", currency="XXX"),
                                          "campaign_id": "c-1"}]})),
]  # fmt: skip


def answer(response: httpx.Response) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    return response.status_code, list(response.headers.raw), response.content


async def test_the_front_and_fastapi_answer_every_request_with_the_same_bytes(
    sides: tuple[Side, Side],
) -> None:
    front, fastapi = sides
    statuses: set[int] = set()
    for i, (path, headers, body) in enumerate(REQUESTS):
        got = [
            answer(await side.client.post(path, headers=headers, content=body))
            for side in (front, fastapi)
        ]
        assert got[0] == got[1], f"request {i}: {path} {headers} {body[:80]!r}"
        statuses.add(got[0][0])
    # the set covers accepted, decided, refused and every class of client error
    assert {201, 202, 400, 401, 404, 409, 413, 415, 422} <= statuses

    def commands(side: Side) -> list[tuple[str, bytes]]:  # the issue time aside
        return [(c, ISSUED_AT.sub(b"", value)) for c, value in side.fakes.bus.sent]

    assert commands(front) == commands(fastapi)
    assert len(front.fakes.bus.sent) > 5
    assert front.fakes.tokens.tokens == fastapi.fakes.tokens.tokens

    def samples(side: Side) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for metric in side.registry.collect()
            for s in metric.samples
            if s.name.startswith("pledgeflow_api_")
            and not s.name.endswith(("_sum", "_bucket", "_created"))
        }

    assert samples(front) == samples(fastapi)


@pytest.mark.parametrize(
    ("failure", "configure"),
    [
        ("redis down", lambda fakes: setattr(fakes.readmodel, "down", True)),
        ("broker down", lambda fakes: setattr(fakes.bus, "failure", ConnectionError("down"))),
        ("token store down", lambda fakes: setattr(fakes.tokens, "down", True)),
    ],
)
async def test_the_front_and_fastapi_answer_outages_alike(
    sides: tuple[Side, Side], failure: str, configure: Callable[[FakePorts], None]
) -> None:
    got = []
    for side in sides:
        configure(side.fakes)
        response = await side.client.post(PLEDGE, headers=key("k-1"), content=js(pledge_body()))
        got.append(answer(response))
    assert got[0] == got[1], failure
    assert got[0][0] == 503
