"""The read model's Redis layout and the scripts that change it.

Key names are namespaced by the topic prefix (``<prefix>pf:``) so that tests sharing one Redis
never see each other, and ``pledgeflow readmodel rebuild`` can wipe exactly one namespace.

* ``<ns>rm:c:<campaign_id>``: hash ``seq`` (last applied), ``tenant``, ``doc`` (summary JSON);
* ``<ns>rm:p:<campaign_id>/<pledge_id>``: hash ``status``, ``doc`` (JSON), ``refusal`` (JSON of
  the last refused operation on an accepted pledge, e.g. a late cancellation);
* ``<ns>launch:<campaign_id>``: written by the API when it accepts a launch (kept the
  idempotency TTL), so that writes to a campaign the projector has not shown yet pass the gate;
* ``<ns>rm:d:<command_id>``: the decision the processor made on a command (for ``Prefer: wait``),
  kept ``readmodel_decision_ttl_seconds``;
* ``<ns>rm:ci:<tenant>:<all|open|closed>``: sorted sets (score 0, ordered by campaign id) of a
  tenant's campaigns, the ``GET /v1/campaigns`` listing;
* ``<ns>rm:pi:<campaign_id>:<all|pending|accepted|rejected|cancelled>``: sorted sets (score 0,
  ordered by pledge id) of a campaign's pledges; a pledge hash's ``ix`` field names the status
  set it is in;
* ``<ns>rm:e:<campaign_id>``: sorted set of the campaign's events (score = seq, member = the
  event's public JSON), the ``GET /v1/campaigns/{id}/events`` listing.

The index sets are named ``<base><status>``: the scripts append the status to a base built
here (:meth:`Keys.campaign_index` / :meth:`Keys.pledge_index` with ``status=""``), so every
key name still comes from :class:`Keys`. Listings page by member (``ZRANGEBYLEX``) or by seq
(``ZRANGEBYSCORE``): a member never moves inside a set, so a page after a cursor neither
repeats nor skips an item that existed when paging began, whatever arrives meanwhile.

One module (over 400 lines) because the layout above and the Lua scripts that write and read
it must agree key for key: :class:`Keys` builds every name the scripts are given, and a script
split from it would spell the layout a second time.

Campaign ids here are tenant-qualified (``<tenant>/<campaign>``, :mod:`schemas.tenancy`);
``/`` is outside the id alphabet, so ``<campaign>/<pledge>`` names exactly one pair (``:`` did
not: ``acme:spring`` + ``p1`` and ``acme`` + ``spring:p1`` were one key).

Every change of a campaign is applied by one Lua script that compares the stored ``seq``:
a redelivered event (seq already applied) is a no-op, and a stale writer is refused.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import redis.asyncio as aioredis

from services.pledge.adapters.redis_pipeline import LuaScript

__all__ = [
    "APPLY_SCRIPT",
    "CampaignRow",
    "JoinedHash",
    "Keys",
    "PledgeOp",
    "PledgeRow",
    "ReadModelStore",
    "unlink_matching",
]


class Keys:
    """Every Redis key of one namespace (one topic prefix).

    The listing scripts append to prefixes built here: a campaign's and a pledge's key must
    end with its id (``campaign("")`` / ``pledge(c, "")`` are the row prefixes of a page), and
    an index set's name with its status (``campaign_index(t, "")`` / ``pledge_index(c, "")``).
    """

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

    def campaign_index(self, tenant_id: str, status: str = "all") -> str:
        """A tenant's campaigns with ``status`` (``""``: the base the scripts append to)."""
        return f"{self.ns}rm:ci:{tenant_id}:{status}"

    def pledge_index(self, campaign_id: str, status: str = "all") -> str:
        """A campaign's pledges with ``status`` (``""``: the base the scripts append to)."""
        return f"{self.ns}rm:pi:{campaign_id}:{status}"

    def events(self, campaign_id: str) -> str:
        """A campaign's events by seq."""
        return f"{self.ns}rm:e:{campaign_id}"

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
#   ix:<pledge_id> -> pledge index base: move the pledge (the previous key) to the index set
#              of its status now (its hash's 'ix' field says which set holds it)
#   cx:<campaign_id> -> the tenant's campaign index base; value = 'open' | 'closed'
#   ev:<seq> -> the campaign's events set: the event's JSON at score seq
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
  elseif string.sub(op, 1, 3) == 'ix:' then
    local member = string.sub(op, 4)
    local s = redis.call('HGET', KEYS[i - 1], 'status')
    local was = redis.call('HGET', KEYS[i - 1], 'ix')
    if s and s ~= was then
      if was then redis.call('ZREM', KEYS[i] .. was, member) end
      redis.call('ZADD', KEYS[i] .. s, 0, member)
      redis.call('ZADD', KEYS[i] .. 'all', 0, member)
      redis.call('HSET', KEYS[i - 1], 'ix', s)
    end
  elseif string.sub(op, 1, 3) == 'cx:' then
    local member = string.sub(op, 4)
    redis.call('ZREM', KEYS[i] .. 'open', member)
    redis.call('ZREM', KEYS[i] .. 'closed', member)
    redis.call('ZADD', KEYS[i] .. val, 0, member)
    redis.call('ZADD', KEYS[i] .. 'all', 0, member)
  elseif string.sub(op, 1, 3) == 'ev:' then
    redis.call('ZADD', KEYS[i], tonumber(string.sub(op, 4)), val)
  end
end
return 1
"""
)


# A listing page. KEYS[1] index set; ARGV[1] lower bound ('-' or '(<last id>'), ARGV[2] most
# members, then groups of (key prefix the member is appended to, field count, fields...): the
# rows, and optionally a hash read beside each row (a pledge's payment record).
# Returns member, then every group's fields, per member (a hash that is gone gives nils).
PAGE_SCRIPT = """
local ids = redis.call('ZRANGEBYLEX', KEYS[1], ARGV[1], '+', 'LIMIT', 0, tonumber(ARGV[2]))
local groups = {}
local i = 3
while i <= #ARGV do
  local n = tonumber(ARGV[i + 1])
  local fields = {}
  for j = 1, n do fields[j] = ARGV[i + 1 + j] end
  groups[#groups + 1] = {ARGV[i], fields, n}
  i = i + 2 + n
end
local out = {}
for _, id in ipairs(ids) do
  out[#out + 1] = id
  for _, group in ipairs(groups) do
    local values = redis.call('HMGET', group[1] .. id, unpack(group[2]))
    for j = 1, group[3] do out[#out + 1] = values[j] end
  end
end
return out
"""


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
    #: Its payment record, read beside it by a listing page (:class:`JoinedHash`); None when
    #: there is none (or the store joins none).
    payment: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class JoinedHash:
    """A hash a pledge page reads beside each row in the same script (no round trip per
    row): the settlement read model's payment record. Given here by the composition root,
    since that layout belongs to settlement (whose adapter imports this module)."""

    #: ``(campaign_id, pledge_id) -> key``; ``key(c, "")`` must be the prefix of every key.
    key: Callable[[str, str], str]
    fields: Sequence[str]
    #: The values of ``fields`` in order (None: absent) -> the record (None: there is none).
    parse: Callable[[Sequence[bytes | None]], dict[str, Any] | None]


class ReadModelStore:
    """Reads and writes of the read model (one namespace)."""

    def __init__(
        self, client: aioredis.Redis, keys: Keys, *, payments: JoinedHash | None = None
    ) -> None:
        self.client = client
        self.keys = keys
        #: Read beside each row of a pledge page (None: pages carry no payment).
        self.payments = payments
        self._page_script = client.register_script(PAGE_SCRIPT)

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
            self.keys.pledge(campaign_id, pledge_id), _PLEDGE_FIELDS
        )
        if status is None or doc is None:
            return None
        return _pledge_row(status, doc, refusal, cancel, since)

    async def campaign_page(
        self, tenant_id: str, status: str, after: str, limit: int
    ) -> tuple[list[CampaignRow], str | None]:
        """Up to ``limit`` of the tenant's campaigns with ``status`` (``all``, ``open``,
        ``closed``) whose id sorts after ``after`` (``""``: from the first), in id order, and
        the id to resume after (None: no more)."""
        index = self.keys.campaign_index(tenant_id, status)
        found, more = await self._page(
            index, [(self.keys.campaign(""), _CAMPAIGN_FIELDS)], after, limit
        )
        rows = [
            CampaignRow(int(seq), _text(tenant), orjson.loads(doc) if doc else None)
            for seq, tenant, doc in found
            if seq is not None
        ]
        return rows, more

    async def pledge_page(
        self, campaign_id: str, status: str, after: str, limit: int
    ) -> tuple[list[PledgeRow], str | None]:
        """Up to ``limit`` of the campaign's pledges with ``status`` (or ``all``) whose id
        sorts after ``after``, in id order, and the id to resume after (None: no more)."""
        index = self.keys.pledge_index(campaign_id, status)
        groups: list[tuple[str, Sequence[str]]] = [
            (self.keys.pledge(campaign_id, ""), _PLEDGE_FIELDS)
        ]
        payments = self.payments
        if payments is not None:
            groups.append((payments.key(campaign_id, ""), payments.fields))
        found, more = await self._page(index, groups, after, limit)
        width = len(_PLEDGE_FIELDS)
        rows = []
        for values in found:
            row_status, doc, refusal, cancel, since = values[:width]
            if row_status is None or doc is None:
                continue
            payment = None if payments is None else payments.parse(values[width:])
            rows.append(_pledge_row(row_status, doc, refusal, cancel, since, payment))
        return rows, more

    async def _page(
        self,
        index: str,
        groups: list[tuple[str, Sequence[str]]],
        after: str,
        limit: int,
    ) -> tuple[list[list[Any]], str | None]:
        """One script call: the index's next ``limit`` members and, per ``(key prefix,
        fields)`` group, the fields of the hash ``prefix + member`` (a consistent snapshot in
        one round trip: a pipeline of one HMGET per row cost the API more CPU than the rest
        of a page)."""
        low = f"({after}" if after else "-"
        args: list[Any] = [low, limit + 1]
        for prefix, fields in groups:
            args += [prefix, len(fields), *fields]
        reply: list[Any] = await self._page_script(keys=[index], args=args)
        width = sum(len(fields) for _, fields in groups) + 1
        rows = [reply[i : i + width] for i in range(0, len(reply), width)]
        more = None
        if len(rows) > limit:
            rows = rows[:limit]
            last = rows[-1][0]
            more = last.decode() if isinstance(last, bytes) else str(last)
        return [row[1:] for row in rows], more

    async def event_page(
        self, campaign_id: str, after_seq: int, limit: int
    ) -> tuple[list[bytes], int | None]:
        """Up to ``limit`` of the campaign's events after ``after_seq`` (stored JSON, in seq
        order) and the seq to resume after (None: no more yet)."""
        found: list[Any] = await self.client.zrangebyscore(
            self.keys.events(campaign_id),
            f"({after_seq}",
            "+inf",
            start=0,
            num=limit + 1,
            withscores=True,
        )
        more = int(found[limit - 1][1]) if len(found) > limit else None
        return [bytes(member) for member, _seq in found[:limit]], more

    async def decision(self, command_id: str) -> dict[str, Any] | None:
        raw = await self.client.get(self.keys.decision(command_id))
        return None if raw is None else orjson.loads(raw)

    async def wipe(self) -> int:
        """Delete every read-model key of this namespace; returns how many."""
        return await unlink_matching(self.client, self.keys.readmodel_pattern)


async def unlink_matching(client: aioredis.Redis, pattern: str) -> int:
    """Delete every key matching the glob ``pattern`` (SCAN, UNLINK by 1000: no long block of
    the server); returns how many. What a read model's rebuild wipes."""
    deleted = 0
    batch: list[bytes] = []
    async for key in client.scan_iter(match=pattern, count=1000):
        batch.append(key)
        if len(batch) >= 1000:
            deleted += await client.unlink(*batch)
            batch = []
    if batch:
        deleted += await client.unlink(*batch)
    return deleted


_PLEDGE_FIELDS = ["status", "doc", "refusal", "cancel", "pending_since"]
_CAMPAIGN_FIELDS = ["seq", "tenant", "doc"]


def _pledge_row(
    status: bytes | str,
    doc: bytes | str,
    refusal: bytes | str | None,
    cancel: bytes | str | None,
    since: bytes | str | None,
    payment: dict[str, Any] | None = None,
) -> PledgeRow:
    return PledgeRow(
        status=_text(status) or "",
        doc=orjson.loads(doc),
        refusal=orjson.loads(refusal) if refusal else None,
        cancel=orjson.loads(cancel) if cancel else None,
        pending_since=int(since) if since else None,
        payment=payment,
    )


def _text(value: bytes | str | None) -> str | None:
    if not value:
        return None
    return value.decode() if isinstance(value, bytes) else value
