"""Redis connections for every process, built from Settings in one place.

``ORCH_REDIS_URL`` (parsed once by ``orchestrator.redis_url``) names one Redis or a Sentinel
service. Either way a client follows a failover by itself, with no restart: a connection that
breaks (the primary died) or finds its server demoted to a replica (``READONLY``) is dropped, and
the next one goes to whatever primary the Sentinels name now (or the DNS name points at, for a
managed Redis). In between, commands raise redis-py's ConnectionError, which every process treats
as the outage it is: the API answers 503 ``unavailable``, workers and dispatchers retry with backoff.

The API, the dispatcher, the CLI's admin commands and the bench use :func:`redis_from_settings`;
the worker's arq pool is :func:`arq_pool` and its liveness thread's client :func:`sync_client`.
None of this loads Starlette or any route.
"""

from __future__ import annotations

from typing import Any

import hiredis
import redis as sync_redis
import redis.connection as sync_connection
import redis.sentinel as sync_sentinel
from arq.connections import ArqRedis, RedisSettings
from redis.asyncio import BlockingConnectionPool, ConnectionPool, Redis
from redis.asyncio.connection import Connection, SSLConnection, UnixDomainSocketConnection
from redis.asyncio.sentinel import (
    Sentinel,
    SentinelConnectionPool,
    SentinelManagedConnection,
    SentinelManagedSSLConnection,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ReadOnlyError

from orchestrator.redis_url import RedisTarget, parse
from orchestrator.settings import Settings

# Every data connection: fail fast when Redis is away, notice a dead peer within 30 s of idling.
NODE_OPTIONS: dict[str, Any] = {
    "socket_connect_timeout": 2.0,
    "socket_timeout": 10.0,
    "health_check_interval": 30,
}
# Asking the Sentinels who the primary is: one dead Sentinel must not stall the question.
SENTINEL_OPTIONS: dict[str, Any] = {"socket_connect_timeout": 1.0, "socket_timeout": 1.0}
# A request waits this long for a free pooled connection, then gets 503.
POOL_WAIT_SECONDS = 5.0
DEMOTED = "the Redis this connection wrote to was demoted to a replica (a failover); reconnecting"


class HiredisPacking:
    """Commands packed by hiredis (C) rather than by redis-py's asyncio packer (Python, copying its
    buffer once per argument): the dispatcher's batched scripts carry hundreds of arguments, and
    packing them was a tenth of its CPU (issue 15). redis-py's synchronous client packs with hiredis
    already; this does the same for the asyncio one. Arguments hiredis does not take (none of ours)
    go through redis-py's packer, which raises its usual DataError.
    """

    def pack_command(self, *args: Any) -> list[bytes]:
        """The RESP bytes of one command (``args[0]`` may hold several words, e.g. ``SCRIPT LOAD``)."""
        head = args[0]
        if isinstance(head, str) and " " in head:
            args = (*head.encode().split(), *args[1:])
        elif isinstance(head, bytes) and b" " in head:
            args = (*head.split(), *args[1:])
        try:
            return [hiredis.pack_command(args)]
        except TypeError:
            return super().pack_command(*args)  # type: ignore[misc,no-any-return]


class FailoverConnection(HiredisPacking, Connection):  # type: ignore[misc]
    """A direct connection that treats a demoted server (``READONLY``) as a lost connection.

    After a managed Redis fails over, its DNS name points at the new primary but an open
    connection still reaches the old one, now a replica: redis-py would keep it and every write
    would fail. Dropping it makes the next command connect again, to the name's new address.
    """

    async def read_response(self, *args: Any, **kwargs: Any) -> Any:
        """Read a reply; ``READONLY`` disconnects and raises ConnectionError (an outage, 503)."""
        try:
            return await super().read_response(*args, **kwargs)
        except ReadOnlyError:
            await self.disconnect(nowait=True)
            raise RedisConnectionError(DEMOTED) from None


class FailoverSSLConnection(FailoverConnection, SSLConnection):  # type: ignore[misc]
    """:class:`FailoverConnection` over TLS (``rediss://``)."""


class SyncFailoverConnection(sync_connection.Connection):  # type: ignore[misc]
    """:class:`FailoverConnection` for the synchronous client (a worker's liveness thread)."""

    def read_response(self, *args: Any, **kwargs: Any) -> Any:
        """Read a reply; ``READONLY`` disconnects and raises ConnectionError."""
        try:
            return super().read_response(*args, **kwargs)
        except ReadOnlyError:
            self.disconnect()
            raise RedisConnectionError(DEMOTED) from None


class SyncFailoverSSLConnection(SyncFailoverConnection, sync_connection.SSLConnection):  # type: ignore[misc]
    """:class:`SyncFailoverConnection` over TLS."""


class SentinelPool(SentinelConnectionPool):  # type: ignore[misc]
    """redis-py's Sentinel pool, which also closes its connections to the Sentinels when closed."""

    async def disconnect(self, inuse_connections: bool = True) -> None:
        """Close the pool's connections; a full close (the client's) closes the Sentinels' too."""
        await super().disconnect(inuse_connections)
        if inuse_connections:  # not the idle-only sweep redis-py does when the primary moves
            for sentinel in self.sentinel_manager.sentinels:
                await sentinel.connection_pool.disconnect()


class PackedSentinelConnection(HiredisPacking, SentinelManagedConnection):  # type: ignore[misc]
    """redis-py's connection to the primary a Sentinel names, packing with hiredis."""


class PackedSentinelSSLConnection(HiredisPacking, SentinelManagedSSLConnection):  # type: ignore[misc]
    """:class:`PackedSentinelConnection` over TLS."""


class BlockingSentinelPool(SentinelPool, BlockingConnectionPool):  # type: ignore[misc]
    """A Sentinel pool that is bounded: past `max_connections` a caller waits (then 503)."""


class SyncSentinelPool(sync_sentinel.SentinelConnectionPool):  # type: ignore[misc]
    """:class:`SentinelPool` for the synchronous client."""

    def disconnect(self, inuse_connections: bool = True) -> None:
        """Close the pool's connections, and the Sentinels' on a full close."""
        super().disconnect(inuse_connections)
        if inuse_connections:
            for sentinel in self.sentinel_manager.sentinels:
                sentinel.connection_pool.disconnect()


def _direct(target: RedisTarget, *, sync: bool = False) -> dict[str, Any]:
    """Pool keyword arguments for one server (TCP, TLS or unix socket)."""
    kwargs = target.node_kwargs()
    if target.path is not None:
        kind = sync_connection.UnixDomainSocketConnection if sync else UnixDomainSocketConnection
        return {**kwargs, "path": target.path, "connection_class": kind}
    [(host, port)] = target.hosts
    if target.uses_tls:
        kind = SyncFailoverSSLConnection if sync else FailoverSSLConnection
    else:
        kind = SyncFailoverConnection if sync else FailoverConnection
    return {**kwargs, "host": host, "port": port, "connection_class": kind}


def _sentinels(target: RedisTarget, options: dict[str, Any], *, sync: bool = False) -> Any:
    """A redis-py Sentinel manager for `target` (it answers which server is the primary now)."""
    manager = sync_sentinel.Sentinel if sync else Sentinel
    if not sync:  # the pools it makes use these connections to the primary
        kind = PackedSentinelSSLConnection if target.uses_tls else PackedSentinelConnection
        options = {**options, "connection_class": kind}
    return manager(
        list(target.hosts),
        sentinel_kwargs={**SENTINEL_OPTIONS, **target.sentinel_kwargs()},
        ssl=target.uses_tls,
        **options,
        **target.node_kwargs(),
    )


def redis_from_settings(settings: Settings, *, max_connections: int | None = None) -> Redis:
    """An asyncio Redis client on a bounded pool that fails fast when Redis is down.

    The pool is bounded so that load (or a thousand parked waiters) can never turn into a
    thousand Redis connections: a request waits up to 5 s for a free connection, then gets 503.
    The client owns its pool: ``aclose()`` closes the pool's connections too.
    """
    target = parse(settings.redis_url)
    size = max_connections or settings.redis_max_connections
    if target.sentinel:
        client: Redis = _sentinels(target, NODE_OPTIONS).master_for(
            target.service,
            redis_class=Redis,
            connection_pool_class=BlockingSentinelPool,
            max_connections=size,
            timeout=POOL_WAIT_SECONDS,
        )
        return client
    pool = BlockingConnectionPool(
        max_connections=size, timeout=POOL_WAIT_SECONDS, **NODE_OPTIONS, **_direct(target)
    )
    return Redis.from_pool(pool)


def arq_pool(settings: Settings, **arq_options: Any) -> ArqRedis:
    """The worker's arq pool (unbounded, as arq's own), following a failover like every client.

    `arq_options` set arq's attributes (``job_serializer``, ``default_queue_name``, ...). arq's
    own Sentinel support would drop the Sentinels' password and TLS, so the pool is built here.
    """
    target = parse(settings.redis_url)
    if target.sentinel:
        pool: ArqRedis = _sentinels(target, NODE_OPTIONS).master_for(
            target.service, redis_class=ArqRedis, connection_pool_class=SentinelPool
        )
    else:
        pool = ArqRedis.from_pool(ConnectionPool(**NODE_OPTIONS, **_direct(target)))
    for name, value in arq_options.items():
        setattr(pool, name, value)
    return pool


def sync_client(settings: Settings) -> sync_redis.Redis:
    """A synchronous client for a thread with a connection of its own (the liveness thread)."""
    target = parse(settings.redis_url)
    options = {"socket_connect_timeout": 2.0, "socket_timeout": 5.0}
    if target.sentinel:
        client: sync_redis.Redis = _sentinels(target, options, sync=True).master_for(
            target.service, connection_pool_class=SyncSentinelPool
        )
        return client
    pool = sync_redis.ConnectionPool(**options, **_direct(target, sync=True))
    return sync_redis.Redis.from_pool(pool)


def arq_settings(settings: Settings) -> RedisSettings:
    """arq's description of the same Redis (the worker's pool itself comes from :func:`arq_pool`)."""
    target = parse(settings.redis_url)
    common: dict[str, Any] = {
        "database": target.db,
        "username": target.username,
        "password": target.password,
        "ssl": target.uses_tls,
    }
    if target.sentinel:
        return RedisSettings(
            host=list(target.hosts), sentinel=True, sentinel_master=target.service or "", **common
        )
    if target.path is not None:
        return RedisSettings(unix_socket_path=target.path, **common)
    [(host, port)] = target.hosts
    return RedisSettings(host=host, port=port, **common)
