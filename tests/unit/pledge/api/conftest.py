"""The API app over in-memory fakes of its ports, behind an httpx client (no servers)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest_asyncio
from prometheus_client import CollectorRegistry

from services.pledge.api import create_app
from services.pledge.api.config import ApiSettings
from tests.support.api import KEY_A, KEY_B
from tests.unit.pledge.api.fakes import FakePorts


@dataclass
class Api:
    """The client and the fakes behind it."""

    client: httpx.AsyncClient
    fakes: FakePorts
    registry: CollectorRegistry


@pytest_asyncio.fixture
async def api() -> AsyncIterator[Api]:
    fakes = FakePorts()
    for campaign_id in ("c-1", "c-2"):  # tenant A's campaigns, as the projector shows them
        fakes.readmodel.launched(f"tenant-a/{campaign_id}", "tenant-a")
    registry = CollectorRegistry()
    settings = ApiSettings(
        api_keys=f"tenant-a:{KEY_A},tenant-b:{KEY_B}",
        api_max_wait_seconds=10,
        api_batch_max_items=1000,
    )
    app = create_app(settings, registry=registry, ports=fakes.opened)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            yield Api(client, fakes, registry)
