"""The API's per-request Redis work: rate limit, tenancy check and idempotency, in one script.

One EVALSHA per write request (pipelined with the other requests in flight) does, atomically:

1. the per-key token bucket (429 with a retry delay when empty; a batch pays per item);
2. existence of the campaigns the request touches, for this tenant (a campaign neither the
   read model nor a launch accepted by the API knows answers 404 - nothing is reserved, and
   nothing reaches the processor, so an unknown campaign id leaves no lasting state);
3. the Idempotency-Key: absent -> reserved with a *pending* marker that expires after the lock
   time (so a crashed request frees it); pending with the same fingerprint -> in progress (409);
   finished with the same fingerprint -> the stored response; another fingerprint -> mismatch;
   *retryable* (the broker did not acknowledge the first attempt's command) with the same
   fingerprint -> reserved again, so the retry re-sends the same command at once.

After Kafka acknowledged the command, :meth:`IngestStore.complete` queues the response for the
idempotency TTL (and, for pledges, a *pending* pledge row the projector later overwrites).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from services.pledge.adapters.redis_pipeline import AutoPipeline, LuaScript
from services.pledge.adapters.redis_readmodel import Keys
from services.pledge.api.ports import GateResult, PendingPledge

log = logging.getLogger("pledgeflow.api")

__all__ = ["CHARGE_SCRIPT", "COMPLETE_SCRIPT", "GATE_SCRIPT", "GateResult", "IngestStore"]

# The token bucket of one API key: KEYS[1] bucket; ARGV[1] rate/s, ARGV[2] burst, ARGV[3] cost.
# Leaves ``ok`` (the tokens were taken) or returns {'rate_limited', ms until enough tokens}.
_BUCKET = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local b = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(b[1])
local ts = tonumber(b[2])
if tokens == nil or ts == nil then tokens = burst; ts = now end
if now > ts then tokens = math.min(burst, tokens + (now - ts) * rate / 1000); ts = now end
local ok = tokens >= cost
if ok then tokens = tokens - cost end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', ts)
redis.call('PEXPIRE', KEYS[1], math.ceil(burst * 1000 / rate) + 1000)
if not ok then
  return {'rate_limited', math.ceil((math.min(cost, burst) - tokens) * 1000 / rate)}
end
"""

# KEYS[1] bucket, KEYS[2] idempotency key, KEYS[3] the projector's epoch marker, then n
# campaign hashes and their n launch markers.
# ARGV[1] rate/s, ARGV[2] burst, ARGV[3] token cost, ARGV[4] fingerprint (64 hex), ARGV[5]
# lock ms, ARGV[6] tenant, ARGV[7] 'one' (a missing campaign refuses the request), 'many'
# (missing campaigns are reported by position) or 'launch' (no campaign needs to exist; the
# launch marker is written), ARGV[8] launch marker TTL s.
# A campaign exists for the tenant when the projector recorded it as the tenant's, or the
# API accepted the tenant's launch of it (marker). Another tenant's campaign and a campaign
# that does not exist are the same answer: with qualified ids the first cannot even be named.
# A missing campaign is only "not found" while the read model is whole: without the projector's
# epoch marker (Redis lost its data, and the projector has not rebuilt yet) existing campaigns
# are missing too, so the answer is {'rebuilding'} (503, retry) rather than a false 404.
GATE_SCRIPT = LuaScript(
    _BUCKET
    + """
local n = (#KEYS - 3) / 2
local missing = {}
if ARGV[7] ~= 'launch' then
  for i = 1, n do
    local owner = redis.call('HGET', KEYS[3 + i], 'tenant')
    local mine = owner == ARGV[6]
    if not owner or owner == '' then mine = redis.call('GET', KEYS[3 + n + i]) == ARGV[6] end
    if not mine then missing[#missing + 1] = i end
  end
end
if #missing > 0 and redis.call('EXISTS', KEYS[3]) == 0 then return {'rebuilding'} end
if ARGV[7] == 'one' and #missing > 0 then return {'not_found'} end
local cur = redis.call('GET', KEYS[2])
if cur then
  if string.sub(cur, 2, 65) ~= ARGV[4] then return {'mismatch'} end
  local state = string.sub(cur, 1, 1)
  if state == 'D' then return {'replay', string.sub(cur, 66)} end
  if state == 'P' then return {'in_progress'} end
end
redis.call('SET', KEYS[2], 'P' .. ARGV[4], 'PX', ARGV[5])
if ARGV[7] == 'launch' then
  for i = 1, n do redis.call('SET', KEYS[3 + n + i], ARGV[6], 'EX', ARGV[8]) end
end
local out = {'ok'}
for i = 1, #missing do out[#out + 1] = missing[i] end
return out
"""
)

# KEYS[1] bucket; ARGV[1] rate/s, ARGV[2] burst, ARGV[3] cost: a request refused before the
# gate (bad header or body) or a read pays its token(s) too.
CHARGE_SCRIPT = LuaScript(_BUCKET + "\nreturn {'ok'}\n")


# KEYS[1] idempotency key, KEYS[2..] pledge hashes; ARGV[1] stored response, ARGV[2] TTL s,
# ARGV[3..#KEYS+1] pending pledge documents, then per pledge its index base and its id (the
# pending row joins the campaign's ``all`` and ``pending`` listings, as the projector's 'ix'
# op does). A pledge row the projector already wrote is left alone; a pending one records
# when (``pending_since``, ms): the API shows it expired after a while.
COMPLETE_SCRIPT = LuaScript(
    """
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
local t = redis.call('TIME')
local now = tostring(tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
for i = 2, #KEYS do
  if redis.call('HSETNX', KEYS[i], 'status', 'pending') == 1 then
    local base = ARGV[#KEYS + (i - 2) * 2 + 2]
    local member = ARGV[#KEYS + (i - 2) * 2 + 3]
    redis.call('HSET', KEYS[i], 'doc', ARGV[i + 1], 'ix', 'pending', 'pending_since', now)
    redis.call('ZADD', base .. 'pending', 0, member)
    redis.call('ZADD', base .. 'all', 0, member)
  end
end
return 1
"""
)


class IngestStore:
    """Gate and completion of write requests, over an :class:`AutoPipeline` (the API's
    :class:`~services.pledge.api.ports.IngestGate`)."""

    def __init__(
        self,
        pipeline: AutoPipeline,
        keys: Keys,
        *,
        rate_per_second: float,
        burst: int,
        lock_seconds: int,
        ttl_seconds: int,
    ) -> None:
        self.pipeline = pipeline
        self.keys = keys
        self._rate = repr(float(rate_per_second))
        self._burst = str(burst)
        self._lock_s = lock_seconds
        self._lock_ms = str(lock_seconds * 1000)
        self._ttl = ttl_seconds
        self._retries: set[asyncio.Task[Any]] = set()

    async def load_scripts(self) -> None:
        await GATE_SCRIPT.load(self.pipeline.client)
        await CHARGE_SCRIPT.load(self.pipeline.client)
        await COMPLETE_SCRIPT.load(self.pipeline.client)

    async def gate(
        self,
        *,
        key_hash: str,
        tenant_id: str,
        idempotency_key: str,
        fingerprint: str,
        campaign_ids: list[str],
        many: bool = False,
        cost: int = 1,
        launch: bool = False,
    ) -> GateResult:
        """Rate limit + existence + idempotency reservation, atomically."""
        keys = [
            self.keys.bucket(key_hash),
            self.keys.idempotency(tenant_id, idempotency_key),
            self.keys.projector_epoch(),
            *(self.keys.campaign(c) for c in campaign_ids),
            *(self.keys.launched(c) for c in campaign_ids),
        ]
        args: list[Any] = [
            self._rate,
            self._burst,
            str(cost),
            fingerprint,
            self._lock_ms,
            tenant_id,
            "launch" if launch else "many" if many else "one",
            self._ttl,
        ]
        reply = await self.pipeline.evalsha(GATE_SCRIPT, keys, args)
        outcome = reply[0].decode()
        if outcome == "replay":
            return GateResult("replay", stored=bytes(reply[1]))
        if outcome == "rate_limited":
            return GateResult("rate_limited", retry_after_ms=int(reply[1]))
        if outcome == "ok":
            return GateResult("ok", foreign=tuple(int(i) - 1 for i in reply[1:]))
        return GateResult(outcome)

    async def charge(self, *, key_hash: str, cost: int = 1) -> int:
        """Take ``cost`` tokens of the key's bucket: 0, or ms until they are available."""
        reply = await self.pipeline.evalsha(
            CHARGE_SCRIPT, [self.keys.bucket(key_hash)], [self._rate, self._burst, str(cost)]
        )
        return int(reply[1]) if reply[0] == b"rate_limited" else 0

    def complete(
        self,
        *,
        tenant_id: str,
        idempotency_key: str,
        fingerprint: str,
        status: int,
        body: bytes,
        pending_pledges: Sequence[PendingPledge] = (),
    ) -> None:
        """Store the response for replays; write *pending* rows of pledges not yet decided.

        Queued, not awaited: the command is already in Kafka, so the answer need not wait for
        another Redis round trip. The script is queued on the pipeline's one connection before
        the answer is written, so a retry this process reads later is gated after it (Redis
        runs a connection's commands in order). A failed store is tried again with back-off
        until the lock time has passed; after that the reservation has expired, and a retry
        re-sends the same command, which the processor ignores.
        """
        stored = b"D" + fingerprint.encode() + b"%03d" % status + body
        keys = [self.keys.idempotency(tenant_id, idempotency_key)]
        args: list[Any] = [stored, self._ttl]
        for campaign_id, pledge_id, doc in pending_pledges:
            keys.append(self.keys.pledge(campaign_id, pledge_id))
            args.append(doc)
        for campaign_id, pledge_id, _doc in pending_pledges:
            args.extend((self.keys.pledge_index(campaign_id, ""), pledge_id))
        try:
            reply = self.pipeline.execute("EVALSHA", COMPLETE_SCRIPT.sha, len(keys), *keys, *args)
        except Exception as exc:  # e.g. no running pipeline connection can be queued on
            log.warning("response not stored for idempotency: %r", exc)
            return
        reply.add_done_callback(lambda done: self._completed(done, keys, args))

    def _completed(self, done: asyncio.Future[Any], keys: list[str], args: list[Any]) -> None:
        if done.cancelled() or done.exception() is None:
            return
        # Redis lost the script (restart) or was out of reach: store it again shortly, so that
        # retries get the replay rather than "in progress" until the reservation expires.
        task = asyncio.get_running_loop().create_task(self._store_again(keys, args))
        self._retries.add(task)
        task.add_done_callback(self._retries.discard)

    async def _store_again(self, keys: list[str], args: list[Any]) -> None:
        loop = asyncio.get_running_loop()
        give_up = loop.time() + self._lock_s  # the reservation is gone by then anyway
        delay = 0.1
        while True:
            await asyncio.sleep(delay)
            try:
                await self.pipeline.evalsha(COMPLETE_SCRIPT, keys, args)
                return
            except Exception as exc:
                if loop.time() + delay > give_up:
                    log.warning("response not stored for idempotency: %r", exc)
                    return
            delay = min(delay * 2, 2.0)

    async def ready(self) -> bool:
        """True when Redis answers a PING within 2 s."""
        try:
            return bool(await asyncio.wait_for(self.pipeline.client.ping(), 2.0))
        except Exception:
            return False

    async def unsent(self, *, tenant_id: str, idempotency_key: str, fingerprint: str) -> None:
        """Mark a reservation whose command was not acknowledged retryable (``R``) for the
        idempotency TTL: the same request may re-send its command, another body is refused."""
        key = self.keys.idempotency(tenant_id, idempotency_key)
        current = await self.pipeline.execute("GET", key)
        if current == b"P" + fingerprint.encode():
            await self.pipeline.execute("SET", key, b"R" + fingerprint.encode(), "EX", self._ttl)
