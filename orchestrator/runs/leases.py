"""Leases and pending starts: the two books that prove an attempt alive or overdue.

A running attempt holds a lease (``orch:leases``, run id -> deadline ms) that its worker's heartbeat
renews; an expired lease means the worker was lost (the reaper retries or fails the run). A queued
or retried attempt has a pending entry (``orch:pending``, run id -> due ms) until it starts; an
overdue one has its job enqueued again. Transitions set and clear both (``runs.transition``).

One clock (DESIGN.md): every deadline here is written and compared inside a script, with Redis's
``TIME``, so a worker whose host clock is wrong can neither reap a healthy attempt nor keep a dead
one alive.
"""

from __future__ import annotations

from collections.abc import Sequence

from redis.asyncio import Redis

from orchestrator.runs import keys

_NOW = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
"""

# Take the lease of a retried attempt whose run is already `running` (no status change).
# Returns 1 when taken, 0 when the attempt is not (or no longer) the run's current, idle one.
ACQUIRE = (
    """
local run, leases, pending = unpack(KEYS)
local run_id, attempt, lease_ms, holder = unpack(ARGV)
"""
    + _NOW
    + """
local fields = redis.call('HMGET', run, 'status', 'attempt')
if fields[1] ~= 'running' or fields[2] ~= attempt then return 0 end
if redis.call('ZSCORE', leases, run_id) then return 0 end
redis.call('ZADD', leases, now + tonumber(lease_ms), run_id)
redis.call('ZREM', pending, run_id)
if holder ~= '' then redis.call('HSET', run, 'holder', holder) end
return 1
"""
)

# Renew the leases of the attempts a worker holds. ARGV: lease ms, then run id / attempt / run hash
# key triples. Returns the run ids whose attempt is no longer current (to be stopped).
HEARTBEAT = (
    """
local leases = KEYS[1]
local lease_ms = tonumber(ARGV[1])
"""
    + _NOW
    + """
local lost = {}
for i = 2, #ARGV, 3 do
  local id, attempt, key = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local fields = redis.call('HMGET', key, 'status', 'attempt')
  if fields[1] == 'running' and fields[2] == attempt and redis.call('ZSCORE', leases, id) then
    redis.call('ZADD', leases, 'XX', now + lease_ms, id)
  else
    table.insert(lost, id)
  end
end
return lost
"""
)

# The members of a deadline set (leases, pending) that are due by Redis's clock. ARGV: 1 limit.
DUE = (
    """
local book = KEYS[1]
local limit = tonumber(ARGV[1])
"""
    + _NOW
    + """
return redis.call('ZRANGEBYSCORE', book, '-inf', now, 'LIMIT', 0, limit)
"""
)

# Move an existing pending entry to Redis's now + ms. ARGV: 1 run id, 2 ms.
POSTPONE = (
    """
local pending = KEYS[1]
local run_id, ms = unpack(ARGV)
"""
    + _NOW
    + """
return redis.call('ZADD', pending, 'XX', now + tonumber(ms), run_id)
"""
)


# A worker says it is alive: ZADD workers now + ttl id, and drop the ones that expired.
# KEYS: 1 the workers zset. ARGV: 1 worker id, 2 ttl ms.
PRESENT = (
    """
local workers = KEYS[1]
local id, ttl = unpack(ARGV)
"""
    + _NOW
    + """
redis.call('ZREMRANGEBYSCORE', workers, '-inf', now)
redis.call('ZADD', workers, now + tonumber(ttl), id)
return 1
"""
)


def heartbeat_args(held: Sequence[tuple[str, int]], *, lease_ms: int) -> list[str | int]:
    """ARGV of ``HEARTBEAT`` for the (run id, attempt) pairs a worker holds."""
    args: list[str | int] = [lease_ms]
    for run_id, attempt in held:
        args += [run_id, attempt, keys.run(run_id)]
    return args


def decode_ids(raw: Sequence[bytes | str]) -> list[str]:
    """Run ids as a script returned them."""
    return [x.decode() if isinstance(x, bytes) else str(x) for x in raw]


class Leases:
    """The lease and pending books of one Redis."""

    def __init__(self, redis: Redis, *, lease_seconds: float, requeue_after_seconds: float) -> None:
        self.redis = redis
        self.lease_ms = int(lease_seconds * 1000)
        self.requeue_ms = int(requeue_after_seconds * 1000)
        self._acquire = redis.register_script(ACQUIRE)
        self._heartbeat = redis.register_script(HEARTBEAT)
        self._due = redis.register_script(DUE)
        self._postpone = redis.register_script(POSTPONE)

    async def acquire(self, run_id: str, attempt: int, *, holder: str = "") -> bool:
        """Take the lease of a retried `attempt` of a run already running; False if not ours to take.

        `holder` is the channel of the worker taking it (notices of the run go there).
        """
        return bool(
            await self._acquire(
                keys=[keys.run(run_id), keys.LEASES, keys.PENDING],
                args=[run_id, attempt, self.lease_ms, holder],
            )
        )

    async def heartbeat(self, held: Sequence[tuple[str, int]]) -> list[str]:
        """Renew the leases of `held` (run id, attempt) pairs; return the ids no longer ours."""
        if not held:
            return []
        lost = await self._heartbeat(keys=[keys.LEASES], args=heartbeat_args(held, lease_ms=self.lease_ms))
        return decode_ids(lost)

    async def expired(self, *, limit: int = 100) -> list[str]:
        """Run ids whose lease deadline has passed."""
        return decode_ids(await self._due(keys=[keys.LEASES], args=[limit]))

    async def held(self, run_id: str) -> bool:
        """Whether some attempt of `run_id` holds a lease now."""
        return await self.redis.zscore(keys.LEASES, run_id) is not None

    async def drop_lease(self, run_id: str) -> None:
        """Forget the lease of a run that no longer exists."""
        await self.redis.zrem(keys.LEASES, run_id)

    async def due_pending(self, *, limit: int = 100) -> list[str]:
        """Run ids whose current attempt should have started by now."""
        return decode_ids(await self._due(keys=[keys.PENDING], args=[limit]))

    async def postpone_pending(self, run_id: str) -> None:
        """Check `run_id` again after the requeue interval."""
        await self._postpone(keys=[keys.PENDING], args=[run_id, self.requeue_ms])

    async def drop_pending(self, run_id: str) -> None:
        """Forget a pending entry whose run has started or ended."""
        await self.redis.zrem(keys.PENDING, run_id)
