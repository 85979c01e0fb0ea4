"""Flows used by the test suite (registered through ORCH_FLOWS=tests.flows)."""

from __future__ import annotations

import asyncio

from pydantic import BaseModel

from orchestrator import FlowError, RunContext, flow


class Text(BaseModel):
    text: str


class Sleep(BaseModel):
    seconds: float = 30.0
    partial: dict[str, int] | None = None


class Empty(BaseModel):
    pass


@flow("echo", input=Text, output=Text, steps=1, description="Echo the text back.")
async def echo(ctx: RunContext, data: Text) -> Text:
    ctx.add_usage(tokens=len(data.text), cost=0.001)
    await ctx.step("echo")
    return Text(text=data.text)


@flow("noop", input=Empty, output=Empty)
async def noop(ctx: RunContext, data: Empty) -> Empty:
    return data


@flow("fail", input=Empty, output=Empty)
async def fail(ctx: RunContext, data: Empty) -> Empty:
    ctx.set_partial({"pages": 1})
    raise FlowError("encrypted_pdf", "the PDF is encrypted", details={"page": 1})


@flow("crash", input=Empty, output=Empty)
async def crash(ctx: RunContext, data: Empty) -> Empty:
    raise ValueError("boom")


@flow("bad-output", input=Empty, output=Text)
async def bad_output(ctx: RunContext, data: Empty) -> Text:
    return {"wrong": 1}  # type: ignore[return-value]


@flow("slow", input=Sleep, output=Empty, steps=2, timeout=120)
async def slow(ctx: RunContext, data: Sleep) -> Empty:
    if data.partial is not None:
        ctx.set_partial(data.partial)
    await ctx.step("started")
    await asyncio.sleep(data.seconds)
    await ctx.step("slept")
    return Empty()


@flow("too-slow", input=Empty, output=Empty, timeout=0.3)
async def too_slow(ctx: RunContext, data: Empty) -> Empty:
    ctx.set_partial({"done": 0})
    await asyncio.sleep(30)
    return data


@flow("sticky", input=Sleep, output=Empty, timeout=120)
async def sticky(ctx: RunContext, data: Sleep) -> Empty:
    """Attempt 1 hangs and unwinds slowly when stopped; later attempts take `seconds`."""
    if ctx.attempt == 1:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            await asyncio.sleep(1.0)  # slow cleanup: outlives the start of the next attempt
            raise
    await asyncio.sleep(data.seconds)
    return Empty()
