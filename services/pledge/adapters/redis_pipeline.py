"""Automatic pipelining: concurrent callers share one Redis round trip.

Under load hundreds of requests are in flight at once; each awaiting its own Redis command
would cost a socket write, a read and a pool checkout per request. :class:`AutoPipeline`
queues the commands issued during one event-loop iteration and writes them as one pipeline
(no MULTI) on a single connection: each caller still gets exactly its own reply (or exception).

The connection is a bare asyncio protocol: commands are packed and replies parsed by
``hiredis`` (C), and replies are matched to callers in order (Redis answers a connection's
commands in the order it received them). redis-py's pipeline machinery cost several times
the command's own server time in Python per request. Errors keep redis-py's types
(``ResponseError``/``NoScriptError``, ``ConnectionError``, ``TimeoutError``), so callers see no
difference. Unusual connections (TLS, Sentinel, cluster) fall back to redis-py pipelines.
"""

from __future__ import annotations

import asyncio
import collections
import time
from typing import Any

import hiredis
import redis.asyncio as aioredis
from redis.asyncio.connection import Connection, UnixDomainSocketConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ReadOnlyError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

__all__ = ["REDIS_UNAVAILABLE", "AutoPipeline", "LuaScript"]

#: Redis errors that mean "not reachable right now": no connection, a timeout, a restarted
#: server still loading its data (``BusyLoadingError`` is a ``ConnectionError``), a replica
#: made read-only by a failover. The API answers them 503 with ``Retry-After`` (never 500);
#: the projector waits and retries.
REDIS_UNAVAILABLE: tuple[type[Exception], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    ReadOnlyError,
)


class LuaScript:
    """A Lua script run with EVALSHA, reloaded transparently after a Redis restart."""

    def __init__(self, source: str) -> None:
        import hashlib

        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    async def load(self, client: aioredis.Redis) -> None:
        """Make sure the server has the script (idempotent)."""
        await client.script_load(self.source)


class _RespProtocol(asyncio.Protocol):
    """One pipelined Redis connection: FIFO of waiters, replies parsed by hiredis."""

    def __init__(self) -> None:
        self.reader = hiredis.Reader(replyError=ResponseError)
        self.waiters: collections.deque[asyncio.Future[Any]] = collections.deque()
        self.transport: Any = None  # uvloop's transports are not asyncio.Transport instances
        self.lost: BaseException | None = None
        self.progress = time.monotonic()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def write(self, data: bytes, futures: list[asyncio.Future[Any]]) -> None:
        if not self.waiters:
            self.progress = time.monotonic()
        self.waiters.extend(futures)
        self.transport.write(data)

    def data_received(self, data: bytes) -> None:
        self.progress = time.monotonic()
        reader = self.reader
        reader.feed(data)
        waiters = self.waiters
        while True:
            try:
                reply = reader.gets()
            except hiredis.ProtocolError as exc:  # stream out of sync: drop the connection
                self.fail(RedisConnectionError(f"Redis protocol error: {exc}"))
                return
            if reply is False:
                return
            if not waiters:  # unsolicited data: nothing can be matched any more
                self.fail(RedisConnectionError("Redis reply without a request"))
                return
            future = waiters.popleft()
            if future.done():
                continue
            if isinstance(reply, ResponseError):
                message = str(reply)
                if message.startswith("NOSCRIPT"):
                    future.set_exception(NoScriptError(message))
                else:
                    future.set_exception(reply)
            else:
                future.set_result(reply)

    def fail(self, exc: BaseException) -> None:
        """Close the connection; every caller still waiting gets ``exc``."""
        if self.lost is None:
            self.lost = exc
        if self.transport is not None:
            self.transport.abort()
        waiters, self.waiters = self.waiters, collections.deque()
        for future in waiters:
            if not future.done():
                future.set_exception(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self.fail(RedisConnectionError(f"connection to Redis lost: {exc or 'closed'}"))


class AutoPipeline:
    """Coalesce commands issued in the same loop iteration into one pipeline."""

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        max_batch: int = 1024,
        timeout: float = 5.0,
        connect_timeout: float = 5.0,
    ) -> None:
        self.client = client
        self.max_batch = max_batch
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self._queue: list[tuple[bytes, asyncio.Future[Any]]] = []
        self._scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._conn: _RespProtocol | None = None
        self._connecting: asyncio.Task[_RespProtocol] | None = None
        self._watchdog: asyncio.TimerHandle | None = None
        pool = client.connection_pool
        self._kwargs = dict(pool.connection_kwargs)
        self._direct = (
            pool.connection_class in (Connection, UnixDomainSocketConnection)
            and ("path" in self._kwargs or "host" in self._kwargs)
            and not self._kwargs.get("decode_responses")
        )

    def execute(self, *args: Any) -> asyncio.Future[Any]:
        """Queue one command; the future resolves to its reply (or its error)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queue.append((hiredis.pack_command(args) if self._direct else args, future))  # type: ignore[arg-type]
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
        if not queue:
            return
        conn = self._conn
        if self._direct and conn is not None and conn.lost is None:
            self._write(conn, queue)
            return
        task = asyncio.get_running_loop().create_task(
            self._send_direct(queue) if self._direct else self._send_redis_py(queue)
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _write(self, conn: _RespProtocol, items: list[tuple[Any, asyncio.Future[Any]]]) -> None:
        try:
            conn.write(b"".join([packed for packed, _ in items]), [future for _, future in items])
        except Exception as exc:  # never leave a caller waiting
            conn.fail(RedisConnectionError(f"cannot write to Redis: {exc!r}"))
            for _, future in items:
                if not future.done():
                    future.set_exception(exc)
            return
        if self._watchdog is None:
            self._watchdog = asyncio.get_running_loop().call_later(1.0, self._check, conn)

    def _check(self, conn: _RespProtocol) -> None:
        """Once a second while replies are due: a connection silent for ``timeout`` is
        dropped, failing its callers (as redis-py's socket timeout would)."""
        self._watchdog = None
        if conn.lost is not None or not conn.waiters:
            return
        if time.monotonic() - conn.progress > self.timeout:
            conn.fail(RedisTimeoutError("Timeout reading from Redis"))
            return
        self._watchdog = asyncio.get_running_loop().call_later(1.0, self._check, conn)

    async def _connection(self) -> _RespProtocol:
        conn = self._conn
        if conn is not None and conn.lost is None:
            return conn
        if self._connecting is None:
            self._connecting = asyncio.get_running_loop().create_task(self._connect())
        try:
            return await asyncio.shield(self._connecting)
        finally:
            if self._connecting is not None and self._connecting.done():
                self._connecting = None

    async def _connect(self) -> _RespProtocol:
        loop = asyncio.get_running_loop()
        kw = self._kwargs
        try:
            if "path" in kw:
                opening = loop.create_unix_connection(_RespProtocol, kw["path"])
            else:
                opening = loop.create_connection(_RespProtocol, kw["host"], int(kw["port"]))
            _, conn = await asyncio.wait_for(opening, self.connect_timeout)
        except (TimeoutError, OSError) as exc:
            raise RedisConnectionError(f"cannot connect to Redis: {exc!r}") from exc
        setup: list[tuple[Any, ...]] = []
        if kw.get("password"):
            user = kw.get("username")
            setup.append(("AUTH", user, kw["password"]) if user else ("AUTH", kw["password"]))
        if int(kw.get("db") or 0):
            setup.append(("SELECT", int(kw["db"])))
        if setup:
            futures = [loop.create_future() for _ in setup]
            conn.write(b"".join(hiredis.pack_command(cmd) for cmd in setup), futures)  # type: ignore[arg-type]
            try:
                await asyncio.wait_for(asyncio.gather(*futures), self.connect_timeout)
            except BaseException:
                conn.fail(RedisConnectionError("Redis connection setup failed"))
                raise
        self._conn = conn
        return conn

    async def _send_direct(self, items: list[tuple[Any, asyncio.Future[Any]]]) -> None:
        try:
            conn = await self._connection()
        except Exception as exc:
            for _, future in items:
                if not future.done():
                    future.set_exception(exc)
            return
        self._write(conn, items)

    async def _send_redis_py(self, items: list[tuple[Any, asyncio.Future[Any]]]) -> None:
        for start in range(0, len(items), self.max_batch):
            chunk = items[start : start + self.max_batch]
            try:
                pipe = self.client.pipeline(transaction=False)
                for args, _ in chunk:
                    pipe.execute_command(*args)
                results = await pipe.execute(raise_on_error=False)
            except Exception as exc:  # connection-level failure: every caller gets it
                for _, future in chunk:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), result in zip(chunk, results, strict=True):
                if future.done():
                    continue
                if isinstance(result, Exception):
                    future.set_exception(result)
                else:
                    future.set_result(result)

    async def aclose(self) -> None:
        """Wait for the commands in flight, then close the connection."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        conn = self._conn
        if conn is not None and conn.waiters:
            await asyncio.gather(*list(conn.waiters), return_exceptions=True)
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        if conn is not None and conn.transport is not None:
            conn.transport.close()
        self._conn = None
