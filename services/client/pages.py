"""Walking a cursor listing page by page (the client's ``campaigns()``, ``pledges()`` and
``events()`` iterators).

A page's request is on the wire before the previous page is validated and handed out, so the
server builds page n+1 while the client parses page n and the caller consumes it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, Protocol, TypeVar

import orjson

__all__ = ["REQUEST_SENT", "FetchPage", "next_cursor", "walk"]

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)


class _Page(Protocol[T_co]):
    @property
    def data(self) -> Sequence[T_co]: ...

    @property
    def next_cursor(self) -> str | None: ...


class _PageModel(Protocol[T_co]):
    def model_validate_json(self, json_data: bytes) -> _Page[T_co]: ...


#: A page's raw body for a cursor (None: the first page); ``extensions`` go to httpx.
FetchPage = Callable[[str | None, dict[str, Any]], Awaitable[bytes]]
_CURSOR_MEMBER = b'"next_cursor":'
#: httpcore's trace events once a request has been written out (the server has it).
REQUEST_SENT = frozenset({"http11.send_request_body.complete", "http2.send_request_body.complete"})


def next_cursor(raw: bytes) -> str | None:
    """A page's ``next_cursor`` without parsing its items: the API writes it as the page's
    last member. Anything else (another order, a malformed page) is read by a full parse;
    the page's validation then judges it. JSON escapes every quote inside a string, so
    ``"next_cursor":`` can only be a member name."""
    at = raw.rfind(_CURSOR_MEMBER)
    tail = raw[at + len(_CURSOR_MEMBER) :].rstrip()
    if at >= 0 and tail.endswith(b"}"):
        try:
            value = orjson.loads(tail[:-1])
        except orjson.JSONDecodeError:
            pass
        else:
            if value is None or isinstance(value, str):
                return value
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    cursor = doc.get("next_cursor") if isinstance(doc, dict) else None
    return cursor if isinstance(cursor, str) else None


async def walk(fetch: FetchPage, model: _PageModel[T]) -> AsyncIterator[T]:
    """Every item of a cursor listing. The next page is requested as soon as this one's
    cursor is read (before its items are validated), and its request is on the wire before
    this page is validated and handed out: the server builds the next page while this
    process parses and the caller consumes this one."""
    raw = await fetch(None, {})
    while True:
        cursor = next_cursor(raw)
        upcoming = None
        if cursor is not None:
            sent = asyncio.Event()

            async def trace(name: str, info: dict[str, Any], sent: asyncio.Event = sent) -> None:
                if name in REQUEST_SENT:
                    sent.set()

            upcoming = asyncio.ensure_future(fetch(cursor, {"trace": trace}))
            on_the_wire = asyncio.ensure_future(sent.wait())
            try:  # returns at once with transports that do not trace (in-process ASGI)
                await asyncio.wait((upcoming, on_the_wire), return_when=asyncio.FIRST_COMPLETED)
            finally:
                on_the_wire.cancel()
        try:
            for item in model.model_validate_json(raw).data:
                yield item
        except BaseException:  # the caller stopped early (or failed): drop the prefetch
            if upcoming is not None:
                upcoming.cancel()
            raise
        if upcoming is None:
            return
        raw = await upcoming
