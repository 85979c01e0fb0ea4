"""arq job payloads and enqueueing for run attempts; one job id per attempt makes repeats no-ops."""

from __future__ import annotations

import time

from arq.connections import ArqRedis
from arq.constants import job_key_prefix, result_key_prefix
from arq.jobs import serialize_job

from . import keys

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


async def enqueue_run(pool: ArqRedis, run_id: str, attempt: int, *, queue_name: str) -> bool:
    """Enqueue `attempt` of `run_id` unless that job already exists; wake idle workers if it was new."""
    job = await pool.enqueue_job(
        keys.JOB_FUNCTION, run_id, attempt, _job_id=keys.job_id(run_id, attempt), _queue_name=queue_name
    )
    if job is not None:
        await pool.publish(keys.WAKE_CHANNEL, b"1")
    return job is not None
