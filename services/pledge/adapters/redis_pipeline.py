"""Automatic pipelining: concurrent callers share one Redis round trip.

Under load hundreds of requests are in flight at once; each awaiting its own Redis command
would cost a socket write, a read and a pool checkout per request. :class:`AutoPipeline`
queues the commands issued during one event-loop iteration and sends them as one pipeline
(no MULTI): each caller still gets exactly its own reply (or exception).
"""

from __future__ import annotations

import asyncio
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError

__all__ = ["AutoPipeline", "LuaScript"]


class LuaScript:
    """A Lua script run with EVALSHA, reloaded transparently after a Redis restart."""

    def __init__(self, source: str) -> None:
        import hashlib

        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    async def load(self, client: aioredis.Redis) -> None:
        """Make sure the server has the script (idempotent)."""
        await client.script_load(self.source)


class AutoPipeline:
    """Coalesce commands issued in the same loop iteration into one pipeline."""

    def __init__(self, client: aioredis.Redis, *, max_batch: int = 1024) -> None:
        self.client = client
        self.max_batch = max_batch
        self._queue: list[tuple[tuple[Any, ...], asyncio.Future[Any]]] = []
        self._scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()

    def execute(self, *args: Any) -> asyncio.Future[Any]:
        """Queue one command; the future resolves to its reply (or its error)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queue.append((args, future))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)
        return future

    async def evalsha(self, script: LuaScript, keys: list[str], args: list[Any]) -> Any:
        """Run ``script`` through the pipeline; a NOSCRIPT reply loads it and retries once."""
        try:
            return await self.execute("EVALSHA", script.sha, len(keys), *keys, *args)
        except NoScriptError:
            await script.load(self.client)
            return await self.execute("EVALSHA", script.sha, len(keys), *keys, *args)

    def _flush(self) -> None:
        self._scheduled = False
        queue, self._queue = self._queue, []
        for start in range(0, len(queue), self.max_batch):
            task = asyncio.get_running_loop().create_task(
                self._send(queue[start : start + self.max_batch])
            )
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _send(self, items: list[tuple[tuple[Any, ...], asyncio.Future[Any]]]) -> None:
        try:
            if len(items) == 1:
                args, future = items[0]
                try:
                    result = await self.client.execute_command(*args)  # type: ignore[no-untyped-call]
                except Exception as exc:
                    if not future.done():
                        future.set_exception(exc)
                    return
                if not future.done():
                    future.set_result(result)
                return
            pipe = self.client.pipeline(transaction=False)
            for args, _ in items:
                pipe.execute_command(*args)
            results = await pipe.execute(raise_on_error=False)
        except Exception as exc:  # connection-level failure: every caller gets it
            for _, future in items:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future), result in zip(items, results, strict=True):
            if future.done():
                continue
            if isinstance(result, Exception):
                future.set_exception(result)
            else:
                future.set_result(result)

    async def aclose(self) -> None:
        """Wait for the pipelines in flight."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
