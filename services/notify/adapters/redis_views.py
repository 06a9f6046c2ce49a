"""Notify's per-campaign state in Redis, applied atomically with the notifications it owes.

Keys: ``notify:v:<campaign>`` (HASH: ``header`` JSON of the view, ``last:<stream>`` = last
applied seq of each stream) and ``notify:p:<campaign>`` (HASH: pledge id -> pledge line).
:meth:`RedisCampaignViews.apply_many` runs one Lua script for a batch of events (one round
trip), each applied in turn as if alone: if the event's seq is above the stream's last
applied one, it enqueues the owed notifications (unless already known), writes
the view's change and moves ``last:<stream>``; otherwise it does nothing. So an event
redelivered after a crash (its Kafka offset not yet committed) is recognised and changes
nothing, and the queue never holds notifications of an event the view has not applied.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import redis.asyncio as aioredis

from schemas.envelope import Envelope
from schemas.money import Money
from services.notify.adapters.redis_queue import RedisDeliveryQueue
from services.notify.domain import CampaignView, Notification, PledgeLine
from services.notify.records import encode_notification, lane_of

__all__ = ["PreparedApply", "RedisCampaignViews"]

_APPLY = """
-- ARGV[1]: how many events; then per event 10 fixed arguments and 3 per notification, and
-- KEYS: 4 per event. Each event is applied as if alone, in the order given.
local out = {}
local a = 2
for e = 0, tonumber(ARGV[1]) - 1 do
  local k = e * 4
  local stream, seq, now = ARGV[a], ARGV[a + 1], ARGV[a + 2]
  local item_prefix, part, header = ARGV[a + 3], ARGV[a + 4], ARGV[a + 5]
  local pledge, line, n, due_prefix = ARGV[a + 6], ARGV[a + 7], tonumber(ARGV[a + 8]), ARGV[a + 9]
  local i = a + 10
  a = i + 3 * n
  local last = tonumber(redis.call('HGET', KEYS[k + 1], 'last:' .. stream) or '0')
  if tonumber(seq) <= last then
    out[e + 1] = 0
  else
    -- due times strictly increase in the partition (by 1 us), so notifications are taken in
    -- the order their events were applied even within one millisecond
    local score = math.max(tonumber(now), tonumber(redis.call('GET', KEYS[k + 4]) or '0') + 0.001)
    for _ = 1, n do
      local nid, data, lane = ARGV[i], ARGV[i + 1], ARGV[i + 2]
      i = i + 3
      local item = item_prefix .. nid
      if redis.call('HSETNX', item, 'data', data) == 1 then
        redis.call('HSET', item, 'lane', lane, 'attempts', 0, 'state', 'pending', 'part', part)
        -- the lane's due set (e-mail: the relay's, 'email'), and the lanes index's earliest
        local slot = string.match(lane, '^[^|]*')
        local due = string.format('%.3f', score)
        redis.call('ZADD', due_prefix .. slot, due, nid)
        redis.call('ZADD', KEYS[k + 3], 'LT', due, slot)
        score = score + 0.001
      end
    end
    redis.call('SET', KEYS[k + 4], string.format('%.3f', score))
    redis.call('HSET', KEYS[k + 1], 'header', header, 'last:' .. stream, seq)
    if pledge ~= '' then redis.call('HSET', KEYS[k + 2], pledge, line) end
    out[e + 1] = 1
  end
end
return out
"""


@dataclass(frozen=True, slots=True)
class PreparedApply:
    """One event's write, its view's state captured when it was prepared (the view goes on
    changing with the events after it before the batch is written)."""

    keys: list[str]
    args: list[Any]
    partition: int


class RedisCampaignViews:
    """Load a campaign's view; apply an event's effects (see the module docstring)."""

    def __init__(
        self, client: aioredis.Redis, queue: RedisDeliveryQueue, *, prefix: str = ""
    ) -> None:
        self._r = client
        self._queue = queue
        self._prefix = prefix
        self._apply = client.register_script(_APPLY)

    def _keys(self, campaign_id: str, partition: int) -> list[str]:
        p = self._prefix
        return [
            f"{p}notify:v:{campaign_id}",
            f"{p}notify:p:{campaign_id}",
            self._queue.lanes_key(partition),
            self._queue.sequence_key(partition),
        ]

    async def load(self, campaign_id: str) -> tuple[CampaignView, dict[str, int]]:
        """The campaign's view and the last applied seq of each stream (0 when new)."""
        head_key, pledges_key, *_ = self._keys(campaign_id, 0)
        head = {_text(k): v for k, v in (await self._r.hgetall(head_key)).items()}
        view = CampaignView(campaign_id)
        if "header" in head:
            raw = orjson.loads(head["header"])
            view.tenant_id = raw["tenant_id"]
            view.creator_id = raw["creator_id"]
            view.title = raw["title"]
            view.goal = (
                Money(amount_minor=raw["goal"][0], currency=raw["goal"][1]) if raw["goal"] else None
            )
            view.closed = raw["closed"]
        for pledge_id, line in (await self._r.hgetall(pledges_key)).items():
            backer, minor, currency, locale, active = orjson.loads(line)
            view.pledges[_text(pledge_id)] = PledgeLine(
                backer, Money(amount_minor=minor, currency=currency), locale, active
            )
        lasts = {k.removeprefix("last:"): int(v) for k, v in head.items() if k.startswith("last:")}
        return view, lasts

    def prepare(
        self,
        view: CampaignView,
        envelope: Envelope,
        notifications: list[Notification],
        *,
        partition: int,
        now_ms: int,
    ) -> PreparedApply:
        """The write recording ``envelope`` as applied to ``view`` (already evolved) with its
        notifications; call right after :func:`evolve`, before the next event changes it."""
        pledge_id = getattr(envelope.payload, "pledge_id", None)
        line = view.pledges.get(pledge_id) if isinstance(pledge_id, str) else None
        args: list[Any] = [
            envelope.stream,
            envelope.seq,
            now_ms,
            self._queue.item_prefix,
            partition,
            orjson.dumps(
                {
                    "tenant_id": view.tenant_id,
                    "creator_id": view.creator_id,
                    "title": view.title,
                    "goal": [view.goal.amount_minor, view.goal.currency] if view.goal else None,
                    "closed": view.closed,
                }
            ),
            pledge_id if line is not None else "",
            orjson.dumps(
                [
                    line.backer_id,
                    line.amount.amount_minor,
                    line.amount.currency,
                    line.locale,
                    line.active,
                ]
            )
            if line is not None
            else b"",
            len(notifications),
            self._queue.due_prefix(partition),
        ]
        for n in notifications:
            args.extend((n.notification_id, encode_notification(n), lane_of(n)))
        return PreparedApply(self._keys(envelope.campaign_id, partition), args, partition)

    async def apply_many(self, writes: Sequence[PreparedApply]) -> list[bool]:
        """Write ``writes`` in order in one script call (one round trip): each is applied
        unless its event was applied before. True per write that changed something."""
        if not writes:
            return []
        keys: list[str] = []
        args: list[Any] = [len(writes)]
        for w in writes:
            keys.extend(w.keys)
            args.extend(w.args)
        return [bool(x) for x in await self._apply(keys=keys, args=args)]

    async def apply(
        self,
        view: CampaignView,
        envelope: Envelope,
        notifications: list[Notification],
        *,
        partition: int,
        now_ms: int,
    ) -> bool:
        """Record one event (see :meth:`prepare`); False if it was applied before."""
        write = self.prepare(view, envelope, notifications, partition=partition, now_ms=now_ms)
        [changed] = await self.apply_many([write])
        return changed


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
