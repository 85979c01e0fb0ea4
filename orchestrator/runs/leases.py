"""Leases and pending starts: the two books that prove an attempt alive or overdue.

A running attempt holds a lease (``orch:leases``, run id -> deadline ms) that its worker's heartbeat
renews; an expired lease means the worker was lost (the reaper retries or fails the run). A queued
or retried attempt has a pending entry (``orch:pending``, run id -> due ms) until it starts; an
overdue one has its job enqueued again. Transitions set and clear both (``runs.transition``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from redis.asyncio import Redis

from orchestrator.runs import keys
from webhooks.models import now_ms

# Take the lease of a retried attempt whose run is already `running` (no status change).
# Returns 1 when taken, 0 when the attempt is not (or no longer) the run's current, idle one.
ACQUIRE = """
local run, leases, pending = unpack(KEYS)
local run_id, attempt, deadline = unpack(ARGV)
local fields = redis.call('HMGET', run, 'status', 'attempt')
if fields[1] ~= 'running' or fields[2] ~= attempt then return 0 end
if redis.call('ZSCORE', leases, run_id) then return 0 end
redis.call('ZADD', leases, deadline, run_id)
redis.call('ZREM', pending, run_id)
return 1
"""

# Renew the leases of the attempts a worker holds. ARGV: deadline ms, then run id / attempt /
# run hash key triples. Returns the run ids whose attempt is no longer current (to be stopped).
HEARTBEAT = """
local leases = KEYS[1]
local deadline = ARGV[1]
local lost = {}
for i = 2, #ARGV, 3 do
  local id, attempt, key = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local fields = redis.call('HMGET', key, 'status', 'attempt')
  if fields[1] == 'running' and fields[2] == attempt and redis.call('ZSCORE', leases, id) then
    redis.call('ZADD', leases, 'XX', deadline, id)
  else
    table.insert(lost, id)
  end
end
return lost
"""


class Leases:
    """The lease and pending books of one Redis."""

    def __init__(
        self,
        redis: Redis,
        *,
        lease_seconds: float,
        requeue_after_seconds: float,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        self.redis = redis
        self.lease_ms = int(lease_seconds * 1000)
        self.requeue_ms = int(requeue_after_seconds * 1000)
        self.clock = clock
        self._acquire = redis.register_script(ACQUIRE)
        self._heartbeat = redis.register_script(HEARTBEAT)

    async def acquire(self, run_id: str, attempt: int) -> bool:
        """Take the lease of a retried `attempt` of a run already running; False if not ours to take."""
        deadline = self.clock() + self.lease_ms
        return bool(
            await self._acquire(
                keys=[keys.run(run_id), keys.LEASES, keys.PENDING], args=[run_id, attempt, deadline]
            )
        )

    async def heartbeat(self, held: Sequence[tuple[str, int]]) -> list[str]:
        """Renew the leases of `held` (run id, attempt) pairs; return the ids no longer ours."""
        if not held:
            return []
        args: list[str | int] = [self.clock() + self.lease_ms]
        for run_id, attempt in held:
            args += [run_id, attempt, keys.run(run_id)]
        lost = await self._heartbeat(keys=[keys.LEASES], args=args)
        return [x.decode() if isinstance(x, bytes) else str(x) for x in lost]

    async def expired(self, *, limit: int = 100) -> list[str]:
        """Run ids whose lease deadline has passed."""
        ids = await self.redis.zrangebyscore(keys.LEASES, "-inf", self.clock(), start=0, num=limit)
        return [i.decode() for i in ids]

    async def held(self, run_id: str) -> bool:
        """Whether some attempt of `run_id` holds a lease now."""
        return await self.redis.zscore(keys.LEASES, run_id) is not None

    async def drop_lease(self, run_id: str) -> None:
        """Forget the lease of a run that no longer exists."""
        await self.redis.zrem(keys.LEASES, run_id)

    async def due_pending(self, *, limit: int = 100) -> list[str]:
        """Run ids whose current attempt should have started by now."""
        ids = await self.redis.zrangebyscore(keys.PENDING, "-inf", self.clock(), start=0, num=limit)
        return [i.decode() for i in ids]

    async def postpone_pending(self, run_id: str) -> None:
        """Check `run_id` again after the requeue interval."""
        await self.redis.zadd(keys.PENDING, {run_id: self.clock() + self.requeue_ms}, xx=True)

    async def drop_pending(self, run_id: str) -> None:
        """Forget a pending entry whose run has started or ended."""
        await self.redis.zrem(keys.PENDING, run_id)
