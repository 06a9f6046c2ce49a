"""The Redis adapter of the delivery queue: one due-time sorted set per lane and partition,
an index of the lanes by their earliest due time, and one hash per notification.

Keys (under the deployment's prefix), per partition *p* of the campaign's key (only the worker
owning *p* delivers, and records on, the campaign's notify stream):

* ``notify:due:<p>:<lane>`` (ZSET id -> due ms): the lane's notifications (a lane is a webhook
  endpoint, ``webhook:<id>``, or the SMTP relay, ``email``);
* ``notify:lanes:<p>`` (ZSET lane -> the earliest due time in that lane): kept exact by every
  script that touches a lane, so the lanes with something due are one range read;
* ``notify:n:<id>`` (HASH: ``data`` = the stored notification, ``lane`` (for e-mail the
  person's ``email|<tenant>/<kind>/<person>``), ``part``, ``attempts``, ``first_ms``,
  ``state`` pending|sent|dead|skipped).

:meth:`RedisDeliveryQueue.take` is the dispatcher's one call per pump: told how many slots each
lane has free, it reads only that many due items of each lane with room (a full lane's backlog
is never read, nor moved), and claims them in the same script. A webhook lane's free slots go
to its oldest due item across the partitions, then to the next ones of that item's partition,
then to the oldest of the others: nothing starves, and what one pump starts in a lane is mostly
one partition's, recorded by one Kafka transaction rather than one each (e-mail: strictly
oldest first, one per person). A claim moves the due
time forward by the lease instead of removing the item, so a worker killed mid-send leaves it
due again when the lease ends (the source of the "at most one repeat per crash" in
docs/notify.md). Finished items keep their hash for ``keep_seconds`` so a redelivered event
does not enqueue them again.

**Fencing** (``fenced=True``, the worker): ``notify:owner:<p>`` holds partition *p*'s owner
token. A worker takes a new token (INCR) when the group assigns it *p* (:meth:`acquire`), and
its claims on *p* are refused once another worker took a newer one: a zombie (a worker frozen
until the group gave its partitions away, then resumed) claims nothing, so it sends nothing new.

**Migration**: the queue used to be one ``notify:due:<p>`` set per partition, every lane mixed.
:meth:`acquire` moves what such a set still holds into the lanes' sets (keeping due times).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Any

import redis.asyncio as aioredis

from services.notify.domain import Notification
from services.notify.ports import Final, Queued, Room
from services.notify.records import decode_notification, encode_notification, lane_of

__all__ = ["RedisDeliveryQueue"]

#: Lua: make the lanes index entry of lane ``lane`` (set ``key``) its earliest due time again.
_HEAD = """
local function head(index, key, lane)
  local first = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
  if first[1] then
    redis.call('ZADD', index, first[2], lane)
  else
    redis.call('ZREM', index, lane)
  end
end
"""

_ENQUEUE = """
if redis.call('HSETNX', KEYS[2], 'data', ARGV[1]) == 0 then return 0 end
redis.call('HSET', KEYS[2], 'lane', ARGV[2], 'attempts', 0, 'state', 'pending', 'part', ARGV[5])
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[4])
redis.call('ZADD', KEYS[3], 'LT', ARGV[3], ARGV[6])
return 1
"""

# KEYS: per owned partition, its lanes index then its owner key. ARGV: now, lease, the room of
# a lane not listed, the due-set and item prefixes, how many due lanes to look at per partition,
# then counted lists: (lane, room) pairs, persons with an e-mail in flight, partition + token
# ('' = unfenced) per partition. Returns id, partition, data, lane, attempts, first_ms per claim.
_TAKE = (
    _HEAD
    + """
local now, lease, default = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local due_prefix, item_prefix, scan = ARGV[4], ARGV[5], tonumber(ARGV[6])
local i = 7
local room = {}
for _ = 1, tonumber(ARGV[i]) do room[ARGV[i + 1]] = tonumber(ARGV[i + 2]); i = i + 2 end
i = i + 1
local busy = {}
local persons = tonumber(ARGV[i])
for _ = 1, persons do busy[ARGV[i + 1]] = true; i = i + 1 end
i = i + 1
-- the due lanes with room, and where (partition, index key) each is due
local where, order = {}, {}
for k = 1, #KEYS / 2 do
  local part, token = ARGV[i], ARGV[i + 1]
  i = i + 2
  if token == '' or redis.call('GET', KEYS[2 * k]) == token then
    local index = KEYS[2 * k - 1]
    for _, lane in ipairs(redis.call('ZRANGEBYSCORE', index, '-inf', now, 'LIMIT', 0, scan)) do
      if (room[lane] or default) > 0 then
        if not where[lane] then where[lane] = {}; order[#order + 1] = lane end
        local w = where[lane]
        w[#w + 1] = {part, index}
      end
    end
  end
end
local out, touched = {}, {}
for _, lane in ipairs(order) do
  local free = room[lane] or default
  -- e-mail: one message per person at a time, so look a little further than the free slots
  local want = free
  if lane == 'email' then want = free + persons + 32 end
  local found = {}
  for _, w in ipairs(where[lane]) do
    local key = due_prefix .. w[1] .. ':' .. lane
    local rows = redis.call('ZRANGEBYSCORE', key, '-inf', now, 'WITHSCORES', 'LIMIT', 0, want)
    for j = 1, #rows, 2 do
      found[#found + 1] = {tonumber(rows[j + 1]), rows[j], w[1], key, w[2]}
    end
  end
  -- oldest first across the partitions (else a full lane would starve the last ones); a
  -- webhook lane's slots left after the oldest go first to the next ones of its partition,
  -- then recorded in one Kafka transaction (a transactional writer per partition), not one
  -- each. Not e-mail: a person's messages of several campaigns go strictly oldest first.
  table.sort(found, function(a, b)
    if a[1] ~= b[1] then return a[1] < b[1] end
    return tonumber(a[3]) < tonumber(b[3])
  end)
  if lane ~= 'email' and #found > 1 then
    local order, rest = {}, {}
    for _, f in ipairs(found) do
      if f[3] == found[1][3] then order[#order + 1] = f else rest[#rest + 1] = f end
    end
    for _, f in ipairs(rest) do order[#order + 1] = f end
    found = order
  end
  local taken, seen = 0, {}
  for _, f in ipairs(found) do
    if taken >= free then break end
    local row = redis.call(
      'HMGET', item_prefix .. f[2], 'state', 'lane', 'data', 'attempts', 'first_ms')
    if row[1] ~= 'pending' then
      redis.call('ZREM', f[4], f[2])  -- finished (or gone): not due any more
      touched[f[4]] = {f[5], lane}
    elseif row[2] == lane or not (busy[row[2]] or seen[row[2]]) then
      seen[row[2]] = true
      redis.call('ZADD', f[4], now + lease, f[2])
      touched[f[4]] = {f[5], lane}
      out[#out + 1] = f[2]
      out[#out + 1] = f[3]
      out[#out + 1] = row[3]
      out[#out + 1] = row[2]
      out[#out + 1] = row[4] or 0
      out[#out + 1] = row[5] or ''
      taken = taken + 1
    end
  end
end
for key, t in pairs(touched) do head(t[1], key, t[2]) end
return out
"""
)

# ARGV: due-set, lanes-index and item prefixes, keep seconds, then per item: id, partition,
# lane (the slot lane), final state. Each lane's index entry is fixed once for the batch.
_FINISH = (
    _HEAD
    + """
local due_prefix, lanes_prefix, item_prefix, keep = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local touched = {}
for i = 5, #ARGV, 4 do
  local id, part, lane, state = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local key = due_prefix .. part .. ':' .. lane
  redis.call('HSET', item_prefix .. id, 'state', state)
  redis.call('EXPIRE', item_prefix .. id, keep)
  redis.call('ZREM', key, id)
  touched[key] = {lanes_prefix .. part, lane}
end
for key, t in pairs(touched) do head(t[1], key, t[2]) end
"""
)

_RETRY = (
    _HEAD
    + """
redis.call('HSET', KEYS[2], 'attempts', ARGV[3])
redis.call('HSETNX', KEYS[2], 'first_ms', ARGV[4])
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
head(KEYS[3], KEYS[1], ARGV[5])
"""
)

_REDRIVE = (
    _HEAD
    + """
redis.call('DEL', KEYS[2])
redis.call('HSET', KEYS[2], 'data', ARGV[2], 'lane', ARGV[3], 'part', ARGV[4], 'attempts', 0,
  'state', 'pending')
redis.call('ZADD', KEYS[1], ARGV[5], ARGV[1])
head(KEYS[3], KEYS[1], ARGV[6])
"""
)

_PENDING = """
local total = 0
for k = 1, #KEYS do
  for _, lane in ipairs(redis.call('ZRANGE', KEYS[k], 0, -1)) do
    total = total + redis.call('ZCARD', ARGV[k] .. lane)
  end
end
return total
"""

# The old layout (one set per partition) into the lanes' sets, up to ARGV[3] items per call;
# returns how many are left. KEYS: the old set, the lanes index.
_MIGRATE = """
local rows = redis.call('ZRANGE', KEYS[1], 0, tonumber(ARGV[3]) - 1, 'WITHSCORES')
for j = 1, #rows, 2 do
  local id, score = rows[j], rows[j + 1]
  local lane = redis.call('HGET', ARGV[2] .. id, 'lane')
  if lane then
    local slot = string.match(lane, '^[^|]*')
    redis.call('ZADD', ARGV[1] .. slot, score, id)
    redis.call('ZADD', KEYS[2], 'LT', score, slot)
  end
  redis.call('ZREM', KEYS[1], id)
end
return redis.call('ZCARD', KEYS[1])
"""

#: How many due lanes of a partition one pump looks at (those with room are served).
_LANE_SCAN = 1024
_MIGRATE_CHUNK = 1000


def slot_lane(lane: str) -> str:
    """The lane a notification's slots are counted in: ``email|<person>`` -> ``email``."""
    return lane.partition("|")[0]


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
        self._lanes_prefix = f"{prefix}notify:lanes:"
        self._item = f"{prefix}notify:n:"
        self._owner_prefix = f"{prefix}notify:owner:"
        self.partition_of = partition_of
        self._keep = keep_seconds
        self._enqueue = client.register_script(_ENQUEUE)
        self._take = client.register_script(_TAKE)
        self._finish = client.register_script(_FINISH)
        self._retry = client.register_script(_RETRY)
        self._redrive = client.register_script(_REDRIVE)
        self._pending = client.register_script(_PENDING)
        self._migrate = client.register_script(_MIGRATE)
        self._finishing: list[tuple[Queued, Final, asyncio.Future[None]]] = []
        self._finisher: asyncio.Task[None] | None = None
        #: fenced: partition -> this worker's owner token (claims need one); else unfenced
        self._tokens: dict[int, str] | None = {} if fenced else None

    def lane_key(self, partition: int, lane: str) -> str:
        """The Redis key of ``lane``'s due set in ``partition`` (``email|...`` -> ``email``)."""
        return f"{self._due_prefix}{partition}:{slot_lane(lane)}"

    def lanes_key(self, partition: int) -> str:
        """The Redis key of ``partition``'s index of lanes by earliest due time."""
        return f"{self._lanes_prefix}{partition}"

    def due_prefix(self, partition: int) -> str:
        """What a lane's name is appended to for its due set in ``partition`` (for atomic
        writers beside the queue, such as the views' apply script)."""
        return f"{self._due_prefix}{partition}:"

    def sequence_key(self, partition: int) -> str:
        """The last due time given in ``partition`` (enqueues keep them strictly increasing)."""
        return f"{self._due_prefix}{partition}:last"

    @property
    def item_prefix(self) -> str:
        """The Redis key prefix of the notifications' hashes."""
        return self._item

    async def enqueue(self, notification: Notification, now_ms: int) -> bool:
        nid = notification.notification_id
        part = self.partition_of(notification.campaign_id)
        lane = lane_of(notification)
        added = await self._enqueue(
            keys=[self.lane_key(part, lane), self._item + nid, self.lanes_key(part)],
            args=[encode_notification(notification), lane, now_ms, nid, part, slot_lane(lane)],
        )
        return bool(added)

    async def take(
        self, now_ms: int, lease_ms: int, partitions: Iterable[int], room: Room
    ) -> list[Queued]:
        keys: list[str] = []
        parts: list[str | int] = []
        for part in partitions:
            token = self._token(part)
            if token is not None:
                keys += [self.lanes_key(part), self._owner_prefix + str(part)]
                parts += [part, token]
        if not keys:
            return []
        args: list[str | int] = [
            now_ms,
            lease_ms,
            room.default,
            self._due_prefix,
            self._item,
            _LANE_SCAN,
            len(room.lanes),
        ]
        for lane, free in room.lanes.items():
            args += [lane, free]
        args.append(len(room.busy_persons))
        args += room.busy_persons
        args += parts
        flat = await self._take(keys=keys, args=args)
        return [
            Queued(
                decode_notification(flat[i + 2]),
                _text(flat[i + 3]),
                int(flat[i + 1]),
                int(flat[i + 4]),
                int(flat[i + 5]) if flat[i + 5] else None,
            )
            for i in range(0, len(flat), 6)
        ]

    async def acquire(self, partitions: Iterable[int]) -> None:
        """Take a new owner token for each partition (the group assigned them to this worker):
        from now on an older owner's claims on them are refused. Then move anything left in
        the old single due set of each into its lanes' sets (see the module docstring)."""
        for part in partitions:
            if self._tokens is not None:
                token = await self._r.incr(self._owner_prefix + str(part))
                self._tokens[part] = str(token)
            old = f"{self._due_prefix}{part}"
            while await self._migrate(
                keys=[old, self.lanes_key(part)],
                args=[self.due_prefix(part), self._item, _MIGRATE_CHUNK],
            ):
                pass

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

    def _item_keys(self, item: Queued) -> list[str]:
        nid = item.notification.notification_id
        return [
            self.lane_key(item.partition, item.lane),
            self._item + nid,
            self.lanes_key(item.partition),
        ]

    async def retry_at(self, item: Queued, due_ms: int, attempts: int, now_ms: int) -> None:
        nid = item.notification.notification_id
        await self._retry(
            keys=self._item_keys(item),
            args=[nid, due_ms, attempts, now_ms, slot_lane(item.lane)],
        )

    async def finish(self, item: Queued, state: Final) -> None:
        """Group commit: finishes that arrive while one script call is under way go together
        in the next (deliveries recorded by one Kafka transaction end together)."""
        done = asyncio.get_running_loop().create_future()
        self._finishing.append((item, state, done))
        if self._finisher is None:
            self._finisher = asyncio.create_task(self._flush_finishes())
        await done

    async def _flush_finishes(self) -> None:
        batch: list[tuple[Queued, Final, asyncio.Future[None]]] = []
        try:
            while self._finishing:
                batch, self._finishing = self._finishing, []
                args: list[str | int] = [
                    self._due_prefix,
                    self._lanes_prefix,
                    self._item,
                    self._keep,
                ]
                for item, state, _ in batch:
                    args += [
                        item.notification.notification_id,
                        item.partition,
                        slot_lane(item.lane),
                        state,
                    ]
                try:
                    await self._finish(args=args)
                except Exception as exc:
                    _settle(batch, exc)
                else:
                    _settle(batch, None)
                batch = []
        finally:
            # cancelled (the worker stops): no caller may wait for good
            _settle(batch + self._finishing, ConnectionError("notify queue: finish cancelled"))
            self._finishing = []
            self._finisher = None

    async def redrive(self, notification: Notification, now_ms: int) -> None:
        nid = notification.notification_id
        part = self.partition_of(notification.campaign_id)
        lane = lane_of(notification)
        await self._redrive(
            keys=[self.lane_key(part, lane), self._item + nid, self.lanes_key(part)],
            args=[nid, encode_notification(notification), lane, part, now_ms, slot_lane(lane)],
        )

    async def pending(self, partitions: Iterable[int]) -> int:
        parts = list(partitions)
        if not parts:
            return 0
        return int(
            await self._pending(
                keys=[self.lanes_key(p) for p in parts], args=[self.due_prefix(p) for p in parts]
            )
        )

    async def state(self, notification_id: str) -> str | None:
        """The item's state (pending, sent, dead, skipped) or None if unknown."""
        value = await self._r.hget(self._item + notification_id, "state")
        return _text(value) if value is not None else None


def _settle(
    batch: list[tuple[Queued, Final, asyncio.Future[None]]], error: Exception | None
) -> None:
    for *_, done in batch:
        if not done.done():
            if error is None:
                done.set_result(None)
            else:
                done.set_exception(error)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
