"""A replicated Redis on loopback: a primary, replicas and Sentinels, for the fault suite and the bench.

Sentinels are ``redis-server <config> --sentinel`` (the same binary; Debian's ``redis-sentinel``
package is not needed), each with a config file it may rewrite in `data_dir`. Timings are small
(``down_after_ms``, ``failover_timeout_ms``) so that a failover takes seconds, not a minute.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import quote

import redis as sync_redis

from orchestrator.dev.children import die_with_parent, terminate
from orchestrator.dev.embedded import EmbeddedRedis, find_redis_server, free_port
from orchestrator.redis_url import sentinel_url

HOST = "127.0.0.1"


def _until(condition: Callable[[], bool], *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(sync_redis.RedisError, OSError):
            if condition():
                return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} within {timeout:g} s")
        time.sleep(0.02)


def _quoted(value: str) -> str:
    """A config file string (Redis reads double quotes with backslash escapes)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass(frozen=True)
class TlsFiles:
    """A certificate, its key and the CA that signed it: every node and Sentinel speaks TLS only."""

    cert: Path
    key: Path
    ca: Path

    def config(self) -> list[str]:
        """Config lines (also usable as ``--name value`` arguments)."""
        return [
            f"tls-cert-file {self.cert}",
            f"tls-key-file {self.key}",
            f"tls-ca-cert-file {self.ca}",
            "tls-auth-clients no",
            "tls-replication yes",  # replicas and Sentinels talk TLS to the nodes too
        ]

    def args(self) -> tuple[str, ...]:
        """:meth:`config` as redis-server arguments."""
        return tuple(part for line in self.config() for part in (f"--{line.split()[0]}", line.split()[1]))

    def client(self) -> dict[str, Any]:
        """redis-py keyword arguments of a client that checks the nodes' certificate."""
        return {"ssl": True, "ssl_ca_certs": str(self.ca), "ssl_cert_reqs": "required"}


class EmbeddedSentinel:
    """One Sentinel process watching `service`."""

    def __init__(self, config: Path, *, password: str | None = None, tls: TlsFiles | None = None) -> None:
        self.port = free_port()
        self.config = config
        self.password = password
        self.tls = tls
        self.proc: subprocess.Popen[bytes] | None = None

    def client(self) -> sync_redis.Redis:
        """A client of this Sentinel (close it)."""
        tls = self.tls.client() if self.tls else {}
        return sync_redis.Redis(HOST, self.port, password=self.password, socket_timeout=2, **tls)

    def start(self, lines: list[str]) -> None:
        """Write its config (port first) and start it."""
        ports = (
            [f"port {self.port}"]
            if self.tls is None
            else ["port 0", f"tls-port {self.port}", *self.tls.config()]
        )
        self.config.write_text("\n".join([*ports, f"bind {HOST}", *lines]) + "\n")
        self.proc = subprocess.Popen(
            [find_redis_server(), str(self.config), "--sentinel"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=die_with_parent,
            start_new_session=True,
        )

    def stop(self) -> None:
        """Stop it (SIGTERM, then SIGKILL)."""
        terminate(self.proc)
        self.proc = None


class ReplicatedRedis:
    """A primary, `replicas` replicas (``--replicaof``) and `sentinels` Sentinels watching them."""

    def __init__(
        self,
        data_dir: Path,
        *,
        replicas: int = 1,
        sentinels: int = 3,
        service: str = "orch",
        down_after_ms: int = 1000,
        failover_timeout_ms: int = 3000,
        password: str | None = None,
        sentinel_password: str | None = None,
        upstream_port: int | None = None,
        tls: TlsFiles | None = None,
    ) -> None:
        """`upstream_port`: where replicas first replicate from (a relay in front of the primary).

        With `tls`, nodes and Sentinels serve TLS only (a node keeps a plain port for start-up pings).
        """
        self.data_dir = data_dir
        self.service = service
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms
        self.password = password
        self.sentinel_password = sentinel_password
        self.tls = tls
        auth = ("--requirepass", password, "--masterauth", password) if password else ()
        # A replica syncs at once (no 5 s wait for others), into a folder of its own.
        common = (*auth, "--repl-diskless-sync-delay", "0")
        served = [free_port() if tls else 0 for _ in range(replicas + 1)]  # each node's TLS port

        def node(i: int, *more: str) -> EmbeddedRedis:
            secure = ("--tls-port", str(served[i]), *tls.args()) if tls else ()
            return EmbeddedRedis(extra=(*common, *secure, "--dir", str(data_dir / f"node-{i}"), *more))

        self.primary = node(0)
        of = ("--replicaof", HOST, str(upstream_port or served[0] or self.primary.port))
        self.replicas = [node(i + 1, *of) for i in range(replicas)]
        self._served = {n.port: served[i] or n.port for i, n in enumerate(self.nodes)}
        self.sentinels = [
            EmbeddedSentinel(data_dir / f"sentinel-{i}.conf", password=sentinel_password, tls=tls)
            for i in range(sentinels)
        ]

    @property
    def nodes(self) -> list[EmbeddedRedis]:
        """Every data node, the first primary first."""
        return [self.primary, *self.replicas]

    @property
    def url(self) -> str:
        """The ``redis+sentinel://`` form of ORCH_REDIS_URL for this service."""
        sentinels = [(HOST, s.port) for s in self.sentinels]
        url = sentinel_url(sentinels, self.service, password=self.password, tls=self.tls is not None)
        options = (
            [f"sentinel_password={quote(self.sentinel_password, safe='')}"] if self.sentinel_password else []
        )
        if self.tls is not None:
            options += [f"ssl_ca_certs={quote(str(self.tls.ca))}", "ssl_cert_reqs=required"]
        return url + ("?" + "&".join(options) if options else "")

    def served_port(self, node: EmbeddedRedis) -> int:
        """The port clients, replicas and Sentinels use for `node` (its TLS port with TLS)."""
        return self._served[node.port]

    def node_at(self, port: int) -> EmbeddedRedis:
        """The data node serving `port`."""
        [found] = [n for n in self.nodes if self.served_port(n) == port]
        return found

    def node_client(self, node: EmbeddedRedis) -> sync_redis.Redis:
        """A direct client of one data node (close it)."""
        tls = self.tls.client() if self.tls else {}
        return sync_redis.Redis(HOST, self.served_port(node), password=self.password, socket_timeout=2, **tls)

    def start(self, timeout: float = 30.0) -> None:
        """Start everything; return once every Sentinel sees the replicas and the other Sentinels."""
        for i, node in enumerate(self.nodes):
            (self.data_dir / f"node-{i}").mkdir(parents=True, exist_ok=True)
            node.start()
        _until(self._replicas_online, timeout=timeout, what="the replicas did not sync")
        quorum = len(self.sentinels) // 2 + 1
        lines = [
            f"dir {self.data_dir}",
            f"sentinel monitor {self.service} {HOST} {self.served_port(self.primary)} {quorum}",
            f"sentinel down-after-milliseconds {self.service} {self.down_after_ms}",
            f"sentinel failover-timeout {self.service} {self.failover_timeout_ms}",
        ]
        if self.password:
            lines.append(f"sentinel auth-pass {self.service} {_quoted(self.password)}")
        if self.sentinel_password:
            secret = _quoted(self.sentinel_password)
            lines += [f"requirepass {secret}", f"sentinel sentinel-pass {secret}"]
        # Each knows the others and the replicas from the start (else discovery takes up to 10 s).
        ids = [os.urandom(20).hex() for _ in self.sentinels]
        known = [f"sentinel known-replica {self.service} {HOST} {self.served_port(n)}" for n in self.replicas]
        for i, sentinel in enumerate(self.sentinels):
            others = [
                f"sentinel known-sentinel {self.service} {HOST} {s.port} {ids[j]}"
                for j, s in enumerate(self.sentinels)
                if j != i
            ]
            sentinel.start([*lines, f"sentinel myid {ids[i]}", *known, *others])
        for sentinel in self.sentinels:
            _until(partial(self._sees_all, sentinel), timeout=timeout, what="a Sentinel did not see all")

    def _replicas_online(self) -> bool:
        # "online" as the primary sees it (after a replica's first ack): only then does WAIT count it
        with self.node_client(self.primary) as client:
            info = client.info("replication")
        states = [info.get(f"slave{i}", {}).get("state") for i in range(len(self.replicas))]
        return states == ["online"] * len(self.replicas)

    def _sees_all(self, sentinel: EmbeddedSentinel) -> bool:
        with sentinel.client() as client:
            master = client.execute_command("SENTINEL", "MASTER", self.service)
            state = dict(zip(master[::2], master[1::2], strict=True))
            replicas = client.execute_command("SENTINEL", "REPLICAS", self.service)
            return (
                int(state[b"num-other-sentinels"]) == len(self.sentinels) - 1
                and len(replicas) == len(self.replicas)
                and all(b"s_down" not in dict(zip(r[::2], r[1::2], strict=True))[b"flags"] for r in replicas)
            )

    def primary_port(self) -> int:
        """The port of the node the first answering Sentinel names as primary."""
        for sentinel in self.sentinels:
            if sentinel.proc is None:
                continue
            with contextlib.suppress(sync_redis.RedisError), sentinel.client() as client:
                _, port = client.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service)
                return int(port)
        raise RuntimeError("no Sentinel answers")

    def kill_primary(self) -> tuple[EmbeddedRedis, float]:
        """SIGKILL the current primary (a crash: nothing more is flushed or sent); return it and when."""
        node = self.node_at(self.primary_port())
        assert node.proc is not None
        at = time.time()
        os.kill(node.proc.pid, signal.SIGKILL)
        node.proc.wait()
        node.proc = None
        return node, at

    def wait_promoted(self, old_port: int, timeout: float = 60.0) -> int:
        """Wait until every live Sentinel names a new primary that says it is one; return its port."""

        def promoted() -> bool:
            port = self.primary_port()
            if port == old_port:
                return False
            with self.node_client(self.node_at(port)) as client:
                return bool(client.info("replication").get("role") == "master")

        _until(promoted, timeout=timeout, what="no replica was promoted")
        return self.primary_port()

    def stop(self) -> None:
        """Stop every process started (Sentinels first, so they do not fail over a stopping primary)."""
        for sentinel in self.sentinels:
            sentinel.stop()
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> ReplicatedRedis:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
