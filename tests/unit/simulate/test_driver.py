"""The driver's tally against an in-memory API (httpx MockTransport): what it counts as
accepted, refused, invalid and replayed, and that an answer breaking the API's promises is
reported as unexpected rather than counted."""

from __future__ import annotations

import re
from typing import Any

import httpx
import orjson

from services.client import PledgeflowClient, RetryPolicy
from services.simulate.driver import Driver
from services.simulate.scenario import InvalidAction, PledgeAction, generate

BASE = "https://pledgeflow.dev/problems/"


def problem(status: int, slug: str, **extra: Any) -> httpx.Response:
    body = {"type": BASE + slug, "title": slug, "status": status, **extra}
    return httpx.Response(status, content=orjson.dumps(body))


class FakeApi:
    """Decides pledges like the API would for the scenario's flaws; ``lie`` makes it accept
    what it should refuse (a broken promise the driver must notice)."""

    def __init__(self, *, lie: bool = False) -> None:
        self.lie = lie
        self.answers: dict[str, httpx.Response] = {}

    def __call__(self, request: httpx.Request) -> httpx.Response:
        key = request.headers.get("idempotency-key", "")
        if key in self.answers:
            return self.answers[key]
        answer = self._decide(request)
        if request.method == "POST":
            self.answers[key] = answer
        return answer

    def _decide(self, request: httpx.Request) -> httpx.Response:
        match = re.fullmatch(r"/v1/campaigns/([^/]+)/pledges", request.url.path)
        if match is None:
            return problem(404, "not-found")
        campaign = match.group(1)
        body = orjson.loads(request.content)
        if campaign.endswith("nowhere"):
            return problem(404, "not-found")
        amount = body["amount_minor"]
        bad_shape = not isinstance(amount, int) or amount <= 0 or body["currency"] == "ZZZ"
        if bad_shape and not self.lie:
            return problem(422, "validation-error", errors=[{"field": "x", "message": "bad"}])
        refused = body["currency"] == "USD" or str(body.get("tier_id", "")).endswith("no-such-tier")
        if refused and not self.lie:
            return problem(409, "refused", reason="currency_mismatch")
        pledge = {"pledge_id": body["pledge_id"], "campaign_id": campaign, "seq": 2}
        return httpx.Response(201, content=orjson.dumps(pledge))


async def play(api: FakeApi) -> Driver:
    scenario = generate(3, "r", campaigns=3, duration=1.0, rate=300)
    async with PledgeflowClient(
        "http://api.test", "k", transport=httpx.MockTransport(api), retry=RetryPolicy(attempts=1)
    ) as client:
        driver = Driver(client, scenario)
        await driver.play()
    return driver


async def test_an_honest_api_leaves_nothing_unexpected() -> None:
    driver = await play(FakeApi())
    tally = driver.tally
    pledges = [a for a in driver.scenario.actions if isinstance(a, PledgeAction)]
    invalid = [a for a in driver.scenario.actions if isinstance(a, InvalidAction)]
    assert tally.unexpected == []
    assert len(tally.accepted) == len(pledges)
    assert sum(tally.invalid.values()) == len(invalid) > 0
    assert tally.replayed == tally.retries == sum(p.retries for p in pledges) > 0


async def test_an_api_accepting_invalid_requests_is_caught() -> None:
    driver = await play(FakeApi(lie=True))
    invalid = [a for a in driver.scenario.actions if isinstance(a, InvalidAction)]
    lies = [a for a in invalid if a.expect != "not_found"]
    assert lies and len(driver.tally.unexpected) == len(lies)
    assert all("answered accepted" in line for line in driver.tally.unexpected)
