"""Every client built by orchestrator.connections follows a failover by itself, with no restart."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import redis as sync_redis
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from orchestrator.api.auth import digest
from orchestrator.connections import arq_pool, arq_settings, redis_from_settings, sync_client
from orchestrator.dev.sentinel import ReplicatedRedis, TlsFiles
from orchestrator.flows import Registry
from orchestrator.runs import keys
from orchestrator.settings import Settings
from tests.conftest import ROOT, make_settings, serve, tenant_client, wait_for
from tests.redis_server import RedisServer, free_port

pytestmark = pytest.mark.timeout(120)


async def first_success(attempt: Any, outages: list[type[BaseException]], timeout: float = 30) -> Any:
    """Call `attempt` until it succeeds; every failure on the way must be an outage (ConnectionError)."""

    async def once() -> Any:
        try:
            result = attempt()
            return (await result) if asyncio.iscoroutine(result) else result
        except RedisConnectionError as exc:
            outages.append(type(exc))
            return None

    return await wait_for(once, timeout=timeout, interval=0.05)


async def test_every_client_follows_a_sentinel_failover(tmp_path: Path) -> None:
    with ReplicatedRedis(tmp_path, password="node pw", sentinel_password="sentinel-pw") as group:
        settings = Settings(redis_url=group.url, redis_min_replicas_ack=1)
        assert arq_settings(settings).sentinel and arq_settings(settings).sentinel_master == "orch"
        client, pool, sync = redis_from_settings(settings), arq_pool(settings), sync_client(settings)
        try:
            await client.set("before", "1")
            await settings.replication.fence(client, what="before")  # the replica holds it
            old_port = group.primary_port()
            group.kill_primary()
            outages: list[type[BaseException]] = []
            assert await first_success(lambda: client.get("before"), outages) == b"1"
            assert await first_success(lambda: pool.get("before"), outages) == b"1"
            assert await first_success(lambda: sync.get("before"), outages) == b"1"
            assert group.wait_promoted(old_port) != old_port
            await client.set("after", "2")  # writes go to the promoted replica
            assert sync.get("after") == b"2" and await pool.get("after") == b"2"
            assert outages and all(issubclass(kind, RedisConnectionError) for kind in outages)

            # the admin command, through the same URL: the key lands on the new primary
            env = {k: v for k, v in os.environ.items() if not k.startswith("ORCH_")}
            env.update(ORCH_REDIS_URL=group.url, PYTHONPATH=str(ROOT))
            made = subprocess.run(
                [sys.executable, "-m", "orchestrator", "keys", "create", "--tenant", "acme"],
                env=env,
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert made.returncode == 0, made.stderr
            assert await client.hget(keys.API_KEYS, digest(made.stdout.strip())) == b"acme"
        finally:
            await client.aclose()
            await pool.aclose()
            sync.close()


async def test_a_bad_url_stops_a_command_with_one_line() -> None:
    env = {"PATH": os.environ["PATH"], "ORCH_REDIS_URL": "redis+sentinel://:hunter2@s1:26379,s2:0/orch"}
    out = subprocess.run(
        [sys.executable, "-m", "orchestrator", "keys", "create", "--tenant", "a"],
        env={**env, "PYTHONPATH": str(ROOT)},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.strip().count("\n") == 0 and "ORCH_REDIS_URL has a bad port" in out.stderr
    assert "hunter2" not in out.stderr


def test_a_redis_that_cannot_be_reached_is_named_without_its_passwords() -> None:
    # nothing listens on these ports: the error names the service and the Sentinels, never a password
    dead = ",".join(f"127.0.0.1:{free_port()}" for _ in range(2))
    env = {
        "PATH": os.environ["PATH"],
        "PYTHONPATH": str(ROOT),
        "ORCH_REDIS_URL": f"redis+sentinel://:node-hunter2@{dead}/orch?sentinel_password=sentinel-hunter2",
    }
    out = subprocess.run(
        [sys.executable, "-m", "orchestrator", "keys", "create", "--tenant", "a"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 1 and "No master found for 'orch'" in out.stderr
    assert "hunter2" not in out.stderr + out.stdout


@pytest.fixture
def pair() -> Any:
    servers = [RedisServer(), RedisServer()]
    for s in servers:
        s.start()
    yield servers
    for s in servers:
        s.stop()


async def test_a_direct_client_drops_a_connection_to_a_demoted_server(
    pair: list[RedisServer], registry: Registry
) -> None:
    # regression: after a managed Redis fails over (its DNS name moves to the new primary), a pooled
    # connection to the old primary, now a replica, answered every write with READONLY: a 500 from
    # the API, forever, since redis-py kept the connection
    old, new = pair
    settings = make_settings(old.url)
    client, sync = redis_from_settings(settings), sync_client(settings)
    admin = sync_redis.Redis(port=old.port)
    try:
        await client.set("k", "1")
        sync.set("k", "1")
        admin.replicaof("127.0.0.1", new.port)  # demoted under the clients' feet
        with pytest.raises(RedisConnectionError, match="demoted"):
            await client.set("k", "2")
        with pytest.raises(RedisConnectionError, match="demoted"):
            sync.set("k", "2")
        async with serve(settings, registry) as app, tenant_client(app.url) as http:
            resp = await http.post("/v1/flows/echo/runs", json={"input": {"text": "x"}})
            assert resp.status_code == 503 and resp.json()["error"]["code"] == "unavailable"
            admin.replicaof("no", "one")  # in production: the name now resolves to the new primary
            resp = await http.post("/v1/flows/echo/runs", json={"input": {"text": "x"}})
            assert resp.status_code == 202  # the same process, reconnected
        await client.set("k", "3")  # the dropped connections were replaced, not kept
        sync.set("k", "3")
    finally:
        await client.aclose()
        sync.close()
        admin.close()


async def test_the_bounded_pool_stays_bounded_through_sentinel(tmp_path: Path) -> None:
    with ReplicatedRedis(tmp_path, sentinels=1) as group:
        client: Redis = redis_from_settings(Settings(redis_url=group.url), max_connections=4)
        try:
            blockers = [client.blpop(["nothing"], timeout=0.5) for _ in range(6)]
            await asyncio.gather(*blockers)  # 6 blocking calls on 4 connections: the last 2 wait
            with sync_redis.Redis(port=group.primary_port()) as admin:
                used = [c for c in admin.client_list() if c["cmd"] == "blpop"]
            assert len(used) == 4
        finally:
            await client.aclose()


def self_signed(folder: Path) -> TlsFiles:
    """A certificate for 127.0.0.1 that is its own CA (openssl, as .ci/system-deps installs it)."""
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1"),
            *("-addext", "subjectAltName=IP:127.0.0.1"),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return TlsFiles(cert=cert, key=key, ca=cert)


async def test_tls_to_the_sentinels_and_the_nodes(tmp_path: Path) -> None:
    # the Sentinels and the nodes serve TLS only: the failover is followed over TLS, with the
    # Sentinels' own password (arq's Sentinel support would have connected to them in plain text)
    tls = self_signed(tmp_path)
    with ReplicatedRedis(tmp_path, sentinels=3, sentinel_password="s-pw", tls=tls) as group:
        assert group.url.startswith("rediss+sentinel://")
        settings = Settings(redis_url=group.url)
        client, pool, sync = redis_from_settings(settings), arq_pool(settings), sync_client(settings)
        try:
            await client.set("k", "1")
            assert await pool.get("k") == b"1" and sync.get("k") == b"1"
            old_port = group.primary_port()
            group.kill_primary()
            outages: list[type[BaseException]] = []
            assert await first_success(lambda: client.set("k", "2"), outages)
            assert await first_success(lambda: pool.get("k"), outages) == b"2"
            assert await first_success(lambda: sync.get("k"), outages) == b"2"
            assert group.wait_promoted(old_port) != old_port
        finally:
            await client.aclose()
            await pool.aclose()
            sync.close()


def test_commands_are_packed_by_hiredis_exactly_as_redis_py_packs_them() -> None:
    # Issue 15: the asyncio client packs with hiredis (C); the bytes must be the very same.
    from redis.asyncio.connection import Connection

    from orchestrator.connections import FailoverConnection

    ours, theirs = FailoverConnection(), Connection()
    for args in (
        ("SET", "k", "v"),
        ("SCRIPT LOAD", "return 1"),
        (b"CLIENT SETNAME", b"x"),
        ("EVALSHA", "abc", 2, "k1", "k2", b"\x00packed\x00\xff", 1.5, -3, "é" * 3),
        ("HSET", "h", "f", "x" * 10_000),
    ):
        assert b"".join(ours.pack_command(*args)) == b"".join(theirs.pack_command(*args)), args
