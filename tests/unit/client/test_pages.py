"""The listing walk over a real loopback HTTP connection: the event it waits for before
validating a page (the next request written out) is one httpcore really emits."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import orjson

from services.client.pages import REQUEST_SENT, walk
from services.pledge.api.models import CampaignPage


async def test_the_walk_sees_the_next_request_written_out_on_a_real_connection() -> None:
    pages = {
        "": orjson.dumps({"data": [], "next_cursor": "1"}),
        "1": orjson.dumps({"data": [], "next_cursor": None}),
    }

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while head := await reader.readuntil(b"\r\n\r\n"):
                target = head.split(b" ", 2)[1].decode()
                body = pages[httpx.URL(target).params.get("cursor", "")]
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
                await writer.drain()
        except asyncio.IncompleteReadError:  # the client closed its connection
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    events: list[str] = []
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:

            async def fetch(cursor: str | None, extensions: dict[str, Any]) -> bytes:
                if "trace" in extensions:
                    trace = extensions["trace"]

                    async def recorded(name: str, info: dict[str, Any]) -> None:
                        events.append(name)
                        await trace(name, info)

                    extensions = {"trace": recorded}
                params = {"cursor": cursor} if cursor else {}
                response = await http.get("/list", params=params, extensions=extensions)
                return response.content

            assert [item async for item in walk(fetch, CampaignPage)] == []
    finally:
        server.close()
        await server.wait_closed()

    assert REQUEST_SENT & set(events)
