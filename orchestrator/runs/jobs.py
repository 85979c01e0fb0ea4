"""arq jobs of run attempts: the only module that knows arq's Redis keys and payload format.

One job id per attempt (``run:{id}:{attempt}``) makes a repeated enqueue a no-op. The transition
script writes the first job of each attempt; :func:`enqueue_run` re-enqueues an attempt that should
have started long ago.
"""

from __future__ import annotations

from arq.constants import in_progress_key_prefix, job_key_prefix, result_key_prefix
from arq.jobs import serialize_job
from redis.asyncio import Redis

from orchestrator.runs import keys
from webhooks.models import now_ms as clock_ms

JOB_FUNCTION = "execute_run"
# arq drops a job that waited this long without starting; the pending sweep enqueues it again.
JOB_EXPIRY_MS = 24 * 3600 * 1000
# arq takes a job once its score is at most the worker's own clock (arq.worker._poll_iteration): a
# job scored with Redis's time would stay invisible to a worker whose clock runs behind. Scores are
# Redis's time minus a day, so any worker less than a day behind sees every job at once, and the
# queue stays in creation order.
JOB_SCORE_OFFSET_MS = 24 * 3600 * 1000


def job_id(run_id: str, attempt: int) -> str:
    """arq job id of one attempt: a repeated enqueue of the same attempt is a no-op."""
    return f"run:{run_id}:{attempt}"


def job_key(jid: str) -> str:
    """arq's Redis key for a job's payload."""
    return job_key_prefix + jid


def result_key(jid: str) -> str:
    """arq's Redis key for a job's stored result."""
    return result_key_prefix + jid


def in_progress_key(jid: str) -> str:
    """arq's Redis key marking a job claimed by a worker."""
    return in_progress_key_prefix + jid


def job_payload(run_id: str, attempt: int, *, now_ms: int | None = None) -> bytes:
    """Serialize the arq job that executes `attempt` of `run_id` (written by the transition script)."""
    now = clock_ms() if now_ms is None else now_ms
    return serialize_job(JOB_FUNCTION, (run_id, attempt), {}, None, now)


# Make sure an attempt's arq job will run: used only for attempts that should have started long
# ago. A claim left by a worker that lost the job (it died, or Redis went away between arq's claim
# and our start) is dropped so that arq runs the job again now, not after its job timeout; a job
# that exists is put back in the queue; a missing one is created. Starting twice is harmless: the
# start transition is a compare-and-set. Returns 1 if the job was created.
ENQUEUE = """
local job, job_result, queue, in_progress = unpack(KEYS)
local payload, jid, score_offset_ms, expiry_ms, wake_list = unpack(ARGV)
local clock = redis.call('TIME')
local score = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000) - tonumber(score_offset_ms)
redis.call('DEL', in_progress)
local created = 0
if redis.call('EXISTS', job, job_result) == 0 then
  redis.call('SET', job, payload, 'PX', expiry_ms)
  created = 1
end
redis.call('ZADD', queue, 'NX', score, jid)
redis.call('LPUSH', wake_list, '1')
redis.call('LTRIM', wake_list, 0, 99)
return created
"""


async def enqueue_run(redis: Redis, run_id: str, attempt: int, *, queue_name: str) -> bool:
    """Make sure `attempt` of `run_id` runs now (see ``ENQUEUE``); True if the job was created."""
    now = clock_ms()
    jid = job_id(run_id, attempt)
    done = await redis.eval(
        ENQUEUE,
        4,
        job_key(jid),
        result_key(jid),
        queue_name,
        in_progress_key(jid),
        job_payload(run_id, attempt, now_ms=now),
        jid,
        JOB_SCORE_OFFSET_MS,
        JOB_EXPIRY_MS,
        keys.WAKE_LIST,
    )
    return bool(done)
