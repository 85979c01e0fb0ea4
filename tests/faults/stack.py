"""A whole stack of real processes on a private Redis, for the fault suites: start, kill, clean up."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from orchestrator.dev.embedded import EmbeddedRedis, free_port
from orchestrator.settings import Settings
from tests.conftest import make_settings, spawn, wait_for


@dataclass
class Stack:
    """Processes spawned with one Settings; stderr of each goes to `logs/<role>-<n>.log`."""

    settings: Settings
    logs: Path
    procs: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)
    killed_at: dict[int, float] = field(default_factory=dict)  # pid -> when it was SIGKILLed (wall clock)
    log_of: dict[int, Path] = field(default_factory=dict)  # pid -> its stderr

    def start(self, role: str, *args: str) -> subprocess.Popen[bytes]:
        """Spawn `orchestrator ROLE ARGS`."""
        log = self.logs / f"{role}-{len(self.procs)}.log"
        proc = spawn(self.settings, role, *args, log=log)
        self.procs.append((role, proc))
        self.log_of[proc.pid] = log
        return proc

    def api(self) -> str:
        """Spawn an API process on a free port; return its base URL."""
        port = free_port()
        self.start("api", "--port", str(port))
        return f"http://127.0.0.1:{port}"

    def alive(self, role: str) -> list[subprocess.Popen[bytes]]:
        """The processes of `role` still running."""
        return [p for r, p in self.procs if r == role and p.poll() is None]

    def kill(self, proc: subprocess.Popen[bytes]) -> float:
        """SIGKILL `proc` (no chance to clean up), wait for it, and return when it died."""
        at = time.time()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        self.killed_at[proc.pid] = at
        return at

    def json_logs(self, role: str) -> list[tuple[int, dict[str, Any]]]:
        """(pid, record) of every JSON log line of `role`'s processes (ORCH_LOG_FORMAT=json)."""
        out: list[tuple[int, dict[str, Any]]] = []
        for r, proc in self.procs:
            if r != role:
                continue
            for line in self.log_of[proc.pid].read_text(errors="replace").splitlines():
                if line.startswith("{"):
                    out.append((proc.pid, json.loads(line)))
        return out

    def log_tail(self, role: str, chars: int = 3000) -> str:
        """The end of every log of `role`, to explain a failure."""
        parts = [p.read_text(errors="replace")[-chars:] for p in sorted(self.logs.glob(f"{role}-*.log"))]
        return "\n".join(parts)

    def stop(self) -> None:
        """Terminate what is left, then wait for all of it."""
        for _, proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for _, proc in self.procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@contextlib.asynccontextmanager
async def stack(
    tmp_path: Path, *, redis: EmbeddedRedis | None = None, redis_url: str | None = None, **overrides: Any
) -> AsyncIterator[tuple[Stack, EmbeddedRedis]]:
    """A private redis-server (unless given, or `redis_url` names one) and a Stack on it; all stopped."""
    server = redis or EmbeddedRedis()
    if redis_url is None:
        server.start()
    logs = tmp_path / "logs"
    logs.mkdir(exist_ok=True)
    defaults: dict[str, Any] = {
        "lease_seconds": 2.0,
        "requeue_after_seconds": 3.0,
        "webhook_retry_schedule": (0.2, 0.5, 1.0, 1.0, 1.0, 2.0, 2.0),
        "webhook_timeout": 2.0,
    }
    settings = make_settings(redis_url or server.url, **(defaults | overrides))
    procs = Stack(settings, logs)
    try:
        yield procs, server
    finally:
        procs.stop()
        server.stop()


async def wait_ready(http: httpx.AsyncClient, timeout: float = 30) -> None:
    """Wait until the API behind `http` answers /readyz with 200 (it needs Redis for that)."""

    async def ready() -> bool:
        try:
            return (await http.get("/readyz")).status_code == 200
        except httpx.HTTPError:
            return False

    await wait_for(ready, timeout=timeout)


async def runs_of(http: httpx.AsyncClient, ids: list[str]) -> dict[str, dict[str, Any]]:
    """The current state of each run (a missing or unreadable one is left out)."""
    out: dict[str, dict[str, Any]] = {}
    for run_id in ids:
        try:
            resp = await http.get(f"/v1/runs/{run_id}")
        except httpx.HTTPError:
            continue
        if resp.status_code == 200:
            out[run_id] = resp.json()
    return out


async def event_log(http: httpx.AsyncClient, run_id: str) -> list[dict[str, Any]]:
    """The run's whole event log, checked gap-free."""
    log: list[dict[str, Any]] = (await http.get(f"/v1/runs/{run_id}/events")).json()["data"]
    assert [e["sequence"] for e in log] == list(range(1, len(log) + 1)), run_id
    return log
