"""Notify's per-campaign state in Redis, applied atomically with the notifications it owes.

Keys: ``notify:v:<campaign>`` (HASH: ``header`` JSON of the view, ``last:<stream>`` = last
applied seq of each stream) and ``notify:p:<campaign>`` (HASH: pledge id -> pledge line).
:meth:`RedisCampaignViews.apply` runs one Lua script: if the event's seq is above the
stream's last applied one, it enqueues the owed notifications (unless already known), writes
the view's change and moves ``last:<stream>``; otherwise it does nothing. So an event
redelivered after a crash (its Kafka offset not yet committed) is recognised and changes
nothing, and the queue never holds notifications of an event the view has not applied.
"""

from __future__ import annotations

from typing import Any

import orjson
import redis.asyncio as aioredis

from schemas.envelope import Envelope
from schemas.money import Money
from services.notify.adapters.redis_queue import RedisDeliveryQueue
from services.notify.domain import CampaignView, Notification, PledgeLine
from services.notify.records import encode_notification, lane_of

__all__ = ["RedisCampaignViews"]

_APPLY = """
local last = tonumber(redis.call('HGET', KEYS[1], 'last:' .. ARGV[1]) or '0')
if tonumber(ARGV[2]) <= last then return 0 end
local n = tonumber(ARGV[9])
local i = 11
-- due times strictly increase in the partition (by 1 us), so notifications are taken in the
-- order their events were applied even within one millisecond
local score = math.max(tonumber(ARGV[3]), tonumber(redis.call('GET', KEYS[4]) or '0') + 0.001)
for _ = 1, n do
  local nid, data, lane = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  i = i + 3
  local item = ARGV[4] .. nid
  if redis.call('HSETNX', item, 'data', data) == 1 then
    redis.call('HSET', item, 'lane', lane, 'attempts', 0, 'state', 'pending', 'part', ARGV[5])
    -- the lane's due set (e-mail: the relay's, 'email'), and the lanes index's earliest time
    local slot = string.match(lane, '^[^|]*')
    local due = string.format('%.3f', score)
    redis.call('ZADD', ARGV[10] .. slot, due, nid)
    redis.call('ZADD', KEYS[3], 'LT', due, slot)
    score = score + 0.001
  end
end
redis.call('SET', KEYS[4], string.format('%.3f', score))
redis.call('HSET', KEYS[1], 'header', ARGV[6], 'last:' .. ARGV[1], ARGV[2])
if ARGV[7] ~= '' then redis.call('HSET', KEYS[2], ARGV[7], ARGV[8]) end
return 1
"""


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

    async def apply(
        self,
        view: CampaignView,
        envelope: Envelope,
        notifications: list[Notification],
        *,
        partition: int,
        now_ms: int,
    ) -> bool:
        """Record ``envelope`` as applied to ``view`` (already evolved) with its notifications;
        False if it was applied before (nothing changed)."""
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
        return bool(await self._apply(keys=self._keys(envelope.campaign_id, partition), args=args))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
