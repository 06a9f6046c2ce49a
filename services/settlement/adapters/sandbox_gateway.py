"""The sandbox payment gateway: the embedded default of ``make run`` and of the tests.

Its state lives in Redis so it survives a worker restart, as a real processor's would: every
answer is stored under its idempotency key, and per pledge the counts of successful and failed
collections, voids, authorizations and the refunded amount. One Lua script decides a call and
records it atomically, so a key answered once is never executed again, even when two workers
(a zombie and its replacement) race on it. The test-token rules are
``services.settlement.gateway.token_answer``: the script only picks between the two answers
Python computed (no earlier failure / an earlier failure), so the rules live in one place.

Calls made in the same event-loop turn go to Redis in one pipeline (a round trip per batch,
not per call): the worker has many captures in flight at once.
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from services.settlement.domain import GatewayCall, GatewayResult
from services.settlement.gateway import SLOW_TOKEN, GatewayUnavailable, token_answer

__all__ = ["SandboxGateway"]

# KEYS: answer key, pledge hash. ARGV: answer if no earlier failure, answer otherwise,
# kind, amount, ok flag of each answer ("1"/"0").
_DECIDE = """
local known = redis.call('GET', KEYS[1])
if known then return known end
local failed = tonumber(redis.call('HGET', KEYS[2], 'failed') or '0')
local answer, ok = ARGV[1], ARGV[5]
if failed > 0 then answer, ok = ARGV[2], ARGV[6] end
local kind = ARGV[3]
if kind == 'capture' or kind == 'charge' then
  if ok == '1' then redis.call('HINCRBY', KEYS[2], 'collected', 1)
  else redis.call('HINCRBY', KEYS[2], 'failed', 1) end
elseif kind == 'refund' then
  if ok == '1' then redis.call('HINCRBY', KEYS[2], 'refunded_minor', ARGV[4]) end
else
  redis.call('HINCRBY', KEYS[2], kind, 1)
end
redis.call('SET', KEYS[1], answer)
return answer
"""


def _counts(raw: dict[Any, Any]) -> dict[str, int]:
    return {(k.decode() if isinstance(k, bytes) else str(k)): int(v) for k, v in raw.items()}


class SandboxGateway:
    """A :class:`~services.settlement.gateway.PaymentGateway` on Redis with test tokens."""

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        prefix: str = "pledgeflow:sandbox:",
        latency_seconds: float = 0.0,
        slow_seconds: float = 2.0,
        max_batch: int = 256,
    ) -> None:
        self._redis = client
        self._prefix = prefix
        self._latency = latency_seconds
        self._slow = slow_seconds
        self._script = client.register_script(_DECIDE)
        self._batch = max_batch
        self._pending: list[tuple[GatewayCall, asyncio.Future[bytes]]] = []
        self._flusher: asyncio.Future[None] | None = None

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        max_connections: int = 64,
        prefix: str = "pledgeflow:sandbox:",
        latency_seconds: float = 0.0,
        slow_seconds: float = 2.0,
    ) -> SandboxGateway:
        """A sandbox on its own connection pool; calls beyond ``max_connections`` wait for a
        connection instead of failing (the worker bounds its calls in flight anyway)."""
        pool = aioredis.BlockingConnectionPool.from_url(url, max_connections=max_connections)
        return cls(
            aioredis.Redis(connection_pool=pool),
            prefix=prefix,
            latency_seconds=latency_seconds,
            slow_seconds=slow_seconds,
        )

    def _pledge_key(self, campaign_id: str, pledge_id: str) -> str:
        return f"{self._prefix}pledge:{campaign_id}/{pledge_id}"

    @staticmethod
    def _answer(call: GatewayCall, failed_before: int) -> tuple[bytes, str]:
        ok, code, detail = token_answer(call, failed_before)
        digest = hashlib.sha256(call.key.encode()).hexdigest()[:20]
        reference = f"sbx_{call.kind}_{digest}"
        body = {"ok": ok, "code": code, "detail": detail, "reference": reference}
        return orjson.dumps(body), "1" if ok else "0"

    async def _decide(self, call: GatewayCall) -> GatewayResult:
        delay = self._latency + (self._slow if call.payment_token == SLOW_TOKEN else 0.0)
        if delay > 0:
            await asyncio.sleep(delay)
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._pending.append((call, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.ensure_future(self._flush())
        raw = await future
        answer: dict[str, Any] = orjson.loads(raw)
        return GatewayResult(
            call=call,
            ok=bool(answer["ok"]),
            reference=str(answer["reference"]),
            code=str(answer["code"]),
            detail=str(answer["detail"]),
        )

    async def _flush(self) -> None:
        """Send the calls waiting now in one pipeline (one round trip, not one per call)."""
        await asyncio.sleep(0)  # let the calls of this loop turn join the batch
        while self._pending:
            batch, self._pending = self._pending[: self._batch], self._pending[self._batch :]
            pipe = self._redis.pipeline(transaction=False)
            for call, _ in batch:
                first, first_ok = self._answer(call, 0)
                retried, retried_ok = self._answer(call, 1)
                keys = [
                    f"{self._prefix}answer:{call.key}",
                    self._pledge_key(call.campaign_id, call.pledge_id),
                ]
                args = [first, retried, call.kind, call.amount.amount_minor, first_ok, retried_ok]
                await self._script(keys=keys, args=args, client=pipe)
            try:
                raws = await pipe.execute()
            except RedisError as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(GatewayUnavailable(f"sandbox gateway: {exc}"))
                continue
            for (_, future), raw in zip(batch, raws, strict=True):
                if not future.done():
                    future.set_result(raw)

    async def authorize(self, call: GatewayCall) -> GatewayResult:
        return await self._decide(call)

    async def capture(self, call: GatewayCall) -> GatewayResult:
        return await self._decide(call)

    async def void(self, call: GatewayCall) -> GatewayResult:
        return await self._decide(call)

    async def charge(self, call: GatewayCall) -> GatewayResult:
        return await self._decide(call)

    async def refund(self, call: GatewayCall) -> GatewayResult:
        return await self._decide(call)

    async def aclose(self) -> None:
        await self._redis.aclose()

    async def pledge_counts(self, campaign_id: str, pledge_id: str) -> dict[str, int]:
        """What the sandbox did for one pledge: ``collected``, ``failed``, ``void``,
        ``authorize``, ``refunded_minor`` (absent ones are 0)."""
        raw = await self._redis.hgetall(self._pledge_key(campaign_id, pledge_id))
        return _counts(raw)

    async def campaign_counts(self, campaign_id: str) -> dict[str, dict[str, int]]:
        """:meth:`pledge_counts` of every pledge of a campaign the sandbox has seen."""
        pattern = f"{self._prefix}pledge:{campaign_id}/*"
        out: dict[str, dict[str, int]] = {}
        async for key in self._redis.scan_iter(match=pattern, count=1000):
            name = key.decode() if isinstance(key, bytes) else str(key)
            out[name.rsplit("/", 1)[1]] = _counts(await self._redis.hgetall(name))
        return out

    async def forget(self) -> None:
        """Delete every key under this sandbox's prefix (tests clean up after themselves)."""
        async for key in self._redis.scan_iter(match=f"{self._prefix}*", count=1000):
            await self._redis.delete(key)
