"""Ordered delivery per subject (an endpoint's ``ordering: "run"``), without head-of-line blocking.

Each (endpoint, subject) pair is a *lane*: a sorted set of its pending deliveries by the entry's
``sequence`` (the producer's promise: each subject's messages are numbered 1, 2, 3... in commit
order). Only a lane's *active* delivery is in the endpoint's due queue; the next becomes due when
it ends, delivered or finally failed (``scripts.RECORD``). Lanes of other subjects are independent,
so one slow or failing run never holds another back (Svix's FIFO endpoints serialise the whole
endpoint instead).

Fan-outs run in parallel (several dispatchers, batches reclaimed after a crash), so a message can
reach its lane before an earlier one of the same subject was fanned out. Every fan-out for a tenant
with an ordered endpoint therefore marks the sequences it processed (``MARK``, a per-subject
watermark: every sequence up to ``w`` was fanned out, whatever the endpoints; other tenants pay
nothing); a lane's head goes only once the watermark covers everything before it, and a late lower
head takes the place of a held one. A head still waiting after ``ordering_gap_seconds`` goes
anyway: an entry that can never be fanned out (lost by a Redis failover) must not stop its subject
for good. The same bound applies to the runs already in flight when a tenant's first ordered
endpoint appears (their earlier sequences were never marked): each of their later messages to it
may wait up to that gap, once, until those runs end.
"""

from __future__ import annotations

from collections.abc import Iterable

from redis.asyncio import Redis

from webhooks import keys
from webhooks.scripts import REINDEX

# Note that sequence `seq` of a subject was fanned out; advance the watermark over every contiguous
# sequence above it. KEYS: 1 the subject's watermark hash. ARGV: 1 seq, 2 ttl ms. Returns the watermark.
MARK = """
local w, s = tonumber(redis.call('HGET', KEYS[1], 'w') or '0'), tonumber(ARGV[1])
if s > w then
  redis.call('HSET', KEYS[1], 's' .. s, 1)
  while redis.call('HEXISTS', KEYS[1], 's' .. (w + 1)) == 1 do
    redis.call('HDEL', KEYS[1], 's' .. (w + 1))
    w = w + 1
  end
  redis.call('HSET', KEYS[1], 'w', w)
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return w
"""

# Promote the head of one lane (after a watermark moved). KEYS: 1 lane, 2 active, 3 due queue,
# 4 due index, 5 the subject's watermark. ARGV: 1 gap ms, 2 endpoint id.
PROMOTE = (
    REINDEX
    + """
promote(KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], ARGV[1], ARGV[2])
return 1
"""
)

# Dissolve one lane (its endpoint no longer orders): every member due now, unordered from then on.
# KEYS: 1 lane, 2 active, 3 due queue, 4 due index, 5 lane index, then each member's delivery hash.
# ARGV: 1 endpoint id, 2 subject, then the member ids (in KEYS order). Returns how many were released.
DISSOLVE = (
    REINDEX
    + """
-- a held active member was never taken: due now too; one that went out keeps its claim
local act = redis.call('GET', KEYS[2])
local held = nil
if act then
  local state, held_until, aid = string.match(act, '^(%a) (%d+) (.+)$')
  if state == 'h' and tonumber(redis.call('ZSCORE', KEYS[3], aid) or '-1') == tonumber(held_until) then
    held = aid
  end
end
for n = 3, #ARGV do
  if ARGV[n] == held then
    redis.call('ZADD', KEYS[3], now, ARGV[n])
  else
    redis.call('ZADD', KEYS[3], 'NX', now, ARGV[n])
  end
  redis.call('HDEL', KEYS[n + 3], 'lane', 'seq')
end
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('SREM', KEYS[5], ARGV[2])
reindex(KEYS[3], KEYS[4], ARGV[1])
return #ARGV - 2
"""
)


def lane_keys(endpoint_id: str, subject: str) -> list[str]:
    """KEYS of a lane in the order the scripts take them: lane, active, fan-out watermark, index."""
    return [
        keys.lane(endpoint_id, subject),
        keys.lane_active(endpoint_id, subject),
        keys.fanned(subject),
        keys.lanes(endpoint_id),
    ]


class Lanes:
    """The fan-out's and the endpoint's side of ordered lanes (the attempt's side is in RECORD)."""

    def __init__(self, redis: Redis, *, gap_ms: int, fanned_ttl_ms: int) -> None:
        self.redis = redis
        self.gap_ms = gap_ms
        self.fanned_ttl_ms = fanned_ttl_ms
        self._mark = redis.register_script(MARK)
        self._promote = redis.register_script(PROMOTE)

    async def fanned_out(self, marks: Iterable[tuple[str, int]], lanes: Iterable[tuple[str, str]]) -> None:
        """Mark (subject, sequence) pairs as fanned out, then promote the (endpoint, subject) lanes
        that may now move (their heads were waiting for these sequences)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for subject, seq in marks:
                await self._mark(keys=[keys.fanned(subject)], args=[seq, self.fanned_ttl_ms], client=pipe)
            await pipe.execute()
        async with self.redis.pipeline(transaction=False) as pipe:
            for endpoint_id, subject in lanes:
                await self._promote(
                    keys=[
                        keys.lane(endpoint_id, subject),
                        keys.lane_active(endpoint_id, subject),
                        keys.due(endpoint_id),
                        keys.DUE_ENDPOINTS,
                        keys.fanned(subject),
                    ],
                    args=[self.gap_ms, endpoint_id],
                    client=pipe,
                )
            await pipe.execute()


async def dissolve_lanes(redis: Redis, endpoint_id: str) -> int:
    """Release every lane of an endpoint that stops ordering: its waiting deliveries go due now."""
    released = 0
    for raw in await redis.smembers(keys.lanes(endpoint_id)):
        subject = raw.decode()
        members = [m.decode() for m in await redis.zrange(keys.lane(endpoint_id, subject), 0, -1)]
        released += int(
            await redis.eval(
                DISSOLVE,
                5 + len(members),
                keys.lane(endpoint_id, subject),
                keys.lane_active(endpoint_id, subject),
                keys.due(endpoint_id),
                keys.DUE_ENDPOINTS,
                keys.lanes(endpoint_id),
                *(keys.delivery(m) for m in members),
                endpoint_id,
                subject,
                *members,
            )
        )
    return released


async def delete_lanes(redis: Redis, endpoint_id: str) -> None:
    """Forget every lane of a deleted endpoint."""
    subjects = [s.decode() for s in await redis.smembers(keys.lanes(endpoint_id))]
    doomed = [k for s in subjects for k in (keys.lane(endpoint_id, s), keys.lane_active(endpoint_id, s))]
    await redis.delete(keys.lanes(endpoint_id), *doomed)
