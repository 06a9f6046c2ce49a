"""Retrying platform clients for the API fault tests, and the exactly-once check after them.

Each client sends its share of pledges without a ``pledge_id`` (the API derives it from the
Idempotency-Key) and retries each with the same key until it gets its 202, as a platform back
end does after a dropped connection, a 503 or a 409 (the key is still held).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

import httpx

from schemas.tenancy import local_id
from services.pledge.config import PledgeSettings
from tests.support.api import events_of, pledge_body, write_headers

PROBLEM = "application/problem+json"


class RetryingLoad:
    """``keys`` pledges on one campaign from ``clients`` concurrent clients."""

    def __init__(self, client: httpx.AsyncClient, url: str, keys: list[str], clients: int) -> None:
        self.client = client
        self.url = url
        self.keys = keys
        self.clients = clients
        self.body = pledge_body(None, tier_id=None)
        #: the 202 each key finally got
        self.first: dict[str, httpx.Response] = {}
        #: what the retries met: "connection dropped", "503", "409"
        self.outcomes: Counter[str] = Counter()
        #: the longest time a request took to be answered (seconds)
        self.slowest = 0.0
        self._task: asyncio.Future[Any] | None = None

    def start(self) -> None:
        shares = [self.keys[i :: self.clients] for i in range(self.clients)]
        self._task = asyncio.gather(*(self._client(share) for share in shares))

    @property
    def done(self) -> bool:
        return len(self.first) == len(self.keys)

    async def finish(self, within: float) -> None:
        assert self._task is not None
        try:
            await asyncio.wait_for(self._task, within)
        finally:
            if not self._task.done():
                self._task.cancel()

    async def _client(self, share: list[str]) -> None:
        for key in share:
            while True:
                started = time.monotonic()
                try:
                    response = await self.client.post(
                        self.url, json=self.body, headers=write_headers(key)
                    )
                except httpx.TransportError:
                    self.outcomes["connection dropped"] += 1
                    await asyncio.sleep(0.05)
                    continue
                self.slowest = max(self.slowest, time.monotonic() - started)
                if response.status_code == 202:
                    self.first[key] = response
                    break
                # A dependency down: 503 with Retry-After; 409 while the key is still held.
                assert response.status_code in (409, 503), response.text
                assert response.headers["content-type"] == PROBLEM
                assert "retry-after" in response.headers
                self.outcomes[str(response.status_code)] += 1
                await asyncio.sleep(0.05)

    async def assert_replays(self, keys: list[str]) -> None:
        """A retry of each key replays the 202 it first got."""
        for key in keys:
            again = await self.client.post(self.url, json=self.body, headers=write_headers(key))
            assert again.status_code == 202, again.text
            assert again.content == self.first[key].content


async def pledges_made(settings: PledgeSettings, campaign_id: str) -> list[str]:
    """The pledge ids of every committed ``PledgeMade`` of the campaign, repeats included."""
    made = await events_of(settings, "PledgeMade")
    # Events name the campaign by its tenant-qualified id (schemas.tenancy).
    return [e.payload.pledge_id for e in made if local_id(e.campaign_id) == campaign_id]


async def assert_made_exactly_once(
    settings: PledgeSettings, campaign_id: str, load: RetryingLoad, within: float = 60
) -> None:
    """Every pledge answered 202 is made once, and no other pledge is made."""
    accepted = {response.json()["pledge_id"] for response in load.first.values()}
    assert len(accepted) == len(load.keys)
    deadline = time.monotonic() + within
    while len(set(await pledges_made(settings, campaign_id))) < len(accepted):
        assert time.monotonic() < deadline, "not every accepted pledge was made"
        await asyncio.sleep(0.5)
    await asyncio.sleep(1.0)  # a second copy, if any, would have been decided by now
    made = await pledges_made(settings, campaign_id)
    print(f"made {len(made)} ({len(set(made))} distinct), accepted {len(accepted)}")
    assert [p for p, n in Counter(made).items() if n > 1] == []
    assert set(made) == accepted


async def assert_projected(load: RetryingLoad, keys: list[str], within: float) -> None:
    """The read model shows each key's pledge accepted (the projector caught up)."""

    async def late() -> list[Any]:
        behind = []
        for key in keys:
            status_url = load.first[key].json()["status_url"]
            status = await load.client.get(status_url, headers=write_headers(key))
            if status.status_code != 200 or status.json()["status"] != "accepted":
                behind.append((key, status.status_code, status.text))
        return behind

    deadline = time.monotonic() + within
    while behind := await late():
        assert time.monotonic() < deadline, f"the projector did not catch up: {behind[:3]}"
        await asyncio.sleep(0.5)
