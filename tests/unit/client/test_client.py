"""The typed client against the real app over in-memory fakes of its ports.

An ASGI wrapper in front of the app injects 503s - before the app saw the request, and after
it handled it (the answer lost on the way back) - so the retry rules are seen end to end: one
command on the log per logical call, whatever was injected.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import orjson
import pytest
import pytest_asyncio
from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from schemas.commands import decode_command
from schemas.tenancy import qualify
from services.client import (
    InvalidCursor,
    NotFound,
    PledgeflowClient,
    Unavailable,
    ValidationFailed,
)
from services.pledge.adapters.redis_readmodel import CampaignRow, PledgeRow
from services.pledge.api import create_app
from services.pledge.api.config import ApiSettings
from services.pledge.api.models import PledgeAccepted
from tests.support.api import KEY_A, KEY_B, launch_body, pledge_body
from tests.support.flaky import Flaky, client_through_flaky
from tests.unit.pledge.api.fakes import FakePorts

#: How the server stores tenant-a's campaign c-1 (tenant-qualified; the client never sees it).
STORED = qualify("tenant-a", "c-1")


@dataclass
class Rig:
    fakes: FakePorts
    flaky: Flaky
    client: PledgeflowClient
    slept: list[float]


@pytest_asyncio.fixture
async def rig() -> AsyncIterator[Rig]:
    fakes = FakePorts()
    settings = ApiSettings(api_keys=f"tenant-a:{KEY_A},tenant-b:{KEY_B}")
    app = create_app(settings, registry=CollectorRegistry(), ports=fakes.opened)
    slept: list[float] = []
    async with client_through_flaky(app, KEY_A, slept=slept) as (flaky, client):
        yield Rig(fakes, flaky, client, slept)


async def test_each_logical_call_is_one_command_across_injected_503s(rig: Rig) -> None:
    rig.fakes.readmodel.launched(STORED, "tenant-a")
    rig.flaky.plan = ["after", "before", "pass", "after", "after", "pass", "before", "pass"]

    launched = await rig.client.launch_campaign(launch_body("c-9"))
    pledged = await rig.client.make_pledge("c-1", pledge_body("p-1"))
    cancelled = await rig.client.cancel_pledge("c-1", "p-1", {"reason": "changed_mind"})

    commands = [decode_command(value) for _campaign, value in rig.fakes.bus.sent]
    assert [type(c).__name__ for c in commands] == ["LaunchCampaign", "MakePledge", "CancelPledge"]
    assert (launched.status, pledged.status, cancelled.status) == ("pending",) * 3
    assert isinstance(pledged, PledgeAccepted) and pledged.pledge_id == "p-1"
    # 3 attempts, 3 attempts, 2 attempts: one key per logical call, the same on each retry.
    keys = rig.flaky.keys
    assert len(keys) == 8 and len(set(keys[:3])) == len(set(keys[3:6])) == len(set(keys[6:])) == 1
    assert len({keys[0], keys[3], keys[6]}) == 3


async def test_retry_after_is_honoured_and_a_lasting_503_is_raised_typed(rig: Rig) -> None:
    rig.flaky.retry_after = "2"
    rig.flaky.plan = ["before"] * 5

    with pytest.raises(Unavailable) as raised:
        await rig.client.launch_campaign(launch_body("c-9"))

    assert rig.slept == [2.0] * 4  # 5 attempts, 4 waits of the server's Retry-After
    assert raised.value.status == 503
    assert rig.fakes.bus.sent == []


async def test_problems_are_typed_exceptions_naming_the_fields(rig: Rig) -> None:
    with pytest.raises(NotFound):
        await rig.client.get_campaign("c-missing")
    with pytest.raises(ValidationFailed) as invalid:
        await rig.client.make_pledge("c-1", pledge_body("p-1", amount_minor=-5))

    assert [e.field for e in invalid.value.errors] == ["amount_minor"]
    assert rig.slept == []  # not retried


async def test_a_campaign_read_again_is_revalidated_with_its_etag(rig: Rig) -> None:
    doc = {**launch_body("c-1"), "campaign_id": STORED, "status": "open", "seq": 3}
    rig.fakes.readmodel.campaigns[STORED] = CampaignRow(3, "tenant-a", _view(doc))

    first = await rig.client.get_campaign("c-1")
    again = await rig.client.get_campaign("c-1")

    assert again is first  # answered 304, the cached copy returned
    assert first.seq == 3


async def test_iterators_walk_every_page_and_a_foreign_cursor_is_typed(rig: Rig) -> None:
    rig.fakes.readmodel.launched(STORED, "tenant-a")
    for i in range(7):
        doc = {**pledge_body(f"p-{i}"), "campaign_id": STORED, "status": "accepted"}
        rig.fakes.readmodel.pledges[(STORED, f"p-{i}")] = PledgeRow("accepted", _pledge(doc), None)

    seen = [p.pledge_id async for p in rig.client.pledges("c-1", limit=3)]
    page = await rig.client.pledge_page("c-1", limit=3)
    with pytest.raises(InvalidCursor):
        await rig.client.pledge_page("c-1", status="pending", cursor=page.next_cursor)

    assert seen == [f"p-{i}" for i in range(7)]


def _view(launch: dict[str, object]) -> dict[str, object]:
    goal = launch["goal"]
    return {
        "campaign_id": launch["campaign_id"],
        "title": launch["title"],
        "creator_id": launch["creator_id"],
        "status": "open",
        "outcome": None,
        "funding_model": launch["funding_model"],
        "kind": launch["kind"],
        "goal": goal,
        "total": {"amount_minor": 0, "currency": "EUR"},
        "pledge_count": 0,
        "goal_reached_at": None,
        "deadline": launch["deadline"],
        "tiers": [],
        "seq": launch["seq"],
    }


def _pledge(body: dict[str, object]) -> dict[str, object]:
    return {
        "pledge_id": body["pledge_id"],
        "campaign_id": body["campaign_id"],
        "status": body["status"],
        "backer_id": body["backer_id"],
        "amount": {"amount_minor": body["amount_minor"], "currency": body["currency"]},
        "tier_id": body["tier_id"],
        "seq": 1,
        "reason": None,
        "detail": None,
        "tenant_id": "tenant-a",
    }


async def test_stopping_an_iteration_early_drops_the_prefetched_page(rig: Rig) -> None:
    rig.fakes.readmodel.launched(STORED, "tenant-a")
    for i in range(5):
        doc = {**pledge_body(f"p-{i}"), "campaign_id": STORED, "status": "accepted"}
        rig.fakes.readmodel.pledges[(STORED, f"p-{i}")] = PledgeRow("accepted", _pledge(doc), None)

    pages = rig.client.pledges("c-1", limit=2)
    first = [await anext(pages), await anext(pages)]
    await pages.aclose()

    assert [p.pledge_id for p in first] == ["p-0", "p-1"]
    assert [p.pledge_id async for p in rig.client.pledges("c-1", limit=2)] == [
        f"p-{i}" for i in range(5)
    ]


def _listing(pages: list[bytes], asked: list[str | None]) -> PledgeflowClient:
    """A client whose pledge listing serves ``pages`` in turn (cursor ``"n"`` -> page n)."""

    def handler(request: httpx.Request) -> httpx.Response:
        cursor = request.url.params.get("cursor")
        asked.append(cursor)
        return httpx.Response(200, content=pages[int(cursor or 0)])

    return PledgeflowClient("http://api", KEY_A, transport=httpx.MockTransport(handler))


def _item(n: int) -> dict[str, object]:
    doc = {**pledge_body(f"p-{n}"), "campaign_id": "c-1", "status": "accepted"}
    item = _pledge(doc)
    del item["tenant_id"]
    return item


async def test_the_next_page_is_on_its_way_before_the_first_item_of_this_one() -> None:
    # The server builds page n+1 while the caller consumes page n.
    pages = [
        orjson.dumps({"data": [_item(2 * n), _item(2 * n + 1)], "next_cursor": str(n + 1)})
        for n in range(2)
    ] + [orjson.dumps({"data": [_item(4)], "next_cursor": None})]
    asked: list[str | None] = []
    async with _listing(pages, asked) as client:
        walk = client.pledges("c-1", limit=2)
        first = await anext(walk)
        asked_by_first_item = list(asked)
        rest = [p.pledge_id async for p in walk]

    assert asked_by_first_item == [None, "1"]
    assert [first.pledge_id, *rest] == [f"p-{i}" for i in range(5)]
    assert asked == [None, "1", "2"]


async def test_a_page_is_walked_whatever_the_order_of_its_members() -> None:
    pages = [
        b'{"next_cursor":"1","data":[%s]}' % orjson.dumps(_item(0)),
        b'{"data":[%s],"next_cursor":"2" , "extra_last":1}' % orjson.dumps(_item(1)),
        b'{"data":[%s],"next_cursor":null}\n' % orjson.dumps(_item(2)),
    ]
    asked: list[str | None] = []
    async with _listing(pages, asked) as client:
        with pytest.raises(ValidationError):  # the unknown member is still refused
            [p.pledge_id async for p in client.pledges("c-1")]
        pages[1] = b'{"data":[%s],"next_cursor":"2"}' % orjson.dumps(_item(1))
        seen = [p.pledge_id async for p in client.pledges("c-1")]

    assert seen == ["p-0", "p-1", "p-2"]
    assert asked[-3:] == [None, "1", "2"]
