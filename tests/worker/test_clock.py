"""One clock: a worker whose host clock is 30 s off (libfaketime) neither reaps healthy attempts nor
stalls, and labels its runs with Redis's time (issue 13, case 3: a clock 30 s ahead used to reap
other workers' attempts, running a 6 s flow 2-3 times).
"""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest
from redis.asyncio import Redis

from tests.conftest import ROOT, subprocess_env, tenant_client
from tests.faults.stack import Stack, stack, wait_ready
from tests.worker.test_isolation import create, ended, executions

pytestmark = pytest.mark.timeout(120)
FLOWS = ("tests.flows", "tests.unpolite")
# Debian's libfaketime (`make test` installs it, .ci/system-deps); the folder names the architecture.
FAKETIME = next(iter(sorted(Path("/usr/lib").glob("*/faketime/libfaketime.so.1"))), Path("libfaketime.so.1"))


def skewed_worker(procs: Stack, offset: str) -> subprocess.Popen[bytes]:
    """Start a worker whose wall clock is `offset` (e.g. "+30s") off; its monotonic clock is true."""
    if not FAKETIME.exists():
        pytest.fail(f"{FAKETIME} is missing: `make test` installs Debian's libfaketime (as root)")
    env = subprocess_env(procs.settings) | {
        "LD_PRELOAD": str(FAKETIME),
        "FAKETIME": offset,
        "DONT_FAKE_MONOTONIC": "1",
    }
    log = procs.logs / f"worker-skewed-{len(procs.procs)}.log"
    with log.open("ab") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "orchestrator", "worker"],
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    procs.procs.append(("worker", proc))
    procs.log_of[proc.pid] = log
    return proc


def _ms(stamp: str) -> float:
    return datetime.fromisoformat(stamp).timestamp() * 1000


@pytest.mark.parametrize("offset", ["+30s", "-30s"])
async def test_a_worker_with_a_skewed_clock_runs_every_attempt_once(tmp_path: Path, offset: str) -> None:
    async with stack(tmp_path, flows=FLOWS, lease_seconds=2.0, heartbeat_seconds=0.3, sweep_seconds=0.2) as (
        procs,
        server,
    ):
        base = procs.api()
        procs.start("worker")
        skewed_worker(procs, offset)
        redis = Redis.from_url(server.url)
        async with redis, tenant_client(base) as http:
            await wait_ready(http)
            ids = [await create(http, "slow-step", {"seconds": 3}) for _ in range(8)]
            for run_id in ids:
                done = await ended(http, run_id, timeout=60)
                assert done["status"] == "success" and done["attempt"] == 1, done
                assert len(await executions(redis, run_id)) == 1, run_id
                # labels come from Redis's clock: never started before created, a true duration
                assert _ms(done["startedAt"]) >= _ms(done["createdAt"]) - 50, done
                assert 2_500 <= done["duration"] < 10_000, done
            pids = {(await executions(redis, r))[0].split(":")[0] for r in ids}
            assert len(pids) == 2, "both workers took runs"
