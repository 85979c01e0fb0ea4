"""``orchestrator dev`` as a newcomer meets it (issue 18): one clear line for a broken flows module or a
busy port, a dev key that stays the same across restarts, a banner with paste-ready exports, a CLI
that finds the running stack, and a Ctrl-C that stops everything without complaint."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, subprocess_env
from tests.deadlines import wait_for

pytestmark = pytest.mark.timeout(120)


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCH_")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(tmp_path)])
    env["COLUMNS"] = "200"
    return env


class Dev:
    """An `orchestrator dev` process whose output is collected line by line."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        async for raw in self.proc.stdout:
            self.lines.append(raw.decode(errors="replace").rstrip())

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    async def stop(self) -> int:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGINT)  # what Ctrl-C does (the children are in their own group)
        code = await asyncio.wait_for(self.proc.wait(), 60)
        await asyncio.wait_for(self._reader, 10)
        return code


async def dev(tmp_path: Path, *args: str, cwd: Path = ROOT) -> Dev:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "orchestrator",
        "dev",
        *args,
        cwd=cwd,
        env=_env(tmp_path),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    return Dev(proc)


async def test_a_broken_flows_module_is_one_line_and_nothing_starts(tmp_path: Path) -> None:
    (tmp_path / "broken_flows.py").write_text("from orchestrator import flow\n\n\ndef oops(:\n    pass\n")
    started = time.monotonic()
    run = await dev(tmp_path, "--flows", "broken_flows", "--port", "0", "--data-dir", str(tmp_path / "d"))
    code = await asyncio.wait_for(run.proc.wait(), 30)
    await run.stop()
    assert code == 1
    [line] = [line for line in run.lines if line]
    assert (
        line.startswith("error: flows module 'broken_flows': syntax error at ")
        and "broken_flows.py:4" in line
    )
    assert time.monotonic() - started < 20 and not (tmp_path / "d" / "appendonlydir").exists()


async def test_a_flow_definition_error_names_the_function(tmp_path: Path) -> None:
    (tmp_path / "bad_def.py").write_text(
        "from orchestrator import flow\n\n@flow('x')\ndef one_arg(data: dict) -> dict:\n    return data\n"
    )
    run = await dev(tmp_path, "--flows", "bad_def", "--port", "0", "--data-dir", str(tmp_path / "d"))
    code = await asyncio.wait_for(run.proc.wait(), 30)
    await run.stop()
    assert code == 1 and "one_arg" in run.text and "takes two arguments (ctx, data)" in run.text


async def test_a_busy_port_is_one_line_at_once(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        run = await dev(tmp_path, "--port", str(port), "--data-dir", str(tmp_path / "d"))
        code = await asyncio.wait_for(run.proc.wait(), 30)
        await run.stop()
    assert code == 1
    assert run.lines == [
        f"error: port {port} is in use (another `orchestrator dev`?); pass --port 0 for any free port"
    ]


async def _ready(run: Dev) -> str:
    await wait_for(
        lambda: "Ctrl-C stops everything" in run.text or run.proc.returncode is not None, timeout=60
    )
    assert run.proc.returncode is None, run.text
    # The stack is announced only once its receiver's endpoint exists: a run made at once is sent to it.
    assert run.text.index("[receiver] Ready. Endpoint") < run.text.index("dev is up"), run.text
    match = re.search(r"export ORCH_BASE_URL=(\S+) ORCH_API_KEY=(\S+)", run.text)
    assert match is not None, run.text
    return match.group(2)


async def test_the_dev_key_survives_a_restart_and_the_cli_finds_the_stack(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = await dev(tmp_path, "--port", "0", "--data-dir", str(data))
    try:
        key = await _ready(first)
        assert f"source {Path(sys.prefix) / 'bin' / 'activate'}" in first.text or "on your PATH" in first.text
        # a second stack on the same data folder refuses at once
        second = await dev(tmp_path, "--port", "0", "--data-dir", str(data))
        assert await asyncio.wait_for(second.proc.wait(), 30) == 1
        await second.stop()
        assert "a dev stack already runs from" in second.text
        # the CLI, with no exports, finds the running stack from its data folder
        env = _env(tmp_path)
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "orchestrator",
            "run",
            "invoice-extraction",
            "--input",
            "@" + str(ROOT / "examples" / "invoice.json"),
            "--wait",
            cwd=data.parent.parent,  # .data/dev is looked for under the working folder
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        _out, err = await asyncio.wait_for(proc.communicate(), 60)
        # (the folder layout is <cwd>/.data/dev; this test's data folder is not, so the CLI says so)
        assert proc.returncode == 2 and b"no API key" in err
    finally:
        code = await first.stop()
    assert code == 0
    clean = first.text.split("stopping...", 1)[1]
    assert "stopped; your runs and the dev key are kept in" in clean
    for noise in ("Traceback", "subscription lost", "cannot reach Redis", "Connection refused"):
        assert noise not in clean, clean
    assert not (data / "stack.json").exists()
    again = await dev(tmp_path, "--port", "0", "--data-dir", str(data))
    try:
        assert await _ready(again) == key
    finally:
        await again.stop()


async def test_the_cli_uses_the_stack_running_from_its_folder(tmp_path: Path) -> None:
    work = tmp_path / "project"
    work.mkdir()
    run = await dev(tmp_path, "--port", "0", cwd=work)  # data in <work>/.data/dev
    try:
        await _ready(run)
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "orchestrator",
            "run",
            "invoice-extraction",
            "--input",
            "@" + str(ROOT / "examples" / "invoice.json"),
            "--wait",
            cwd=work,
            env=_env(tmp_path),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, err.decode()
        assert b"using the dev stack at" in err and b"success" in out
        # every delivery of that run reached the session's receiver, verified
        await wait_for(lambda: run.text.count("[verified]") >= 3, timeout=30)
    finally:
        assert await run.stop() == 0


def test_a_flows_module_in_the_working_folder_is_found_by_every_command(
    tmp_path: Path, redis_url: str
) -> None:
    # issue 18: `ORCH_FLOWS=upper orchestrator worker` failed from the module's folder
    import subprocess

    from tests.conftest import make_settings

    (tmp_path / "upper.py").write_text(
        "from orchestrator import flow\n\n"
        "@flow('upper')\ndef upper(ctx, data: dict) -> dict:\n    return data\n"
    )
    env = subprocess_env(make_settings(redis_url, flows=("upper",)))
    env["PYTHONPATH"] = str(ROOT)  # not the module's folder: only the working folder finds it
    out = subprocess.run(
        [sys.executable, "-m", "orchestrator", "worker", "--burst"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert "no flows registered" not in out.stderr


def test_the_banner_suggests_what_works_from_where_it_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A newcomer's walk (issue 18): with their own flows, in their own folder, the banner said the
    # CLI was on the PATH (it was not) and offered @examples/invoice.json (not there, wrong shape).
    from orchestrator.dev.stack import cli_hint, try_line

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", "/nonexistent")
    assert cli_hint() == f"source {Path(sys.prefix) / 'bin' / 'activate'}"
    assert try_line({"extract-invoice": {"url": "https://x/a.pdf"}}) == (
        'orchestrator run extract-invoice --input \'{"url": "https://x/a.pdf"}\' --wait'
    )
    assert try_line({"mine": None}).startswith("orchestrator flows show mine")
    assert try_line({"invoice-extraction": None}).startswith("orchestrator flows show invoice-extraction")
    monkeypatch.chdir(ROOT)
    assert try_line({"invoice-extraction": None, "mine": None}) == (
        "orchestrator run invoice-extraction --input @examples/invoice.json --wait"
    )
