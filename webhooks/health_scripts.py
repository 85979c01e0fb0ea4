"""Lua scripts that keep an endpoint's own state consistent: guarded field writes, the disable for
failing, the heal (with the replay it owes) and claims of due probes and replays.

One clock (DESIGN.md): every time they write or compare is Redis's ``TIME`` (``scripts.REINDEX``).
"""

from __future__ import annotations

from webhooks import alerts
from webhooks.scripts import REINDEX

# Write fields of an endpoint hash only while the endpoint exists (a write racing a delete
# must not recreate a partial hash). KEYS: 1 endpoint. ARGV: n, then n field/value pairs, then
# the fields to delete. Returns 0 if the endpoint is gone.
ENDPOINT_WRITE = """
if redis.call('HEXISTS', KEYS[1], 'id') == 0 then return 0 end
local n = tonumber(ARGV[1])
for i = 2, 2 * n, 2 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
end
for i = 2 * n + 2, #ARGV do
  redis.call('HDEL', KEYS[1], ARGV[i])
end
return 1
"""

# Disable an endpoint that has failed without a success for `threshold` ms (checked here, by Redis's
# clock, against failing_since as it stands now: a success since then cleared it), probe it in
# `first probe` ms and append the alert. KEYS: 1 endpoint, 2 probes, 3 outbox, 4 event log.
# ARGV: 1 threshold ms, 2 first probe ms, 3 endpoint id, 4 event log max, then the alert (EMIT's).
# Returns 1 if it disabled the endpoint now.
DISABLE_FAILING = (
    REINDEX
    + alerts.EMIT
    + """
if redis.call('HGET', KEYS[1], 'enabled') ~= 'true' then return 0 end
local since = redis.call('HGET', KEYS[1], 'failing_since')
if not since or now - tonumber(since) < tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'enabled', 'false', 'disabled_reason', '"failing"', 'disabled_at', tostring(now))
redis.call('HDEL', KEYS[1], 'probes')
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[2]), ARGV[3])
emit(ARGV, KEYS[3], KEYS[4], ARGV[4], 5)
return 1
"""
)

# Re-enable an endpoint disabled for failing (a probe or a late attempt succeeded), unless a decision
# by hand came first, and append the alert; the replay it owes is booked in the same step (replays,
# due now; replay_from in the endpoint), so a dispatcher that dies before replaying leaves it to
# another. KEYS: 1 endpoint, 2 probes, 3 outbox, 4 event log, 5 replays. ARGV: 1 endpoint id,
# 2 event log max, then the alert. Returns 0 if it was not disabled for failing, else 1.
HEAL = (
    REINDEX
    + alerts.EMIT
    + """
if redis.call('HGET', KEYS[1], 'disabled_reason') ~= '"failing"' then return 0 end
-- unknown start (an endpoint stored before failing_since was kept with it): every failed message
local since = redis.call('HGET', KEYS[1], 'failing_since') or '0'
redis.call('HSET', KEYS[1], 'enabled', 'true', 'healed_at', tostring(now), 'replay_from', since)
redis.call('HDEL', KEYS[1], 'disabled_reason', 'disabled_at', 'failing_since', 'probes')
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZADD', KEYS[5], now, ARGV[1])
emit(ARGV, KEYS[3], KEYS[4], ARGV[2], 3)
return 1
"""
)

# Claim the members of a time-scored set that are due by Redis's clock, pushing each `claim` ms
# ahead, so two dispatchers never both act on one (a probe). KEYS: 1 the set. ARGV: 1 limit,
# 2 claim ms. Returns {now, member...}.
CLAIM_DUE = (
    REINDEX
    + """
local found = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
for _, member in ipairs(found) do redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), member) end
table.insert(found, 1, now)
return found
"""
)
