"""Raw arq, the baseline: enqueue N no-op jobs, then drain them with a burst worker; print jobs/s.

python -m orchestrator.dev.bench.rawarq REDIS_URL N MAX_JOBS POLL_DELAY
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

import uvloop
from arq import create_pool
from arq.connections import RedisSettings
from arq.worker import Worker


async def noop(ctx: dict[str, Any]) -> None:
    """The job."""


async def main(url: str, n: int, max_jobs: int, poll_delay: float) -> float:
    """Jobs per second drained."""
    pool = await create_pool(RedisSettings.from_dsn(url))
    await pool.flushdb()
    for start in range(0, n, 500):
        await asyncio.gather(
            *(pool.enqueue_job("noop", _job_id=f"j{i}") for i in range(start, min(n, start + 500)))
        )
    worker = Worker(
        [noop],
        redis_pool=pool,
        burst=True,
        poll_delay=poll_delay,
        max_jobs=max_jobs,
        keep_result=0,
        handle_signals=False,
        log_results=False,
    )
    started = time.perf_counter()
    await worker.main()
    elapsed = time.perf_counter() - started
    await worker.close()
    return n / elapsed


if __name__ == "__main__":
    url, n, max_jobs, poll = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
    print(uvloop.run(main(url, n, max_jobs, poll)))
