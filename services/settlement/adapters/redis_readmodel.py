"""The settlement read model's Redis layout, its apply script and its reads.

Namespaced like the pledge read model (``<prefix>pf:``) but under its own ``st:`` so that
either can be rebuilt without the other:

* ``<ns>st:c:<campaign_id>``: hash ``seq`` (last settlement event applied), ``doc`` (the
  summary JSON of :mod:`services.settlement.projection`);
* ``<ns>st:p:<campaign_id>/<pledge_id>``: hash of the pledge's payment record (``status``,
  ``attempts``, ``retry_until``, ``captured_minor``, ``refunded_minor``, ``method_updated``,
  ``reason``);
* ``<ns>st:d:<command_id>``: the worker's decision on a settlement command (``Prefer: wait``),
  kept ``decision_ttl`` seconds;
* ``<ns>st:epoch``: the projector's marker; absent means the read model is empty or lost
  (the projector then replays the settlement stream from the beginning).

A campaign's run is applied by one Lua script that compares the stored ``seq``: a redelivery
is a no-op and a stale writer is refused.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson
import redis.asyncio as aioredis

from services.pledge.adapters.redis_pipeline import LuaScript
from services.pledge.adapters.redis_readmodel import unlink_matching

__all__ = [
    "APPLY_SETTLEMENT",
    "PAYMENT_FIELDS",
    "RedisSettlementReads",
    "SettlementKeys",
    "payment_from_fields",
    "payment_record",
]


class SettlementKeys:
    """Every key of one namespace's settlement read model."""

    def __init__(self, prefix: str = "") -> None:
        self.ns = f"{prefix}pf:st:"

    def campaign(self, campaign_id: str) -> str:
        return f"{self.ns}c:{campaign_id}"

    def pledge(self, campaign_id: str, pledge_id: str) -> str:
        return f"{self.ns}p:{campaign_id}/{pledge_id}"

    def decision(self, command_id: str) -> str:
        return f"{self.ns}d:{command_id}"

    def epoch(self) -> str:
        return f"{self.ns}epoch"

    @property
    def pattern(self) -> str:
        """Glob of every key (what a rebuild wipes)."""
        return f"{self.ns}*"


# KEYS[1] campaign hash, KEYS[2..] pledge or decision keys.
# ARGV[1] expected stored seq, ARGV[2] new seq, ARGV[3] summary JSON, ARGV[4] decision TTL,
# then per extra key an (op, value) pair:
#   pay   -> value: JSON object of payment fields to set, values as strings (null deletes;
#            numbers travel as strings, which Lua keeps exact); 'refunded_add' adds
#            to refunded_minor, and a pledge paid back in full becomes 'refunded'
#   decide -> value: the decision JSON (first decision wins)
# Returns 1 applied, 0 already applied, -1 the stored seq is not the expected one.
APPLY_SETTLEMENT = LuaScript(
    """
local cur = tonumber(redis.call('HGET', KEYS[1], 'seq') or '0')
local new = tonumber(ARGV[2])
if cur >= new then return 0 end
if cur ~= tonumber(ARGV[1]) then return -1 end
redis.call('HSET', KEYS[1], 'seq', ARGV[2], 'doc', ARGV[3])
for i = 2, #KEYS do
  local op = ARGV[5 + (i - 2) * 2]
  local val = ARGV[6 + (i - 2) * 2]
  if op == 'pay' then
    local fields = cjson.decode(val)
    local add = '0'
    for k, v in pairs(fields) do
      if k == 'refunded_add' then
        add = v
      elseif v == cjson.null then
        redis.call('HDEL', KEYS[i], k)
      else
        redis.call('HSET', KEYS[i], k, tostring(v))
      end
    end
    if tonumber(add) > 0 then
      local paid = redis.call('HINCRBY', KEYS[i], 'refunded_minor', add)
      local got = tonumber(redis.call('HGET', KEYS[i], 'captured_minor') or '0')
      if paid >= got then redis.call('HSET', KEYS[i], 'status', 'refunded') end
    end
  elseif op == 'decide' then
    redis.call('SET', KEYS[i], val, 'NX', 'EX', ARGV[4])
  end
end
return 1
"""
)

_INTS = ("attempts", "captured_minor", "refunded_minor")
#: Every field of a pledge's payment hash that :func:`payment_record` reads.
PAYMENT_FIELDS = ("status", *_INTS, "retry_until", "method_updated", "reason")


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def payment_record(raw: Mapping[Any, Any]) -> dict[str, Any] | None:
    """A stored payment hash as the :class:`~services.settlement.api_models.PaymentView`
    fields (None when there is none)."""
    if not raw:
        return None
    fields = {_text(k): _text(v) for k, v in raw.items()}
    record: dict[str, Any] = {"status": fields.get("status", "pending")}
    for name in _INTS:
        record[name] = int(fields.get(name, "0"))
    record["retry_until"] = fields.get("retry_until")
    record["method_updated"] = fields.get("method_updated") == "true"
    record["reason"] = fields.get("reason")
    return record


def payment_from_fields(values: Sequence[bytes | str | None]) -> dict[str, Any] | None:
    """:func:`payment_record` of the values of :data:`PAYMENT_FIELDS` (in that order, as
    ``HMGET`` answers; None when the hash has none of them): a listing page's fast path."""
    if values.count(None) == len(values):
        return None
    status, attempts, captured, refunded, retry_until, method_updated, reason = values
    return {
        "status": "pending" if status is None else _text(status),
        "attempts": int(attempts or 0),
        "captured_minor": int(captured or 0),
        "refunded_minor": int(refunded or 0),
        "retry_until": None if retry_until is None else _text(retry_until),
        "method_updated": method_updated in (b"true", "true"),
        "reason": None if reason is None else _text(reason),
    }


class RedisSettlementReads:
    """The API's reads of the settlement read model (``SettlementReads``)."""

    def __init__(self, client: aioredis.Redis, keys: SettlementKeys) -> None:
        self.client = client
        self.keys = keys

    async def summary(self, campaign_id: str) -> dict[str, Any] | None:
        raw = await self.client.hget(self.keys.campaign(campaign_id), "doc")
        if raw is None:
            return None
        doc: dict[str, Any] = orjson.loads(raw)
        return doc

    async def payment(self, campaign_id: str, pledge_id: str) -> dict[str, Any] | None:
        raw = await self.client.hgetall(self.keys.pledge(campaign_id, pledge_id))
        return payment_record(raw)

    async def whole(self) -> bool:
        return bool(await self.client.exists(self.keys.epoch()))

    async def decision(self, command_id: str) -> dict[str, Any] | None:
        raw = await self.client.get(self.keys.decision(command_id))
        if raw is None:
            return None
        decision: dict[str, Any] = orjson.loads(raw)
        return decision

    async def wipe(self) -> int:
        """Delete every key of this namespace's settlement read model; returns how many."""
        return await unlink_matching(self.client, self.keys.pattern)
