"""The GET baseline: the same server stack (Starlette, uvicorn, httptools, uvloop) doing one Redis GET.

python -m orchestrator.dev.bench.trivial PORT REDIS_URL
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import uvicorn
from redis.asyncio import Redis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


def create(url: str) -> Starlette:
    """An app whose one route returns the value of one Redis key."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        app.state.redis = Redis.from_url(url)
        await app.state.redis.set("trivial", b'{"id":"x"}' * 40)
        yield
        await app.state.redis.aclose()

    async def get(request: Request) -> Response:
        return Response(await request.app.state.redis.get("trivial"), media_type="application/json")

    return Starlette(routes=[Route("/get", get)], lifespan=lifespan)


if __name__ == "__main__":
    uvicorn.run(
        create(sys.argv[2]),
        port=int(sys.argv[1]),
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
    )
