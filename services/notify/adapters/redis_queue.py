"""The Redis adapter of the delivery queue: a due-time sorted set plus one hash per notification.

Keys (under the deployment's prefix): ``notify:due`` (ZSET id -> due ms) and
``notify:n:<id>`` (HASH: ``data`` = the stored notification, ``lane``, ``attempts``,
``first_ms``, ``state`` pending|sent|dead|skipped). A claim moves the due time forward by the
lease instead of removing the item, so a worker killed mid-send leaves it due again when the
lease ends (the source of the "at most one repeat per crash" in docs/notify.md). Finished
items keep their hash for ``keep_seconds`` so a redelivered event does not enqueue them again.
"""

from __future__ import annotations

from typing import Any, cast

import redis.asyncio as aioredis

from services.notify.domain import Notification
from services.notify.ports import Final, Queued
from services.notify.records import decode_notification, encode_notification, lane_of

__all__ = ["RedisDeliveryQueue"]

_ENQUEUE = """
if redis.call('HSETNX', KEYS[2], 'data', ARGV[1]) == 0 then return 0 end
redis.call('HSET', KEYS[2], 'lane', ARGV[2], 'attempts', 0, 'state', 'pending')
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[4])
return 1
"""

_CLAIM = """
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score or tonumber(score) > tonumber(ARGV[2]) then return nil end
if redis.call('HGET', KEYS[2], 'state') ~= 'pending' then
  redis.call('ZREM', KEYS[1], ARGV[1])
  return nil
end
redis.call('ZADD', KEYS[1], ARGV[2] + ARGV[3], ARGV[1])
return redis.call('HMGET', KEYS[2], 'data', 'lane', 'attempts', 'first_ms')
"""


class RedisDeliveryQueue:
    """See the module docstring; ``prefix`` namespaces the keys (one per test or deployment)."""

    def __init__(
        self, client: aioredis.Redis, *, prefix: str = "", keep_seconds: int = 30 * 86400
    ) -> None:
        self._r = client
        self._due = f"{prefix}notify:due"
        self._item = f"{prefix}notify:n:"
        self._keep = keep_seconds
        self._enqueue = client.register_script(_ENQUEUE)
        self._claim = client.register_script(_CLAIM)

    async def enqueue(self, notification: Notification, now_ms: int) -> bool:
        nid = notification.notification_id
        added = await self._enqueue(
            keys=[self._due, self._item + nid],
            args=[encode_notification(notification), lane_of(notification), now_ms, nid],
        )
        return bool(added)

    async def due(self, now_ms: int, limit: int) -> list[tuple[str, str]]:
        ids = [
            i.decode() if isinstance(i, bytes) else str(i)
            for i in await self._r.zrangebyscore(self._due, "-inf", now_ms, start=0, num=limit)
        ]
        if not ids:
            return []
        async with self._r.pipeline(transaction=False) as pipe:
            for nid in ids:
                pipe.hget(self._item + nid, "lane")
            lanes = await pipe.execute()
        return [(nid, _text(lane)) for nid, lane in zip(ids, lanes, strict=True) if lane]

    async def push_back(self, notification_id: str, due_ms: int) -> None:
        await self._r.zadd(self._due, {notification_id: due_ms}, xx=True)

    async def claim(self, notification_id: str, now_ms: int, lease_ms: int) -> Queued | None:
        row = cast(
            "list[Any] | None",
            await self._claim(
                keys=[self._due, self._item + notification_id],
                args=[notification_id, now_ms, lease_ms],
            ),
        )
        if not row or row[0] is None:
            return None
        data, lane, attempts, first_ms = row
        return Queued(
            decode_notification(data),
            _text(lane),
            int(attempts or 0),
            int(first_ms) if first_ms else None,
        )

    async def retry_at(self, notification_id: str, due_ms: int, attempts: int, now_ms: int) -> None:
        key = self._item + notification_id
        async with self._r.pipeline(transaction=True) as pipe:
            pipe.hset(key, "attempts", attempts)
            pipe.hsetnx(key, "first_ms", now_ms)
            pipe.zadd(self._due, {notification_id: due_ms})
            await pipe.execute()

    async def finish(self, notification_id: str, state: Final) -> None:
        key = self._item + notification_id
        async with self._r.pipeline(transaction=True) as pipe:
            pipe.hset(key, "state", state)
            pipe.zrem(self._due, notification_id)
            pipe.expire(key, self._keep)
            await pipe.execute()

    async def redrive(self, notification: Notification, now_ms: int) -> None:
        nid = notification.notification_id
        key = self._item + nid
        async with self._r.pipeline(transaction=True) as pipe:
            pipe.delete(key)
            pipe.hset(
                key,
                mapping={
                    "data": encode_notification(notification),
                    "lane": lane_of(notification),
                    "attempts": 0,
                    "state": "pending",
                },
            )
            pipe.zadd(self._due, {nid: now_ms})
            await pipe.execute()

    async def pending(self) -> int:
        return int(await self._r.zcard(self._due))

    async def state(self, notification_id: str) -> str | None:
        """The item's state (pending, sent, dead, skipped) or None if unknown."""
        value = await self._r.hget(self._item + notification_id, "state")
        return _text(value) if value is not None else None


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
