"""arq job payloads and enqueueing for run attempts; one job id per attempt makes repeats no-ops."""

from __future__ import annotations

import time

from arq.constants import in_progress_key_prefix, job_key_prefix, result_key_prefix
from arq.jobs import serialize_job
from redis.asyncio import Redis

from orchestrator.runs import keys, scripts

# arq drops a job that waited this long without starting; the pending sweep enqueues it again.
JOB_EXPIRY_MS = 24 * 3600 * 1000


def job_key(job_id: str) -> str:
    """arq's Redis key for a job's payload."""
    return job_key_prefix + job_id


def result_key(job_id: str) -> str:
    """arq's Redis key for a job's stored result."""
    return result_key_prefix + job_id


def job_payload(run_id: str, attempt: int, *, now_ms: int | None = None) -> bytes:
    """Serialize the arq job that executes `attempt` of `run_id` (written by the transition script)."""
    now = int(time.time() * 1000) if now_ms is None else now_ms
    return serialize_job(keys.JOB_FUNCTION, (run_id, attempt), {}, None, now)


async def enqueue_run(redis: Redis, run_id: str, attempt: int, *, queue_name: str) -> bool:
    """Make sure `attempt` of `run_id` runs now (see scripts.ENQUEUE); True if the job was created."""
    now = int(time.time() * 1000)
    jid = keys.job_id(run_id, attempt)
    done = await redis.eval(
        scripts.ENQUEUE,
        4,
        job_key(jid),
        result_key(jid),
        queue_name,
        in_progress_key_prefix + jid,
        job_payload(run_id, attempt, now_ms=now),
        jid,
        now,
        JOB_EXPIRY_MS,
        keys.WAKE_CHANNEL,
    )
    return bool(done)
