"""A webhook receiver for the notify and end-to-end benchmarks, run as its own process (so its
CPU is not the dispatcher's): ``POST /hook/<name>/<delay_ms>`` answers 200 after ``delay_ms``
(a network and receiver latency stand-in). ``python -m bench.webhook_sink PORT [ARRIVALS]``:
with ``ARRIVALS``, each request's arrival (``time.time()``) and body are appended to that file,
one line each (``<seconds> <body>``), for latency measured against another process's clock
reading."""

from __future__ import annotations

import asyncio
import sys
import time
from typing import IO, Any

import uvicorn

ARRIVALS: IO[bytes] | None = None


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    if ARRIVALS is not None:
        ARRIVALS.write(b"%.6f %s\n" % (time.time(), body.replace(b"\n", b" ")))
        ARRIVALS.flush()
    delay_ms = int(scope["path"].rstrip("/").rsplit("/", 1)[-1] or 0)
    if delay_ms:
        await asyncio.sleep(delay_ms / 1000)
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b""})


if __name__ == "__main__":
    if len(sys.argv) > 2:
        ARRIVALS = open(sys.argv[2], "ab")  # noqa: SIM115  # open for the process's life
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", lifespan="off")
