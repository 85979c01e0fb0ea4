import subprocess
import sys

from redis.asyncio import Redis

from orchestrator.auth import digest
from orchestrator.settings import Settings
from tests.conftest import ROOT, subprocess_env


async def test_keys_create_prints_a_key_stored_only_hashed(settings: Settings, redis: Redis) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "orchestrator", "keys", "create", "--tenant", "acme"],
        env=subprocess_env(settings),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    key = out.stdout.strip()
    assert key.startswith("sk_") and len(key) > 40
    assert await redis.hget("orch:apikeys", digest(key)) == b"acme"
    assert key.encode() not in b"".join((await redis.hgetall("orch:apikeys")).keys())


def test_bad_configuration_exits_2_with_a_message() -> None:
    env = {"ORCH_API_KEYS": "broken", "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [sys.executable, "-m", "orchestrator", "worker"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2 and "bad configuration" in out.stderr
