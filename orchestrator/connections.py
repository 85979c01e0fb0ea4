"""Redis connections for every process, built from Settings in one place.

The API, the dispatcher and the CLI's admin commands use :func:`redis_from_settings`; arq's own
pool (the worker) uses :func:`arq_settings`. Neither loads Starlette or any route.
"""

from __future__ import annotations

from arq.connections import RedisSettings
from redis.asyncio import BlockingConnectionPool, Redis

from orchestrator.settings import Settings


def redis_from_settings(settings: Settings, *, max_connections: int | None = None) -> Redis:
    """An asyncio Redis client on a bounded pool that fails fast when Redis is down.

    The pool is bounded so that load (or a thousand parked waiters) can never turn into a
    thousand Redis connections: a request waits up to 5 s for a free connection, then gets 503.
    The client owns its pool: ``aclose()`` closes the pool's connections too (``Redis(connection_pool=)``
    would leave them open).
    """
    pool = BlockingConnectionPool.from_url(
        settings.redis_url,
        max_connections=max_connections or settings.redis_max_connections,
        timeout=5.0,
        socket_connect_timeout=2.0,
        socket_timeout=10.0,
        health_check_interval=30,
    )
    return Redis.from_pool(pool)


def arq_settings(settings: Settings) -> RedisSettings:
    """arq's connection settings for the same Redis."""
    return RedisSettings.from_dsn(settings.redis_url)
