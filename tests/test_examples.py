"""Every example runs against a live API, worker and dispatcher, as a user would run it."""

from __future__ import annotations

import asyncio
import importlib
import os
import sys

import pytest
from redis.asyncio import Redis

from orchestrator.worker.worker import WakingWorker
from tests.conftest import EXAMPLES, KEY_A, ROOT, ServedApp
from tests.webhooks.helpers import running_dispatcher

SCRIPTS = sorted(p.stem for p in EXAMPLES.glob("*.py"))


@pytest.mark.parametrize("name", SCRIPTS)
def test_each_example_imports(name: str) -> None:
    module = importlib.import_module(name)
    assert module.__doc__


async def run_example(api_server: ServedApp, *args: str) -> str:
    env = {
        **os.environ,
        "ORCH_BASE_URL": api_server.url,
        "ORCH_API_KEY": KEY_A,
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(EXAMPLES)]),
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        *args,
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 90)
    assert proc.returncode == 0, err.decode()
    return out.decode()


EXPECTED = {
    "check_status.py": ["Status: ", "Created: 20"],
    "wait_for_completion.py": ["Final status: success", "INV-2026-001"],
    "manual_polling.py": ["'success': True", "INV-2026-001"],
    "typed_result.py": ["Invoice: INV-2026-001", "Total: 123.45"],
    "cancel.py": ["Status: cancelled", "Partial output: {'pages': 1}"],
    "batch_processing.py": ["INV-0000", "INV-0004"],
}


@pytest.mark.parametrize("script", sorted(EXPECTED))
async def test_seed_sections_run_against_the_live_stack(
    api_server: ServedApp, worker: WakingWorker, script: str
) -> None:
    out = await run_example(api_server, str(EXAMPLES / script))
    for text in EXPECTED[script]:
        assert text in out, out


async def test_the_webhook_receiver_example_gets_verified_deliveries(
    api_server: ServedApp, worker: WakingWorker, redis: Redis
) -> None:
    async with running_dispatcher(redis):
        out = await run_example(
            api_server, str(EXAMPLES / "webhook_receiver.py"), "--demo", "--timeout", "60"
        )
    lines = [line for line in out.splitlines() if "webhook-id=msg_" in line]
    # Deliveries of different messages may overtake each other: a late, older state is dropped as stale.
    seen = {line.split()[0]: line for line in lines}
    assert "verified accepted" in seen["execution.success"]
    assert set(seen) <= {"execution.queued", "execution.running", "execution.success"}
    assert all("verified accepted" in line or "dropped (stale)" in line for line in lines)
    assert "INV-2026-001" in out
