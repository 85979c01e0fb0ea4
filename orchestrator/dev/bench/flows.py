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
