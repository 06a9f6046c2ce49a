"""Where the single-pledge route's CPU goes, in-process: the framework's share against the
handler's, with no HTTP server, no socket and in-memory ports.

Four ASGI callables answer the same ``POST /v1/campaigns/c-1/pledges`` request (64 in flight
at a time, raw ASGI calls, each with its own Idempotency-Key), and the process CPU per
request is recorded for each:

* ``bare_asgi`` - drains the body, answers 202 (the floor of an ASGI call);
* ``bare_fastapi`` - FastAPI route answering 202 (bench_api's bare FastAPI app);
* ``real_front`` - the real app over the unit tests' in-memory ports: the hot route is
  answered by the pure-ASGI front (``services.pledge.api.fastpath``), as in production;
* ``real_fastapi`` - the same app with the front switched off, so the same handler is reached
  through FastAPI's ``__call__``, middleware stack, router and dependency solving.

``real_fastapi - real_front`` is what FastAPI/Starlette would cost this route;
``real_front - bare_asgi`` is the handler's own work over fakes (auth, body, ids, templates,
metrics); the real ports (Redis script, two Kafka appends) come on top of that in production.
Rounds alternate the four so that other load on the machine spreads over all of them; the
figure is the median round. Run: ``python -m bench api_split``.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from bench.bench_api import PLEDGE, bare_app, bare_asgi_app
from bench.harness import Target, write_result

KEY = "bench-key-0123456789abcdef"
ROUNDS = int(os.environ.get("BENCH_SPLIT_ROUNDS", "5"))
REQUESTS = int(os.environ.get("BENCH_SPLIT_REQUESTS", "20000"))
IN_FLIGHT = 64

AsgiApp = Callable[[dict[str, Any], Any, Any], Awaitable[None]]


async def drive(app: AsgiApp, requests: int, tag: str) -> tuple[float, int]:
    """Call ``app`` ``requests`` times, 64 in flight; CPU seconds and the 202s counted."""
    body = orjson.dumps(PLEDGE)
    base_headers = [
        (b"host", b"api"),
        (b"content-type", b"application/json"),
        (b"authorization", f"Bearer {KEY}".encode()),
        (b"content-length", str(len(body)).encode()),
    ]
    accepted = 0

    async def one(i: int) -> None:
        nonlocal accepted
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": "/v1/campaigns/c-1/pledges",
            "raw_path": b"/v1/campaigns/c-1/pledges",
            "root_path": "",
            "query_string": b"",
            "headers": [*base_headers, (b"idempotency-key", f"{tag}-{i}".encode())],
            "client": ("127.0.0.1", 1234),
            "server": ("127.0.0.1", 80),
            "state": {},
        }
        sent = False

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if sent:
                await asyncio.sleep(3600)
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            nonlocal accepted
            if message["type"] == "http.response.start" and message["status"] == 202:
                accepted += 1

        await app(scope, receive, send)

    started = time.process_time()
    for start in range(0, requests, IN_FLIGHT):
        await asyncio.gather(*(one(i) for i in range(start, min(start + IN_FLIGHT, requests))))
    return time.process_time() - started, accepted


async def main() -> None:
    from prometheus_client import CollectorRegistry

    from services.pledge.api import create_app
    from services.pledge.api.config import ApiSettings
    from tests.unit.pledge.api.fakes import FakePorts

    fakes = FakePorts()
    fakes.readmodel.launched("bench/c-1", "bench")
    settings = ApiSettings(
        api_keys=f"bench:{KEY}", api_rate_per_second=1e9, api_rate_burst=1_000_000_000
    )
    real: Any = create_app(settings, registry=CollectorRegistry(), ports=fakes.opened)
    front = real.front

    async def real_fastapi(scope: Any, receive: Any, send: Any) -> None:
        real.front = None  # the same app, the hot route through FastAPI's stack
        try:
            await real(scope, receive, send)
        finally:
            real.front = front

    apps: dict[str, AsgiApp] = {
        "bare_asgi": bare_asgi_app(),
        "bare_fastapi": bare_app(),
        "real_front": real,
        "real_fastapi": real_fastapi,
    }
    figures: dict[str, list[float]] = {name: [] for name in apps}
    async with real.router.lifespan_context(real):
        for name, app in apps.items():  # warm-up
            await drive(app, 2000, f"warm-{name}")
        for round_no in range(ROUNDS):
            for name, app in apps.items():
                fakes.bus.sent.clear()
                fakes.tokens.tokens.clear()
                cpu, accepted = await drive(app, REQUESTS, f"r{round_no}-{name}")
                if accepted != REQUESTS:
                    raise SystemExit(f"{name}: {accepted} of {REQUESTS} answered 202")
                figures[name].append(cpu / REQUESTS * 1e6)
    load = os.getloadavg()[0]
    print(f"in-process CPU per request, median of {ROUNDS} rounds (load {load:.1f}):")
    for name, values in figures.items():
        spread = ", ".join(f"{v:.1f}" for v in values)
        print(f"  {name:>13}: {statistics.median(values):6.1f} us  ({spread})")
    med = {name: statistics.median(values) for name, values in figures.items()}
    print(
        f"  FastAPI's cost on this route (real_fastapi - real_front): "
        f"{med['real_fastapi'] - med['real_front']:.1f} us"
    )
    print(
        f"  handler over fakes (real_front - bare_asgi): "
        f"{med['real_front'] - med['bare_asgi']:.1f} us"
    )
    # Guard: the front must keep costing less than the same handler behind FastAPI.
    write_result(
        "api_pledge_framework_split",
        "POST pledge in-process CPU/request, ASGI front (in-memory ports)",
        "us",
        med["real_front"],
        baseline=("same handler through FastAPI's stack", med["real_fastapi"]),
        target=Target(ratio=1.0, lower_is_better=True),
        extra={
            "cpu_us_per_request": {name: round(v, 1) for name, v in med.items()},
            "rounds": {name: [round(v, 1) for v in values] for name, values in figures.items()},
            "requests_per_round": REQUESTS,
            "in_flight": IN_FLIGHT,
            "load_average_1m": round(load, 2),
        },
    )


if __name__ == "__main__":
    import uvloop

    uvloop.run(main())
