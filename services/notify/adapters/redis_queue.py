"""The Redis adapter of the delivery queue: a due-time sorted set plus one hash per notification.

Keys (under the deployment's prefix): ``notify:due:<p>`` (ZSET id -> due ms, one per
partition *p* of the campaign's key, so only the worker owning *p* delivers, and records on,
the campaign's notify stream) and ``notify:n:<id>`` (HASH: ``data`` = the stored
notification, ``lane``, ``part``, ``attempts``, ``first_ms``, ``state``
pending|sent|dead|skipped). A claim moves the due time forward by the
lease instead of removing the item, so a worker killed mid-send leaves it due again when the
lease ends (the source of the "at most one repeat per crash" in docs/notify.md). Finished
items keep their hash for ``keep_seconds`` so a redelivered event does not enqueue them again.

**Fencing** (``fenced=True``, the worker): ``notify:owner:<p>`` holds partition *p*'s owner
token. A worker takes a new token (INCR) when the group assigns it *p* (:meth:`acquire`), and
its claims and push-backs on *p* are refused once another worker took a newer one: a zombie
(a worker frozen until the group gave its partitions away, then resumed) claims nothing, so
it sends nothing new. A push-back only ever moves an item later (``ZADD XX GT``), never into
another worker's lease.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, cast

import redis.asyncio as aioredis

from services.notify.domain import Notification
from services.notify.ports import Final, Queued
from services.notify.records import decode_notification, encode_notification, lane_of

__all__ = ["RedisDeliveryQueue"]

_ENQUEUE = """
if redis.call('HSETNX', KEYS[2], 'data', ARGV[1]) == 0 then return 0 end
redis.call('HSET', KEYS[2], 'lane', ARGV[2], 'attempts', 0, 'state', 'pending', 'part', ARGV[5])
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[4])
return 1
"""

_DUE = """
local out = {}
for k = 1, #KEYS do
  local found = redis.call(
    'ZRANGEBYSCORE', KEYS[k], '-inf', ARGV[1], 'WITHSCORES', 'LIMIT', 0, ARGV[2])
  for j = 1, #found, 2 do
    local id = found[j]
    local lane = redis.call('HGET', ARGV[3] .. id, 'lane')
    if lane then
      out[#out + 1] = id
      out[#out + 1] = lane
      out[#out + 1] = ARGV[3 + k]
      out[#out + 1] = found[j + 1]
    end
  end
end
return out
"""

_FINISH = """
redis.call('HSET', KEYS[2], 'state', ARGV[2])
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[2], ARGV[3])
"""

_CLAIM = """
if ARGV[4] ~= '' and redis.call('GET', KEYS[3]) ~= ARGV[4] then return nil end
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score or tonumber(score) > tonumber(ARGV[2]) then return nil end
if redis.call('HGET', KEYS[2], 'state') ~= 'pending' then
  redis.call('ZREM', KEYS[1], ARGV[1])
  return nil
end
redis.call('ZADD', KEYS[1], ARGV[2] + ARGV[3], ARGV[1])
return redis.call('HMGET', KEYS[2], 'data', 'lane', 'attempts', 'first_ms')
"""


_PUSH_BACK = """
if ARGV[1] ~= '' and redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
for i = 2, #ARGV, 2 do
  redis.call('ZADD', KEYS[1], 'XX', 'GT', ARGV[i + 1], ARGV[i])
end
return 1
"""


class RedisDeliveryQueue:
    """See the module docstring; ``prefix`` namespaces the keys (one per test or deployment)."""

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        prefix: str = "",
        partition_of: Callable[[str], int] = lambda _campaign: 0,
        keep_seconds: int = 30 * 86400,
        fenced: bool = False,
    ) -> None:
        self._r = client
        self._due_prefix = f"{prefix}notify:due:"
        self._item = f"{prefix}notify:n:"
        self.partition_of = partition_of
        self._keep = keep_seconds
        self._enqueue = client.register_script(_ENQUEUE)
        self._claim = client.register_script(_CLAIM)
        self._due_script = client.register_script(_DUE)
        self._finish = client.register_script(_FINISH)
        self._push_back = client.register_script(_PUSH_BACK)
        self._owner_prefix = f"{prefix}notify:owner:"
        #: fenced: partition -> this worker's owner token (claims need one); else unfenced
        self._tokens: dict[int, str] | None = {} if fenced else None

    def _due(self, partition: int) -> str:
        return f"{self._due_prefix}{partition}"

    def due_key(self, partition: int) -> str:
        """The Redis key of partition ``partition``'s due set (for atomic writers beside it)."""
        return self._due(partition)

    @property
    def item_prefix(self) -> str:
        """The Redis key prefix of the notifications' hashes."""
        return self._item

    async def enqueue(self, notification: Notification, now_ms: int) -> bool:
        nid = notification.notification_id
        part = self.partition_of(notification.campaign_id)
        added = await self._enqueue(
            keys=[self._due(part), self._item + nid],
            args=[encode_notification(notification), lane_of(notification), now_ms, nid, part],
        )
        return bool(added)

    async def due(
        self, now_ms: int, limit: int, partitions: Iterable[int]
    ) -> list[tuple[str, str, int, float]]:
        parts = list(partitions)
        if not parts:
            return []
        flat = await self._due_script(
            keys=[self._due(p) for p in parts], args=[now_ms, limit, self._item, *parts]
        )
        return [
            (_text(flat[i]), _text(flat[i + 1]), int(flat[i + 2]), float(flat[i + 3]))
            for i in range(0, len(flat), 4)
        ]

    async def acquire(self, partitions: Iterable[int]) -> None:
        """Take a new owner token for each partition (the group assigned them to this worker):
        from now on an older owner's claims on them are refused."""
        if self._tokens is None:
            return
        for part in partitions:
            token = await self._r.incr(self._owner_prefix + str(part))
            self._tokens[part] = str(token)

    def release(self, partitions: Iterable[int]) -> None:
        """Forget the tokens of partitions the group took away (no more claims on them)."""
        if self._tokens is not None:
            for part in partitions:
                self._tokens.pop(part, None)

    async def owns(self, partition: int) -> bool:
        """Whether this worker's token on ``partition`` is still the newest (always, unfenced)."""
        if self._tokens is None:
            return True
        mine = self._tokens.get(partition)
        current = await self._r.get(self._owner_prefix + str(partition))
        return mine is not None and current is not None and _text(current) == mine

    def _token(self, partition: int) -> str | None:
        """The token claims on ``partition`` carry ('' unfenced); None: not ours, no claim."""
        if self._tokens is None:
            return ""
        return self._tokens.get(partition)

    async def push_back(self, partition: int, due: dict[str, float]) -> None:
        token = self._token(partition)
        if due and token is not None:
            args: list[str | float] = [token]
            for nid, when in due.items():
                args += [nid, when]
            await self._push_back(
                keys=[self._due(partition), self._owner_prefix + str(partition)], args=args
            )

    async def claim(
        self, notification_id: str, partition: int, now_ms: int, lease_ms: int
    ) -> Queued | None:
        token = self._token(partition)
        if token is None:
            return None
        row = cast(
            "list[Any] | None",
            await self._claim(
                keys=[
                    self._due(partition),
                    self._item + notification_id,
                    self._owner_prefix + str(partition),
                ],
                args=[notification_id, now_ms, lease_ms, token],
            ),
        )
        if not row or row[0] is None:
            return None
        data, lane, attempts, first_ms = row
        return Queued(
            decode_notification(data),
            _text(lane),
            partition,
            int(attempts or 0),
            int(first_ms) if first_ms else None,
        )

    async def retry_at(self, item: Queued, due_ms: int, attempts: int, now_ms: int) -> None:
        key = self._item + item.notification.notification_id
        async with self._r.pipeline(transaction=True) as pipe:
            pipe.hset(key, "attempts", attempts)
            pipe.hsetnx(key, "first_ms", now_ms)
            pipe.zadd(self._due(item.partition), {item.notification.notification_id: due_ms})
            await pipe.execute()

    async def finish(self, item: Queued, state: Final) -> None:
        nid = item.notification.notification_id
        await self._finish(
            keys=[self._due(item.partition), self._item + nid], args=[nid, state, self._keep]
        )

    async def redrive(self, notification: Notification, now_ms: int) -> None:
        nid = notification.notification_id
        key = self._item + nid
        part = self.partition_of(notification.campaign_id)
        async with self._r.pipeline(transaction=True) as pipe:
            pipe.delete(key)
            pipe.hset(
                key,
                mapping={
                    "data": encode_notification(notification),
                    "lane": lane_of(notification),
                    "part": part,
                    "attempts": 0,
                    "state": "pending",
                },
            )
            pipe.zadd(self._due(part), {nid: now_ms})
            await pipe.execute()

    async def pending(self, partitions: Iterable[int]) -> int:
        total = 0
        for part in partitions:
            total += int(await self._r.zcard(self._due(part)))
        return total

    async def state(self, notification_id: str) -> str | None:
        """The item's state (pending, sent, dead, skipped) or None if unknown."""
        value = await self._r.hget(self._item + notification_id, "state")
        return _text(value) if value is not None else None


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
