"""The read model's Redis layout and the scripts that change it.

Key names are namespaced by the topic prefix (``<prefix>pf:``) so that tests sharing one Redis
never see each other, and ``pledgeflow readmodel rebuild`` can wipe exactly one namespace.

* ``<ns>rm:c:<campaign_id>``: hash ``seq`` (last applied), ``tenant``, ``doc`` (summary JSON);
* ``<ns>rm:p:<campaign_id>/<pledge_id>``: hash ``status``, ``doc`` (JSON), ``refusal`` (JSON of
  the last refused operation on an accepted pledge, e.g. a late cancellation);
* ``<ns>launch:<campaign_id>``: written by the API when it accepts a launch (kept the
  idempotency TTL), so that writes to a campaign the projector has not shown yet pass the gate;
* ``<ns>rm:d:<command_id>``: the decision the processor made on a command (for ``Prefer: wait``),
  kept ``readmodel_decision_ttl_seconds``.

Campaign ids here are tenant-qualified (``<tenant>/<campaign>``, :mod:`schemas.tenancy`);
``/`` is outside the id alphabet, so ``<campaign>/<pledge>`` names exactly one pair (``:`` did
not: ``acme:spring`` + ``p1`` and ``acme`` + ``spring:p1`` were one key).

Every change of a campaign is applied by one Lua script that compares the stored ``seq``:
a redelivered event (seq already applied) is a no-op, and a stale writer is refused.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import orjson
import redis.asyncio as aioredis

from services.pledge.adapters.redis_pipeline import LuaScript

__all__ = [
    "APPLY_SCRIPT",
    "CampaignRow",
    "Keys",
    "PledgeOp",
    "PledgeRow",
    "ReadModelStore",
]


class Keys:
    """Every Redis key of one namespace (one topic prefix)."""

    def __init__(self, prefix: str = "") -> None:
        self.ns = f"{prefix}pf:"

    def campaign(self, campaign_id: str) -> str:
        return f"{self.ns}rm:c:{campaign_id}"

    def pledge(self, campaign_id: str, pledge_id: str) -> str:
        return f"{self.ns}rm:p:{campaign_id}/{pledge_id}"

    def projector_epoch(self) -> str:
        """The projector's epoch marker: present while the read model is whole."""
        return f"{self.ns}rm:projector"

    def launched(self, campaign_id: str) -> str:
        return f"{self.ns}launch:{campaign_id}"

    def decision(self, command_id: str) -> str:
        return f"{self.ns}rm:d:{command_id}"

    def idempotency(self, tenant_id: str, idempotency_key: str) -> str:
        digest = hashlib.sha256(idempotency_key.encode()).hexdigest()[:32]
        return f"{self.ns}idem:{tenant_id}:{digest}"

    def bucket(self, key_hash: str) -> str:
        return f"{self.ns}rl:{key_hash[:24]}"

    @property
    def readmodel_pattern(self) -> str:
        """Glob of every read-model key (what a rebuild wipes)."""
        return f"{self.ns}rm:*"


# KEYS[1] campaign hash, KEYS[2..] pledge/decision keys.
# ARGV[1] expected stored seq, ARGV[2] new seq, ARGV[3] tenant ('' = unknown), ARGV[4] summary
# JSON, ARGV[5] decision TTL seconds, then one (op, value) pair per extra key:
#   set:<status> -> pledge hash: status + doc
#   refuse  -> pledge refused: status rejected, unless already accepted/cancelled (then a note)
#   note    -> a refused operation on an existing pledge (cancellation refused): note only
#   cancel  -> pledge cancelled: status cancelled + the cancellation (seq, reason)
#   decide  -> decision key: first decision wins (a command's first event is its answer)
# Returns 1 applied, 0 already applied (redelivery), -1 stored seq is not the expected one.
APPLY_SCRIPT = LuaScript(
    """
local cur = tonumber(redis.call('HGET', KEYS[1], 'seq') or '0')
local new = tonumber(ARGV[2])
if cur >= new then return 0 end
if cur ~= tonumber(ARGV[1]) then return -1 end
redis.call('HSET', KEYS[1], 'seq', ARGV[2], 'doc', ARGV[4])
if ARGV[3] ~= '' then redis.call('HSET', KEYS[1], 'tenant', ARGV[3]) end
for i = 2, #KEYS do
  local op = ARGV[6 + (i - 2) * 2]
  local val = ARGV[7 + (i - 2) * 2]
  if string.sub(op, 1, 4) == 'set:' then
    redis.call('HSET', KEYS[i], 'status', string.sub(op, 5), 'doc', val)
  elseif op == 'refuse' then
    local s = redis.call('HGET', KEYS[i], 'status')
    if s == 'accepted' or s == 'cancelled' then
      redis.call('HSET', KEYS[i], 'refusal', val)
    else
      redis.call('HSET', KEYS[i], 'status', 'rejected', 'doc', val)
    end
  elseif op == 'note' then
    if redis.call('EXISTS', KEYS[i]) == 1 then redis.call('HSET', KEYS[i], 'refusal', val) end
  elseif op == 'cancel' then
    redis.call('HSET', KEYS[i], 'status', 'cancelled', 'cancel', val)
  elseif op == 'decide' then
    redis.call('SET', KEYS[i], val, 'NX', 'EX', ARGV[5])
  end
end
return 1
"""
)


@dataclass(frozen=True, slots=True)
class PledgeOp:
    """One change to a pledge or decision key inside a campaign's apply."""

    key: str
    op: str
    value: bytes


@dataclass(frozen=True, slots=True)
class CampaignRow:
    """A campaign as stored: last applied seq, owning tenant and the summary document."""

    seq: int
    tenant_id: str | None
    doc: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class PledgeRow:
    """A pledge as stored."""

    status: str
    doc: dict[str, Any]
    refusal: dict[str, Any] | None
    cancel: dict[str, Any] | None = None
    #: When the API wrote the row pending (ms since the epoch, Redis' clock).
    pending_since: int | None = None


class ReadModelStore:
    """Reads and writes of the read model (one namespace)."""

    def __init__(self, client: aioredis.Redis, keys: Keys) -> None:
        self.client = client
        self.keys = keys

    async def load_scripts(self) -> None:
        await APPLY_SCRIPT.load(self.client)

    async def campaign(self, campaign_id: str) -> CampaignRow | None:
        """The stored campaign row, or None when no event of it was applied yet."""
        seq, tenant, doc = await self.client.hmget(
            self.keys.campaign(campaign_id), ["seq", "tenant", "doc"]
        )
        if seq is None:
            return None
        return CampaignRow(
            seq=int(seq),
            tenant_id=_text(tenant),
            doc=orjson.loads(doc) if doc else None,
        )

    async def campaigns(self, campaign_ids: list[str]) -> dict[str, CampaignRow]:
        """Stored rows of several campaigns in one round trip (absent ones are left out)."""
        pipe = self.client.pipeline(transaction=False)
        for campaign_id in campaign_ids:
            pipe.hmget(self.keys.campaign(campaign_id), ["seq", "tenant", "doc"])
        rows: dict[str, CampaignRow] = {}
        for campaign_id, (seq, tenant, doc) in zip(campaign_ids, await pipe.execute(), strict=True):
            if seq is not None:
                rows[campaign_id] = CampaignRow(
                    int(seq),
                    _text(tenant),
                    orjson.loads(doc) if doc else None,
                )
        return rows

    async def pledge(self, campaign_id: str, pledge_id: str) -> PledgeRow | None:
        status, doc, refusal, cancel, since = await self.client.hmget(
            self.keys.pledge(campaign_id, pledge_id),
            ["status", "doc", "refusal", "cancel", "pending_since"],
        )
        if status is None or doc is None:
            return None
        return PledgeRow(
            status=_text(status) or "",
            doc=orjson.loads(doc),
            refusal=orjson.loads(refusal) if refusal else None,
            cancel=orjson.loads(cancel) if cancel else None,
            pending_since=int(since) if since else None,
        )

    async def decision(self, command_id: str) -> dict[str, Any] | None:
        raw = await self.client.get(self.keys.decision(command_id))
        return None if raw is None else orjson.loads(raw)

    async def wipe(self) -> int:
        """Delete every read-model key of this namespace; returns how many."""
        deleted = 0
        batch: list[bytes] = []
        async for key in self.client.scan_iter(match=self.keys.readmodel_pattern, count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                deleted += await self.client.unlink(*batch)
                batch = []
        if batch:
            deleted += await self.client.unlink(*batch)
        return deleted


def _text(value: bytes | str | None) -> str | None:
    if not value:
        return None
    return value.decode() if isinstance(value, bytes) else value
