"""Child processes of ``orchestrator dev`` and the benchmarks: started together, stopped together."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """In a child before exec: ask Linux to SIGTERM us when our parent dies, so nothing is orphaned."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def terminate(proc: subprocess.Popen[bytes] | None, grace: float = 5.0) -> None:
    """Stop `proc` (None: nothing to do): SIGTERM, then SIGKILL if it is still there after `grace` s."""
    if proc is None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class Children:
    """A named set of processes; ``stop()`` ends every one of them, whatever state each is in."""

    def __init__(self) -> None:
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, args: Sequence[str], *, env: Mapping[str, str], quiet: bool = False) -> None:
        """Start `args` as child `name`."""
        out = subprocess.DEVNULL if quiet else None
        self.procs[name] = subprocess.Popen(
            list(args), env=dict(env), stdout=out, stderr=out, preexec_fn=die_with_parent
        )

    def orchestrator(self, name: str, *args: str, env: Mapping[str, str], quiet: bool = False) -> None:
        """Start ``python -m orchestrator ARGS`` as child `name`."""
        self.start(name, [sys.executable, "-m", "orchestrator", *args], env=env, quiet=quiet)

    def exited(self) -> dict[str, int]:
        """Children that have ended, with their exit codes."""
        return {n: p.returncode for n, p in self.procs.items() if p.poll() is not None}

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM every child, then SIGKILL whichever is still alive after `timeout`."""
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in self.procs.values():
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs.clear()


def child_env(
    base: Mapping[str, str], settings_env: Mapping[str, str], *, pythonpath: Sequence[str] = ()
) -> dict[str, str]:
    """The environment of a child: `base` without ORCH_ variables, plus `settings_env` and PYTHONPATH."""
    env = {k: v for k, v in base.items() if not k.startswith("ORCH_")}
    env.update(settings_env)
    if pythonpath:
        parts = [*pythonpath, env.get("PYTHONPATH", "")]
        env["PYTHONPATH"] = os.pathsep.join(p for p in parts if p)
    return env
