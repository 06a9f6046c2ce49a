"""The Lua scripts of the Redis delivery queue (:mod:`services.notify.adapters.redis_queue`,
whose docstring names the keys): each runs atomically in Redis, so a lane's due set and the
lanes index never disagree, and a claim checks the owner token in the same step.
"""

from __future__ import annotations

__all__ = ["ENQUEUE", "FINISH", "MIGRATE", "PENDING", "REDRIVE", "RETRY", "TAKE"]

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

ENQUEUE = """
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
TAKE = (
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
FINISH = (
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

RETRY = (
    _HEAD
    + """
redis.call('HSET', KEYS[2], 'attempts', ARGV[3])
redis.call('HSETNX', KEYS[2], 'first_ms', ARGV[4])
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
head(KEYS[3], KEYS[1], ARGV[5])
"""
)

REDRIVE = (
    _HEAD
    + """
redis.call('DEL', KEYS[2])
redis.call('HSET', KEYS[2], 'data', ARGV[2], 'lane', ARGV[3], 'part', ARGV[4], 'attempts', 0,
  'state', 'pending')
redis.call('ZADD', KEYS[1], ARGV[5], ARGV[1])
head(KEYS[3], KEYS[1], ARGV[6])
"""
)

PENDING = """
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
MIGRATE = """
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
