"""A webhook receiver for the notify benchmark, run as its own process (so its CPU is not the
dispatcher's): ``POST /hook/<name>/<delay_ms>`` answers 200 after ``delay_ms`` (a network and
receiver latency stand-in). ``python -m bench.webhook_sink PORT``."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import uvicorn


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    delay_ms = int(scope["path"].rstrip("/").rsplit("/", 1)[-1] or 0)
    if delay_ms:
        await asyncio.sleep(delay_ms / 1000)
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b""})


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", lifespan="off")
