"""A private stack per scenario: redis-server, api, workers, dispatchers, receivers; all cleaned up."""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from aiohttp import web
from redis.asyncio import Redis

from orchestrator.connections import redis_from_settings
from orchestrator.dev.children import Children, child_env
from orchestrator.dev.embedded import EmbeddedRedis, free_port
from orchestrator.dev.sentinel import ReplicatedRedis
from orchestrator.settings import Settings

TENANT, KEY = "bench", "bench-key"


@dataclass
class Receiver:
    """An aiohttp receiver in the bench process: records arrival times (wall clock) per message."""

    handler: Callable[[web.Request], Awaitable[web.StreamResponse]] | None = None
    arrivals: list[tuple[float, bytes]] = field(default_factory=list)
    url: str = ""
    _runner: web.AppRunner | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)
    expect: int = 0

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.arrivals.append((time.time(), body))
        if self.expect and len(self.arrivals) >= self.expect:
            self.done.set()
        if self.handler is not None:
            return await self.handler(request)
        return web.Response(status=204)

    async def start(self) -> Receiver:
        """Listen on a free loopback port."""
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.2)
        await self._runner.setup()
        port = free_port()
        await web.TCPSite(self._runner, "127.0.0.1", port).start()
        self.url = f"http://127.0.0.1:{port}/hook"
        return self

    async def stop(self) -> None:
        """Stop listening."""
        if self._runner is not None:
            await self._runner.cleanup()


class Stack:
    """Redis plus the requested orchestrator processes, started on enter, stopped (by PID) on exit.

    With `replicas` the Redis is a primary with that many replicas and one Sentinel, and every
    process (the bench's own client too) finds the primary through ``redis+sentinel://``.
    """

    def __init__(
        self, *, api: int = 1, workers: int = 1, dispatchers: int = 0, replicas: int = 0, **overrides: Any
    ) -> None:
        self._folder = tempfile.TemporaryDirectory(prefix="orch-bench-") if replicas else None
        self.group = (
            ReplicatedRedis(Path(self._folder.name), replicas=replicas, sentinels=1) if self._folder else None
        )
        self.redis_server = self.group.primary if self.group is not None else EmbeddedRedis()
        self.counts = (api, workers, dispatchers)
        self.overrides = overrides
        self.children = Children()
        self.api_port = free_port()
        self.url = f"http://127.0.0.1:{self.api_port}"
        self.settings: Settings | None = None
        self.redis: Redis | None = None

    async def __aenter__(self) -> Stack:
        if self.group is not None:
            await asyncio.to_thread(self.group.start)
        else:
            self.redis_server.start()
        values: dict[str, Any] = {
            "redis_url": self.group.url if self.group is not None else self.redis_server.url,
            "api_keys": ((TENANT, KEY),),
            "flows": ("orchestrator.dev.bench.flows",),
            "webhook_allow_private": True,
            "log_level": "WARNING",
        }
        values.update(self.overrides)
        self.settings = Settings(**values)
        env = child_env(os.environ, self.settings.to_env())
        api, workers, dispatchers = self.counts
        if api:
            self.children.orchestrator("api", "api", "--port", str(self.api_port), env=env, quiet=True)
        for i in range(workers):
            self.children.orchestrator(f"worker{i}", "worker", env=env, quiet=True)
        for i in range(dispatchers):
            self.children.orchestrator(f"dispatcher{i}", "dispatcher", env=env, quiet=True)
        self.redis = redis_from_settings(self.settings)  # the one way every process connects
        if api:
            await asyncio.to_thread(self._wait_ready)
        if workers:
            await self._wait_workers(workers)
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.children.exited():
                raise RuntimeError(f"a bench process died: {self.children.exited()}")
            try:
                with urllib.request.urlopen(self.url + "/readyz", timeout=1):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("the bench API did not start")

    async def _wait_workers(self, n: int) -> None:
        assert self.redis is not None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if await self.redis.zcard("orch:workers") >= n:  # each worker's liveness beacon
                return
            await asyncio.sleep(0.05)
        raise RuntimeError("the bench workers did not start")

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.redis is not None:
            await self.redis.aclose()
        await asyncio.to_thread(self.children.stop)
        if self.group is not None:
            self.group.stop()
        else:
            self.redis_server.stop()
        if self._folder is not None:
            self._folder.cleanup()


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of process `pid` and its live descendants, from /proc (Linux)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    todo = [pid]
    while todo:
        current = todo.pop()
        try:
            with open(f"/proc/{current}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
        except (OSError, ValueError, IndexError):
            continue
    return total
