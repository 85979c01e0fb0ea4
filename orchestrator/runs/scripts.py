"""Lua scripts: the atomic Redis operations behind every transition, lease and heartbeat.

Each script is a compare-and-set against state read just before it, so the Python side computes
the new execution (``states.advance``) and Redis commits it only if nothing moved in between.
"""

from __future__ import annotations

# KEYS: 1 run hash, 2 outbox stream, 3 run events list, 4 tenant index, 5 tenant+flow index,
#       6 old status index, 7 new status index, 8 old flow+status index, 9 new flow+status index,
#       10 leases zset, 11 pending zset, 12 arq job key, 13 arq result key, 14 arq queue,
#       15 arq job key of the run's current attempt (dropped on terminal states),
#       16 set of tenants, 17 set of the tenant's flows
# ARGV: 1 expected sequence ('' = the run must not exist yet), 2 new sequence, 3 new status,
#       4 attempt, 5 execution JSON, 6 event JSON (run log), 7 wire body, 8 run id, 9 message id,
#       10 event type, 11 tenant, 12 flow id, 13 lease ('' keep | 'del' | deadline ms),
#       14 pending ('' keep | 'del' | due ms), 15 arq job payload ('' none), 16 arq job id,
#       17 arq job score ms, 18 arq job expiry ms, 19 retention ms ('' none),
#       20 transitions channel, 21 wake channel, 22 lease must have expired before this ms ('' none),
#       23 run webhook JSON ('' none), 24 run input JSON ('' none), 25 job id of KEYS[15]
# Returns 1 when committed, 0 when the sequence moved, -1 when the lease was renewed meanwhile.
TRANSITION = """
local cur = redis.call('HGET', KEYS[1], 'sequence')
if ARGV[1] == '' then
  if cur then return 0 end
elseif cur ~= ARGV[1] then
  return 0
end
if ARGV[22] ~= '' then
  local lease = redis.call('ZSCORE', KEYS[10], ARGV[8])
  if lease and tonumber(lease) > tonumber(ARGV[22]) then return -1 end
end
local id = ARGV[8]
local old = redis.call('HGET', KEYS[1], 'status')
redis.call('HSET', KEYS[1], 'json', ARGV[5], 'status', ARGV[3], 'sequence', ARGV[2],
  'attempt', ARGV[4], 'tenant', ARGV[11], 'flow', ARGV[12])
if ARGV[23] ~= '' then redis.call('HSET', KEYS[1], 'webhook', ARGV[23]) end
if ARGV[24] ~= '' then redis.call('HSET', KEYS[1], 'input', ARGV[24]) end
if not old then
  redis.call('ZADD', KEYS[4], 0, id)
  redis.call('ZADD', KEYS[5], 0, id)
  redis.call('SADD', KEYS[16], ARGV[11])
  redis.call('SADD', KEYS[17], ARGV[12])
end
if old ~= ARGV[3] then
  if old then
    redis.call('ZREM', KEYS[6], id)
    redis.call('ZREM', KEYS[8], id)
  end
  redis.call('ZADD', KEYS[7], 0, id)
  redis.call('ZADD', KEYS[9], 0, id)
end
local entry = {'id', ARGV[9], 'type', ARGV[10], 'tenant', ARGV[11], 'subject', id,
  'flow', ARGV[12], 'body', ARGV[7]}
local hook = redis.call('HGET', KEYS[1], 'webhook')
if hook then
  table.insert(entry, 'hook')
  table.insert(entry, hook)
end
redis.call('XADD', KEYS[2], '*', unpack(entry))
redis.call('RPUSH', KEYS[3], ARGV[6])
if ARGV[13] == 'del' then
  redis.call('ZREM', KEYS[10], id)
elseif ARGV[13] ~= '' then
  redis.call('ZADD', KEYS[10], ARGV[13], id)
end
if ARGV[14] == 'del' then
  redis.call('ZREM', KEYS[11], id)
elseif ARGV[14] ~= '' then
  redis.call('ZADD', KEYS[11], ARGV[14], id)
end
local woke = false
if ARGV[15] ~= '' then
  if redis.call('EXISTS', KEYS[12], KEYS[13]) == 0 then
    redis.call('SET', KEYS[12], ARGV[15], 'PX', ARGV[18])
    redis.call('ZADD', KEYS[14], ARGV[17], ARGV[16])
    woke = true
  end
end
if ARGV[19] ~= '' then
  redis.call('PEXPIRE', KEYS[1], ARGV[19])
  redis.call('PEXPIRE', KEYS[3], ARGV[19])
  redis.call('HDEL', KEYS[1], 'partial')
  -- a queued job of a run that ended (cancelled while queued) must never start
  redis.call('ZREM', KEYS[14], ARGV[25])
  redis.call('DEL', KEYS[15])
end
redis.call('PUBLISH', ARGV[20], id .. ' ' .. ARGV[3] .. ' ' .. ARGV[2] .. ' ' .. ARGV[4])
if woke then redis.call('PUBLISH', ARGV[21], '1') end
return 1
"""

# Take the lease of a retried attempt whose run is already `running` (no status change).
# KEYS: 1 run hash, 2 leases, 3 pending. ARGV: 1 run id, 2 attempt, 3 lease deadline ms.
# Returns 1 when taken, 0 when the attempt is not (or no longer) the run's current, idle one.
ACQUIRE = """
local fields = redis.call('HMGET', KEYS[1], 'status', 'attempt')
if fields[1] ~= 'running' or fields[2] ~= ARGV[2] then return 0 end
if redis.call('ZSCORE', KEYS[2], ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
return 1
"""

# Renew the leases of the attempts a worker holds.
# KEYS: 1 leases. ARGV: deadline ms, then run id / attempt / run hash key triples.
# Returns the run ids whose attempt is no longer current (the worker must stop them).
HEARTBEAT = """
local lost = {}
for i = 2, #ARGV, 3 do
  local id, attempt, key = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local fields = redis.call('HMGET', key, 'status', 'attempt')
  if fields[1] == 'running' and fields[2] == attempt and redis.call('ZSCORE', KEYS[1], id) then
    redis.call('ZADD', KEYS[1], 'XX', ARGV[1], id)
  else
    table.insert(lost, id)
  end
end
return lost
"""

# Save a flow's partial output while its attempt is current.
# KEYS: 1 run hash. ARGV: 1 attempt, 2 partial JSON. Returns 1 when saved.
SAVE_PARTIAL = """
local fields = redis.call('HMGET', KEYS[1], 'status', 'attempt')
if fields[1] ~= 'running' or fields[2] ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'partial', ARGV[2])
return 1
"""

# Make sure an attempt's arq job will run: used only for attempts that should have started long
# ago. A claim left by a worker that lost the job (it died, or Redis went away between arq's claim
# and our start) is dropped so that arq runs the job again now, not after its job timeout; a job
# that exists is put back in the queue; a missing one is created. Starting twice is harmless: the
# start transition is a compare-and-set.
# KEYS: 1 job key, 2 result key, 3 queue, 4 arq in-progress key.
# ARGV: 1 payload, 2 job id, 3 score ms, 4 expiry ms, 5 wake channel. Returns 1 if created.
ENQUEUE = """
redis.call('DEL', KEYS[4])
local created = 0
if redis.call('EXISTS', KEYS[1], KEYS[2]) == 0 then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[4])
  created = 1
end
redis.call('ZADD', KEYS[3], 'NX', ARGV[3], ARGV[2])
redis.call('PUBLISH', ARGV[5], '1')
return created
"""
