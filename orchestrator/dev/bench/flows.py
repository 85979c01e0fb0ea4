"""The flows the benchmarks run."""

from __future__ import annotations

from pydantic import BaseModel

from orchestrator import RunContext, flow


class Empty(BaseModel):
    """Nothing in, nothing out."""


@flow("bench-noop", input=Empty, output=Empty, description="Does nothing (benchmarks).")
async def noop(ctx: RunContext, data: Empty) -> Empty:
    """Return at once."""
    return data


class Sleep(BaseModel):
    """How long to take."""

    seconds: float = 0.0


@flow("bench-sleep", input=Sleep, output=Empty, description="Sleeps (benchmarks of waiting).")
async def sleep(ctx: RunContext, data: Sleep) -> Empty:
    """Take `seconds`."""
    import asyncio

    await asyncio.sleep(data.seconds)
    return Empty()


@flow("bench-noop-thread", input=Empty, output=Empty, description="Does nothing, in a thread (benchmarks).")
def noop_thread(ctx: RunContext, data: Empty) -> Empty:
    """Return at once (isolation='thread')."""
    return data


@flow(
    "bench-noop-process",
    input=Empty,
    output=Empty,
    isolation="process",
    description="Does nothing, in a child process (benchmarks).",
)
def noop_process(ctx: RunContext, data: Empty) -> Empty:
    """Return at once (isolation='process')."""
    return data
