"""With ``PLEDGEFLOW_METRICS_PORT`` set, the API's metrics and readiness leave the public port
(the one its NetworkPolicy exposes to clients) for their own (fakes behind the app)."""

from __future__ import annotations

import asyncio

import httpx
from prometheus_client import CollectorRegistry

from services.pledge.api import create_app
from services.pledge.api.config import ApiSettings
from tests.support.api import AUTH_A, KEY_A, free_port
from tests.unit.pledge.api.fakes import FakePorts


async def test_metrics_and_readiness_are_served_on_the_ops_port_only() -> None:
    port = free_port()
    settings = ApiSettings(
        api_keys=f"tenant-a:{KEY_A}", metrics_host="127.0.0.1", metrics_port=port
    )
    app = create_app(settings, registry=CollectorRegistry(), ports=FakePorts().opened)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as public:
            for path in ("/metrics", "/readyz"):
                response = await public.get(path, headers=AUTH_A)
                assert response.status_code == 404, path
                assert response.headers["content-type"] == "application/problem+json"
            assert (await public.get("/healthz")).status_code == 200
            await public.get("/v1/campaigns/c-1", headers=AUTH_A)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as ops:
            for _ in range(100):
                ready = await ops.get("/ready")
                if ready.status_code == 200:
                    break
                await asyncio.sleep(0.05)
            assert ready.status_code == 200
            metrics = await ops.get("/metrics")
            assert metrics.status_code == 200
            assert 'pledgeflow_api_requests_total{method="GET"' in metrics.text
