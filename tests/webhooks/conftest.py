from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from orchestrator import events
from tests.receiver import Receiver
from webhooks.dispatcher import Dispatcher
from webhooks.settings import DispatcherSettings

FAST = DispatcherSettings(
    timeout=2.0,
    retry_schedule=(0.05, 0.05, 0.05, 0.05),
    jitter=0.0,
    allow_private=True,
    reclaim_idle_seconds=1.0,
    probe_schedule=(0.1,),
    shutdown_grace_seconds=0.2,
)


@contextlib.asynccontextmanager
async def running_dispatcher(redis: Redis, settings: DispatcherSettings = FAST) -> AsyncIterator[Dispatcher]:
    dispatcher = Dispatcher(
        settings, redis, default_events=events.DEFAULT_EVENTS, coalesced_events=(events.PROGRESS,)
    )
    task = asyncio.get_running_loop().create_task(dispatcher.run())
    try:
        yield dispatcher
    finally:
        await dispatcher.stop()
        await task


@pytest.fixture
async def dispatcher(redis: Redis) -> AsyncIterator[Dispatcher]:
    async with running_dispatcher(redis) as d:
        yield d


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = await Receiver().start()
    yield r
    await r.stop()
