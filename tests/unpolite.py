"""Flows as people really write them: blocking, CPU-bound, deaf to cancellation, handing back odd values.

Each flow counts its executions in Redis (``INCR unpolite:runs:{run id}``), so tests can assert
"executed once" across worker processes; the Redis URL comes from ``ORCH_REDIS_URL``.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import signal
import time
from typing import Any

import redis
from pydantic import BaseModel

from orchestrator import FlowError, RunContext, flow


class Hold(BaseModel):
    """How long to hold, or until which Redis key exists."""

    seconds: float = 0.0
    until_key: str | None = None
    limit: float = 30.0


class Bad(BaseModel):
    """Which unstorable value to hand back."""

    kind: str


class Grow(BaseModel):
    """How many MB to allocate."""

    mb: int = 200


def _redis() -> redis.Redis:
    return redis.Redis.from_url(os.environ["ORCH_REDIS_URL"])


def count(ctx: RunContext) -> None:
    """Record one execution of this attempt (and the process that ran it)."""
    r = _redis()
    r.incr(f"unpolite:runs:{ctx.run_id}")
    r.rpush(f"unpolite:pids:{ctx.run_id}", f"{os.getpid()}:{ctx.attempt}")
    r.close()


def _hold(data: Hold) -> None:
    """Block this thread: a fixed time, or until the key exists (bounded by `limit`)."""
    if data.until_key is None:
        time.sleep(data.seconds)
        return
    r = _redis()
    deadline = time.monotonic() + data.limit
    while not r.exists(data.until_key) and time.monotonic() < deadline:
        time.sleep(0.02)
    r.close()


@flow("blocking-async", timeout=2)
async def blocking_async(ctx: RunContext, data: Hold) -> dict[str, Any]:
    """A blocking call inside async def: it stalls the worker's loop."""
    count(ctx)
    _hold(data)
    return {"held": data.seconds}


@flow("blocking-def", timeout=2)
def blocking_def(ctx: RunContext, data: Hold) -> dict[str, Any]:
    """The same in a plain def: it gets a thread of its own."""
    count(ctx)
    _hold(data)
    return {"held": data.seconds}


@flow("gate-def", timeout=60)
def gate_def(ctx: RunContext, data: Hold) -> dict[str, Any]:
    """Hold until the key exists (a plain def, so in a thread)."""
    count(ctx)
    ctx.step("holding")
    _hold(data)
    return {"released": True}


@flow("noop-async")
async def noop_async(ctx: RunContext, data: dict[str, Any]) -> dict[str, Any]:
    """Return the input; counts its executions."""
    count(ctx)
    return data


@flow("burn-process", isolation="process", timeout=2, steps=1)
def burn_process(ctx: RunContext, data: Hold) -> dict[str, Any]:
    """CPU-bound in a child process: spins until its deadline kills it (or `seconds` pass)."""
    count(ctx)
    ctx.set_partial({"pid": os.getpid()})
    ctx.step("burning")
    end = time.monotonic() + data.seconds
    x = 0
    while time.monotonic() < end:
        x += 1
    return {"spins": x}


@flow("deaf-process", isolation="process", timeout=60)
def deaf_process(ctx: RunContext, data: Hold) -> dict[str, Any]:
    """Ignores SIGTERM: only SIGKILL ends it."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    count(ctx)
    ctx.set_partial({"pid": os.getpid()})
    _hold(data)
    return {}


@flow("deaf-async", timeout=60)
async def deaf_async(ctx: RunContext, data: Hold) -> dict[str, Any]:
    """Swallows every cancellation and keeps going until the key exists."""
    count(ctx)
    r = _redis()
    while not r.exists(data.until_key or "never"):
        try:
            await asyncio.sleep(0.05)
        except asyncio.CancelledError:
            continue
    r.close()
    return {}


@flow("deaf-thread", timeout=60)
def deaf_thread(ctx: RunContext, data: Hold) -> dict[str, Any]:
    """A thread that never checks anything until the key exists."""
    count(ctx)
    _hold(data)
    return {}


@flow("grow-process", isolation="process", max_memory_mb=150, timeout=30)
def grow_process(ctx: RunContext, data: Grow) -> dict[str, Any]:
    """Allocate `mb` MB, touched, then hold it."""
    count(ctx)
    block = bytearray(data.mb * 1024 * 1024)
    for i in range(0, len(block), 4096):
        block[i] = 1
    time.sleep(10)
    return {"mb": data.mb}


class _Opaque:
    pass


def bad_value(kind: str) -> Any:
    """A value that cannot become JSON in UTF-8, of the given kind."""
    if kind == "surrogate":
        return {"name": b"caf\xe9.pdf".decode("utf-8", errors="surrogateescape")}
    if kind == "bytes":
        return {"raw": b"\x00\x01"}
    if kind == "nan":
        return {"score": math.nan}
    if kind == "inf":
        return [1.0, math.inf]
    if kind == "cycle":
        loop: dict[str, Any] = {}
        loop["self"] = loop
        return loop
    if kind == "key":
        return {1: "one"}
    if kind == "bigint":
        return {"n": 10**10000}
    if kind == "object":
        return {"o": _Opaque()}
    raise ValueError(kind)


@flow("odd-output")
async def bad_output(ctx: RunContext, data: Bad) -> Any:
    """Return an unstorable value."""
    count(ctx)
    return bad_value(data.kind)


@flow("odd-output-thread", isolation="thread")
def bad_output_thread(ctx: RunContext, data: Bad) -> Any:
    """The same from a thread."""
    count(ctx)
    return bad_value(data.kind)


@flow("odd-output-process", isolation="process")
def bad_output_process(ctx: RunContext, data: Bad) -> Any:
    """The same from a child process."""
    count(ctx)
    return bad_value(data.kind)


@flow("odd-partial")
async def bad_partial(ctx: RunContext, data: Bad) -> dict[str, Any]:
    """Save an unstorable partial output, catch the error, and return normally."""
    count(ctx)
    with contextlib.suppress(ValueError):
        ctx.set_partial(bad_value(data.kind))
    return {"ok": True}


@flow("odd-usage")
async def bad_usage(ctx: RunContext, data: Bad) -> dict[str, Any]:
    """Report unstorable usage figures."""
    count(ctx)
    with contextlib.suppress(ValueError):
        ctx.add_usage(
            tokens=10**10000 if data.kind == "bigint" else 1, cost=math.nan if data.kind == "nan" else 0
        )
    return {"ok": True}


@flow("odd-error")
async def bad_error(ctx: RunContext, data: Bad) -> dict[str, Any]:
    """Raise a FlowError with an unstorable message or details."""
    count(ctx)
    if data.kind == "message":
        raise FlowError("bad_file", b"caf\xe9".decode("utf-8", errors="surrogateescape"))
    raise FlowError("bad_file", "cannot read the file", details={"value": bad_value(data.kind)})


@flow("odd-exception")
async def bad_exception(ctx: RunContext, data: Bad) -> dict[str, Any]:
    """Raise an ordinary exception whose text holds a lone surrogate."""
    count(ctx)
    raise OSError(b"no such file: caf\xe9".decode("utf-8", errors="surrogateescape"))


@flow("slow-step", timeout=60, steps=2)
async def slow_step(ctx: RunContext, data: Hold) -> dict[str, Any]:
    """Two steps around a polite wait (asyncio), for deploy tests."""
    count(ctx)
    await ctx.step("started")
    r = _redis()
    deadline = time.monotonic() + data.limit
    # a polite wait: it awaits (a test flow polls a key the test sets; no event to wait on)
    while data.until_key and not r.exists(data.until_key) and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.02)
    if not data.until_key:
        await asyncio.sleep(data.seconds)
    r.close()
    await ctx.step("done")
    return {"attempt": ctx.attempt}


@flow("odd-exit")
async def odd_exit(ctx: RunContext, data: Bad) -> dict[str, Any]:
    """Call sys.exit inside the flow: the attempt fails, the worker lives."""
    count(ctx)
    raise SystemExit(3)
