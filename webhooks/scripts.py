"""Lua scripts that keep a delivery, its endpoint's due queue and its listings consistent.

One clock (DESIGN.md): every due time and claim deadline is Redis's ``TIME`` plus a delay, taken
inside the script that writes or compares it, so dispatchers and API processes whose host clocks
disagree never take a delivery early (a duplicate) or late.
"""

from __future__ import annotations

from webhooks import alerts
from webhooks.batching import ManyScript

# Shared (here and in webhooks.health_scripts, webhooks.lanes): Redis's time in ms as `now`;
# `listed(ep)`; after an endpoint's due queue changed, `reindex` publishes its earliest due time.
REINDEX = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
-- one-subject webhooks (endpoint ids "hook_...") keep no listings: nothing would ever trim them
local function listed(ep)
  return string.sub(ep, 1, 5) ~= 'hook_'
end
local function reindex(due_key, due_index, ep)
  local first = redis.call('ZRANGE', due_key, 0, 0, 'WITHSCORES')
  if #first == 0 then
    redis.call('ZREM', due_index, ep)
  else
    redis.call('ZADD', due_index, first[2], ep)
  end
end
-- Ordered lanes (webhooks.lanes): one subject's deliveries to one endpoint, by sequence. Make the
-- lowest one the lane's active delivery and due: now if every earlier message of the subject was
-- fanned out (`fan`'s watermark), else after `gap` ms (held). A lower one that arrives late takes
-- the place of a held one that was never taken; nothing overtakes one that went out. A held active
-- delivery is made due now once the fan-out catches up. Active values: "g|h <held until> <id>".
local function promote(lane, active, due, due_index, fan, gap, ep)
  local head = redis.call('ZRANGE', lane, 0, 0, 'WITHSCORES')
  if #head == 0 then
    redis.call('DEL', active)
    return
  end
  local id, seq = head[1], tonumber(head[2])
  local ready = tonumber(redis.call('HGET', fan, 'w') or '0') >= seq - 1
  local act = redis.call('GET', active)
  if act then
    local state, held_until, aid = string.match(act, '^(%a) (%d+) (.+)$')
    local untaken = state == 'h' and tonumber(redis.call('ZSCORE', due, aid) or '-1') == tonumber(held_until)
    if aid == id then
      if untaken and ready then
        redis.call('SET', active, 'g 0 ' .. id)
        redis.call('ZADD', due, now, id)
        reindex(due, due_index, ep)
      end
      return
    end
    if redis.call('ZSCORE', lane, aid) then
      if not untaken then return end
      redis.call('ZREM', due, aid)
    end
  end
  local at = now
  if not ready then at = now + tonumber(gap) end
  redis.call('SET', active, (ready and 'g ' or 'h ') .. string.format('%d', at) .. ' ' .. id)
  redis.call('ZADD', due, at, id)
  reindex(due, due_index, ep)
end
"""

# Create a delivery unless it exists (or its endpoint was deleted meanwhile). KEYS: 1 delivery,
# 2 endpoint due queue, 3 due index, 4 listing (all), 5 listing of the initial status, 6 endpoint hash,
# 7 lane, 8 the endpoint's lane index, 9 lane active, 10 the subject's fan-out watermark.
# ARGV: 1 delivery id, 2 message id, 3 endpoint id, 4 created ms, 5 delay ms (due at now + delay),
# 6 tenant, 7 url ('' = the endpoint's), 8 status ('pending' | 'failed'), 9 ttl ms for a delivery
# created failed, 10 note, 11 lane subject ('' = unordered), 12 sequence, 13 gap ms. A pending
# delivery with a lane joins it and waits its turn (`promote`), whatever its delay.
SCHEDULE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
if listed(ARGV[3]) and redis.call('HEXISTS', KEYS[6], 'id') == 0 then return 0 end
-- listed first: a listing entry without its row is dropped by the reads; a row without its queue
-- entry would never be sent (the fan-out repeated finds the row and skips it)
if listed(ARGV[3]) then
  redis.call('ZADD', KEYS[4], 0, ARGV[2])
  redis.call('ZADD', KEYS[5], 0, ARGV[2])
end
redis.call('HSET', KEYS[1], 'msg', ARGV[2], 'ep', ARGV[3], 'status', ARGV[8], 'attempts', 0, 'base', 0,
  'created', ARGV[4], 'tenant', ARGV[6], 'url', ARGV[7], 'note', ARGV[10])
if ARGV[8] == 'pending' and ARGV[11] ~= '' then
  redis.call('HSET', KEYS[1], 'lane', ARGV[11], 'seq', ARGV[12], 'next', '')
  redis.call('ZADD', KEYS[7], tonumber(ARGV[12]), ARGV[1])
  redis.call('SADD', KEYS[8], ARGV[11])
  promote(KEYS[7], KEYS[9], KEYS[2], KEYS[3], KEYS[10], ARGV[13], ARGV[3])
elseif ARGV[8] == 'pending' then
  local due = now + tonumber(ARGV[5])
  redis.call('HSET', KEYS[1], 'next', due)
  redis.call('ZADD', KEYS[2], due, ARGV[1])
  reindex(KEYS[2], KEYS[3], ARGV[3])
else
  redis.call('PEXPIRE', KEYS[1], ARGV[9])
end
return 1
"""

# Keep a message for as long as a failed delivery of it may be retried. KEYS: 1 message.
# ARGV: 1 its stored form (``Message.record``: one string, so Redis keeps it compact), 2 ttl ms.
SAVE_MESSAGE = """
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""

# Acknowledge outbox entries once everything they made is written. KEYS: 1 stream. ARGV: 1 group,
# then the entry ids.
ACK = """
return redis.call('XACK', KEYS[1], unpack(ARGV))
"""

# A fan-out's writes in one step (issue 15): its messages, every delivery, then the acknowledgement
# of its outbox entries, as calls in that order (``webhooks.batching``): a failure stops before the
# acknowledgement, and the fan-out repeated creates nothing twice.
FAN_OUT = ManyScript(REINDEX, {"save": SAVE_MESSAGE, "schedule": SCHEDULE, "ack": ACK})

# Claim due deliveries across endpoints in one step, with everything an attempt needs: the batched
# dispatcher's one round trip per loop (issue 15; before: a DUE, then per endpoint a TAKE, a read of
# the rows and messages, a read of the endpoint, and a NEXT when idle). KEYS: 1 due index.
# ARGV: 1 how many due endpoints to look at, 2 claim ms, 3 slots free in all, 4 slots per endpoint
# with none in flight, 5-6 an endpoint's key is ARGV[5]..id and its due queue's ARGV[5]..id..ARGV[6],
# 7 delivery key prefix, 8 message key prefix, then (endpoint id, its free slots) for each endpoint
# with attempts in flight. The rows' keys are known only once claimed, so they are built here: fine
# on one Redis or a Sentinel group (the supported deployments), not on Redis Cluster.
# Returns {now, claimed until, the earliest due time left or -1, then per endpoint with claims:
# {endpoint id, its hash (empty for one-subject hooks), {delivery id, row, message} ...}}; a message
# is its stored string ('' if expired), or the flat hash of one stored before that form.
CLAIM = (
    REINDEX
    + """
local total, per_ep = tonumber(ARGV[3]), tonumber(ARGV[4])
local ep_prefix, due_suffix, dlv_prefix, msg_prefix = ARGV[5], ARGV[6], ARGV[7], ARGV[8]
local busy = {}
for i = 9, #ARGV, 2 do busy[ARGV[i]] = tonumber(ARGV[i + 1]) end
local until_ms = now + tonumber(ARGV[2])
local out = {now, until_ms, -1}
if total > 0 then
  for _, ep in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))) do
    local n = math.min(busy[ep] or per_ep, total)
    if n > 0 then
      local due_key = ep_prefix .. ep .. due_suffix
      local batch = {ep, listed(ep) and redis.call('HGETALL', ep_prefix .. ep) or {}}
      for _, id in ipairs(redis.call('ZRANGEBYSCORE', due_key, '-inf', now, 'LIMIT', 0, n)) do
        local row = redis.call('HGETALL', dlv_prefix .. id)
        if #row == 0 then
          redis.call('ZREM', due_key, id)  -- the row is gone (its endpoint was deleted)
        else
          redis.call('ZADD', due_key, until_ms, id)
          local msg_key = msg_prefix .. string.match(id, '^[^:]+')
          local message  -- one string; a hash if stored before (issue 15)
          if redis.call('TYPE', msg_key).ok == 'hash' then
            message = redis.call('HGETALL', msg_key)
          else
            message = redis.call('GET', msg_key) or ''
          end
          table.insert(batch, {id, row, message})
          total = total - 1
        end
      end
      reindex(due_key, KEYS[1], ep)
      if #batch > 2 then table.insert(out, batch) end
      if total <= 0 then break end
    end
  end
end
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if first[2] then out[3] = math.floor(tonumber(first[2])) end
return out
"""
)

# Record one attempt, the decision, the endpoint's failure streak and the alerts it raises, in one
# step. KEYS: 1 delivery, 2 log, 3 due queue, 4 due index, 5 listing pending, 6 listing succeeded,
# 7 listing failed, 8 message, 9 endpoint, 10 failed-at, 11 outbox, 12 endpoint event log, 13 lane,
# 14 lane active, 15 the subject's fan-out watermark, 16 the endpoint's lane index.
# ARGV: 1 delivery id, 2 message id, 3 attempt JSON, 4 new status, 5 delay ms to the retry or '',
# 6 ttl ms (terminal), 7 endpoint id, 8 max log entries, 9 '1' if a request was really sent,
# 10 the claim's due score to require (fence) or '', 11 health ('fail', 'ok' or ''), 12 Redis's ms at
# the take, 13 event log max, 14 alert count, 15 lane gap ms, then each alert: 'x' (only if the
# delivery ends failed) or 'a' (always), and its EMIT arguments. A delivery of an ordered lane that
# ends (succeeded or failed) leaves it, and the next of its subject becomes due (`promote`).
# The failure streak: a failed attempt sets the endpoint's failing_since (unless set) in the same step
# that lists a failed delivery in failed-at with the same clock, so a heal replaying failed-at from
# failing_since misses none (issue 14). An attempt taken before the endpoint's last heal belongs to
# the streak that heal ended: it starts no new one, and a last attempt of it is replayed, not failed.
# Returns {0} if the delivery is gone or the fence does not hold, else {1, failing_since or '', now,
# '1' if a success came while the endpoint was disabled for failing (the caller heals it)}.
RECORD_BODY = """
if redis.call('EXISTS', KEYS[1]) == 0 then return {0} end
if ARGV[10] ~= '' and redis.call('ZSCORE', KEYS[3], ARGV[1]) ~= ARGV[10] then return {0} end
redis.call('RPUSH', KEYS[2], ARGV[3])
redis.call('LTRIM', KEYS[2], -tonumber(ARGV[8]), -1)
if ARGV[9] == '1' then redis.call('HINCRBY', KEYS[1], 'attempts', 1) end
local current = redis.call('HGET', KEYS[1], 'status')
if current == 'succeeded' then
  -- a duplicate send after a claim expired: the earlier success stands
  redis.call('PEXPIRE', KEYS[2], redis.call('PTTL', KEYS[1]))
  return {1, '', now, ''}
end
local status, delay, health = ARGV[4], ARGV[5], ARGV[11]
local endpoint = listed(ARGV[7]) and redis.call('HEXISTS', KEYS[9], 'id') == 1
local stale = false
if endpoint then
  local healed = redis.call('HGET', KEYS[9], 'healed_at')
  stale = healed ~= false and tonumber(healed) >= tonumber(ARGV[12])
end
local since, heal = '', ''
if endpoint and health == 'fail' and not stale then
  redis.call('HSETNX', KEYS[9], 'failing_since', tostring(now))
  since = redis.call('HGET', KEYS[9], 'failing_since')
elseif endpoint and health == 'ok' and redis.call('HEXISTS', KEYS[9], 'failing_since') == 1 then
  if redis.call('HGET', KEYS[9], 'disabled_reason') == '"failing"' then
    heal = '1'
  else
    redis.call('HDEL', KEYS[9], 'failing_since')
  end
end
if status == 'failed' and health == 'fail' and stale then
  status, delay = 'pending', '0'
  redis.call('HSET', KEYS[1], 'base', redis.call('HGET', KEYS[1], 'attempts'))
end
if status == 'pending' then
  local due = now + tonumber(delay)
  redis.call('HSET', KEYS[1], 'next', due, 'status', 'pending')
  redis.call('ZADD', KEYS[3], due, ARGV[1])
else
  redis.call('HSET', KEYS[1], 'status', status, 'next', '')
  redis.call('ZREM', KEYS[3], ARGV[1])
  if listed(ARGV[7]) then
    redis.call('ZREM', KEYS[5], ARGV[2])
    redis.call('ZREM', KEYS[7], ARGV[2])
    if status == 'succeeded' then
      redis.call('ZADD', KEYS[6], 0, ARGV[2])
    else
      redis.call('ZADD', KEYS[7], 0, ARGV[2])
      redis.call('ZADD', KEYS[10], now, ARGV[2])
    end
  end
  redis.call('PEXPIRE', KEYS[1], ARGV[6])
  redis.call('PEXPIRE', KEYS[2], ARGV[6])
  -- the body must outlive the row, or a later retry/recover would find nothing to send
  if redis.call('PTTL', KEYS[8]) < tonumber(ARGV[6]) then redis.call('PEXPIRE', KEYS[8], ARGV[6]) end
  local lane = redis.call('HGET', KEYS[1], 'lane')
  if lane then
    redis.call('ZREM', KEYS[13], ARGV[1])
    if redis.call('ZCARD', KEYS[13]) == 0 then redis.call('SREM', KEYS[16], lane) end
    promote(KEYS[13], KEYS[14], KEYS[3], KEYS[4], KEYS[15], ARGV[15], ARGV[7])
  end
end
local i = 16
for _ = 1, tonumber(ARGV[14]) do
  local when = ARGV[i]
  if endpoint and (when == 'a' or status == 'failed') then
    i = emit(ARGV, KEYS[11], KEYS[12], ARGV[13], i + 1)
    if status == 'succeeded' then
      redis.call('HDEL', KEYS[1], 'alerted')
    else
      redis.call('HSET', KEYS[1], 'alerted', '1')
    end
  else
    i = i + 3 + tonumber(ARGV[i + 2])
  end
end
reindex(KEYS[3], KEYS[4], ARGV[7])
return {1, since, now, heal}
"""
# Batched (``webhooks.batching.Batch``): one script call records every attempt that ended in a tick.
# Isolated: one record that fails (a corrupt row) leaves the others of its round trip recorded.
RECORD = ManyScript(REINDEX + alerts.EMIT, {"record": RECORD_BODY}, isolated=True)

# Send a delivery again now, with a fresh retry schedule. KEYS: 1 delivery, 2 log, 3 due queue,
# 4 due index, 5 listing pending, 6 listing succeeded, 7 listing failed, 8 (unused), 9 (unused),
# 10 failed-at, 11 lane, 12 lane active, 13 fan-out watermark, 14 lane index.
# ARGV: 1 delivery id, 2 message id, 3 (unused), 4 endpoint id, 5 lane gap ms. Returns 0 if gone.
# A delivery of an ordered lane goes back into it: now if it is the lane's active one or the lane
# is idle, else in its turn (so a heal replays each subject's messages in order).
REQUEUE = (
    REINDEX
    + """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local attempts = redis.call('HGET', KEYS[1], 'attempts')
redis.call('HSET', KEYS[1], 'status', 'pending', 'next', now, 'base', attempts)
redis.call('PERSIST', KEYS[1])
redis.call('PERSIST', KEYS[2])
if listed(ARGV[4]) then
  redis.call('ZREM', KEYS[6], ARGV[2])
  redis.call('ZREM', KEYS[7], ARGV[2])
  redis.call('ZREM', KEYS[10], ARGV[2])
  redis.call('ZADD', KEYS[5], 0, ARGV[2])
end
local lane = redis.call('HGET', KEYS[1], 'lane')
local act = redis.call('GET', KEYS[12])
if lane and not (act and string.match(act, '^%a %d+ (.+)$') == ARGV[1]) then
  redis.call('HSET', KEYS[1], 'next', '')
  redis.call('ZADD', KEYS[11], tonumber(redis.call('HGET', KEYS[1], 'seq')), ARGV[1])
  redis.call('SADD', KEYS[14], lane)
  promote(KEYS[11], KEYS[12], KEYS[3], KEYS[4], KEYS[13], ARGV[5], ARGV[4])
  return 1
end
redis.call('ZADD', KEYS[3], now, ARGV[1])
reindex(KEYS[3], KEYS[4], ARGV[4])
return 1
"""
)

# Park a pending delivery without an attempt (its endpoint is disabled for now) until the
# endpoint's next probe, at least `min` ms from now. KEYS: 1 due queue, 2 due index, 3 probes.
# ARGV: 1 delivery id, 2 min ms, 3 endpoint id.
POSTPONE = (
    REINDEX
    + """
local probe = tonumber(redis.call('ZSCORE', KEYS[3], ARGV[3]) or 0)
redis.call('ZADD', KEYS[1], 'XX', math.max(probe, now + tonumber(ARGV[2])), ARGV[1])
reindex(KEYS[1], KEYS[2], ARGV[3])
return 1
"""
)

# Make every parked delivery of an endpoint due now (it healed). KEYS: 1 due queue, 2 due index.
# ARGV: 1 (unused), 2 endpoint id. Returns how many.
RELEASE = (
    REINDEX
    + """
local ids = redis.call('ZRANGE', KEYS[1], 0, -1)
for _, id in ipairs(ids) do
  redis.call('ZADD', KEYS[1], now, id)
end
reindex(KEYS[1], KEYS[2], ARGV[2])
return #ids
"""
)

# Set a member's score to Redis's now + ms. KEYS: 1 the set. ARGV: 1 member, 2 ms. Returns now.
AT = (
    REINDEX
    + """
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
return now
"""
)

# Redis's now in ms (for values stored and compared later by other processes).
NOW = REINDEX + "\nreturn now\n"

# Remove a consumer from the outbox group only if it is gone (no beacon) and holds nothing, in one
# step: between a separate check and the delete, a live consumer could read entries, and deleting
# it would drop them from the pending list for good. KEYS: 1 stream, 2 the consumer's beacon.
# ARGV: 1 group, 2 consumer. Returns 1 if removed.
DROP_CONSUMER = """
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
if #redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2]) > 0 then return 0 end
redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
return 1
"""
