"""The typed client puts ids into request paths: an id that is not one (a ``/``, ``..``, ``?``
or ``#`` in it) would address another resource or add a query (httpx resolves dot segments:
``refund_pledge("c-1", "../../c-2/pledges/p9")`` was sent as ``/v1/campaigns/c-2/pledges/p9/
refund``). Such an id is refused before anything is sent, naming the argument."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest

from services.client import PledgeflowClient

Call = Callable[[PledgeflowClient], Awaitable[Any]]

CALLS: dict[str, tuple[str, Call]] = {
    "get_settlement": ("campaign_id", lambda c: c.get_settlement("c-1/../c-2")),
    "get_campaign": ("campaign_id", lambda c: c.get_campaign("c-1?status=open")),
    "get_pledge": ("pledge_id", lambda c: c.get_pledge("c-1", "p1/../p2")),
    "refund_pledge": (
        "pledge_id",
        lambda c: c.refund_pledge("c-1", "../../c-2/pledges/p9"),
    ),
    "fix_payment_method": (
        "campaign_id",
        lambda c: c.fix_payment_method("..", "p1", {"payment_token": "tok_ok"}),
    ),
    "report_revenue": (
        "campaign_id",
        lambda c: c.report_revenue(
            "c-1#x", {"period": "2027-Q1", "amount_minor": 1, "currency": "EUR"}
        ),
    ),
    "make_pledge": (
        "campaign_id",
        lambda c: c.make_pledge("c 1", {"backer_id": "b", "amount_minor": 1, "currency": "EUR"}),
    ),
    "cancel_pledge": ("pledge_id", lambda c: c.cancel_pledge("c-1", "")),
    "close_campaign": (
        "campaign_id",
        lambda c: c.close_campaign("c-1/x", {"reason": "creator_cancelled"}),
    ),
}


@pytest.mark.parametrize("name", sorted(CALLS))
async def test_an_id_that_is_not_an_id_is_refused_before_sending(name: str) -> None:
    sent: list[str] = []

    def record(request: httpx.Request) -> httpx.Response:
        sent.append(request.url.raw_path.decode())
        return httpx.Response(404, json={"type": "about:blank", "status": 404, "title": "x"})

    argument, call = CALLS[name]
    transport = httpx.MockTransport(record)
    async with PledgeflowClient("http://api", "k", transport=transport) as client:
        with pytest.raises(ValueError, match=f"^{argument}: "):
            await call(client)
    assert sent == []
