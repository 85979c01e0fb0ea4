import json
import subprocess
import sys

import pytest
from redis.asyncio import Redis

from orchestrator.api.auth import digest
from orchestrator.settings import Settings
from tests.conftest import KEY_A, ROOT, subprocess_env, wait_for


async def test_keys_create_prints_a_key_stored_only_hashed(settings: Settings, redis: Redis) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "orchestrator", "keys", "create", "--tenant", "acme"],
        env=subprocess_env(settings),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    key = out.stdout.strip()
    assert key.startswith("sk_") and len(key) > 40
    assert await redis.hget("orch:apikeys", digest(key)) == b"acme"
    assert key.encode() not in b"".join((await redis.hgetall("orch:apikeys")).keys())


def test_bad_configuration_exits_2_with_a_message() -> None:
    env = {"ORCH_API_KEYS": "broken", "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [sys.executable, "-m", "orchestrator", "worker"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2 and "bad configuration" in out.stderr


async def cli(api_server, *args: str, timeout: float = 60, columns: int = 200) -> tuple[int, str, str]:
    import asyncio
    import os

    env = {**os.environ, "ORCH_BASE_URL": api_server.url, "ORCH_API_KEY": KEY_A, "COLUMNS": str(columns)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "orchestrator",
        *args,
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    return proc.returncode or 0, out.decode(), err.decode()


async def test_run_wait_draws_progress_and_exits_by_outcome(api_server, worker, redis: Redis) -> None:
    code, out, err = await cli(
        api_server, "run", "invoice-extraction", "--input", "@examples/invoice.json", "--wait"
    )
    assert code == 0, err
    assert "3/3 steps" in err and "success" in out and "INV-2026-001" in out
    assert "(validate)" in err and "last: validate" in out  # the step names the flow gave
    code, out, _ = await cli(api_server, "run", "fail", "--input", "{}", "--wait", "--json")
    assert code == 1 and json.loads(out)["error"]["code"] == "encrypted_pdf"
    code, _, err = await cli(api_server, "run", "nope", "--input", "{}")
    assert code == 3 and "404" in err
    code, _, err = await cli(api_server, "run", "echo", "--input", "{not json")
    assert code == 2 and "--input" in err


async def test_runs_commands(api_server, worker, redis: Redis, client) -> None:
    run = (await client.post("/v1/flows/slow/runs", json={"input": {"seconds": 60}})).json()
    code, out, _ = await cli(api_server, "runs", "list", "--json")
    assert code == 0 and [r["id"] for r in json.loads(out)] == [run["id"]]
    code, out, _ = await cli(api_server, "runs", "list", "--flow", "slow")
    assert code == 0 and run["id"] in out
    code, out, _ = await cli(api_server, "runs", "wait", run["id"], "--timeout", "0.2", "--json")
    assert code == 4
    code, out, _ = await cli(api_server, "runs", "cancel", run["id"], "--json")
    assert code == 0 and json.loads(out)["status"] == "cancelled"
    code, out, _ = await cli(api_server, "runs", "get", run["id"])
    assert code == 0 and "cancelled" in out
    code, _, err = await cli(api_server, "runs", "cancel", run["id"])
    assert code == 3 and "409" in err
    code, out, _ = await cli(api_server, "runs", "wait", run["id"], "--json")
    assert code == 1 and json.loads(out)["status"] == "cancelled"


async def test_webhooks_commands_and_the_deliveries_report(api_server, worker, redis: Redis, client) -> None:
    from tests.receiver import Receiver
    from tests.webhooks.helpers import running_dispatcher

    receiver = await Receiver().start()
    try:
        code, out, _ = await cli(
            api_server, "webhooks", "create", receiver.url, "--event", "execution.success", "--json"
        )
        assert code == 0
        endpoint = json.loads(out)
        code, out, _ = await cli(
            api_server, "webhooks", "create", "https://example.com/never", "--flow", "noop", "--json"
        )
        filtered = json.loads(out)
        code, out, _ = await cli(api_server, "webhooks", "list")
        assert code == 0 and endpoint["id"] in out and "whsec_" not in out
        async with running_dispatcher(redis):
            run = (await client.post("/v1/flows/echo/runs", json={"input": {"text": "x"}})).json()
            await wait_for(lambda: receiver.types() == ["execution.success"], timeout=20)

            async def recorded() -> bool:
                view = (await client.get(f"/v1/webhooks/{endpoint['id']}/deliveries")).json()["data"]
                return bool(view) and view[0]["status"] == "succeeded"

            await wait_for(recorded)
        code, out, _ = await cli(api_server, "runs", "deliveries", run["id"], "--json")
        report = {ep["endpointId"]: ep for ep in json.loads(out)["data"]}
        mine = {e["eventType"]: e for e in report[endpoint["id"]]["events"]}
        assert mine["execution.success"]["status"] == "succeeded" and mine["execution.success"]["attempts"]
        assert (
            mine["execution.queued"]["matched"] is False
            and mine["execution.queued"]["reason"] == "event type filtered"
        )
        other = {e["eventType"]: e for e in report[filtered["id"]]["events"]}
        assert other["execution.success"]["reason"] == "flow filtered"
        code, out, _ = await cli(api_server, "runs", "deliveries", run["id"])
        assert code == 0 and "event type filtered" in out
        code, out, _ = await cli(api_server, "webhooks", "deliveries", endpoint["id"], "--json")
        [delivery] = json.loads(out)
        code, out, _ = await cli(api_server, "webhooks", "retry", endpoint["id"], delivery["id"])
        assert code == 0
        code, out, _ = await cli(
            api_server, "webhooks", "recover", endpoint["id"], "--since", "2020-01-01T00:00:00", "--json"
        )
        assert code == 0 and json.loads(out) == {"count": 0}
    finally:
        await receiver.stop()


async def listen_once(api_server, client, redis: Redis, *args: str, text: str) -> tuple[int, str, str]:
    """Run `orchestrator webhooks listen *args` until it exits, with a dispatcher and one run made
    once its endpoint exists; its exit code, output and error output."""
    import asyncio
    import os

    from tests.webhooks.helpers import running_dispatcher

    env = {**os.environ, "ORCH_BASE_URL": api_server.url, "ORCH_API_KEY": KEY_A}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "orchestrator",
        "webhooks",
        "listen",
        *args,
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )

    async def registered() -> bool:
        return len((await client.get("/v1/webhooks")).json()["data"]) == 1

    try:
        await wait_for(registered, timeout=30)
        async with running_dispatcher(redis):
            await client.post("/v1/flows/echo/runs", json={"input": {"text": text}})
            out, err = await asyncio.wait_for(proc.communicate(), 30)
    finally:
        if proc.returncode is None:  # a failed wait above: never leave the listener behind
            proc.kill()
            await proc.wait()
    return proc.returncode or 0, out.decode(), err.decode()


async def test_webhooks_listen_prints_and_forwards(api_server, worker, redis: Redis, client) -> None:
    from tests.receiver import Receiver

    app = await Receiver(default=201).start()
    try:
        code, text, err = await listen_once(
            api_server, client, redis, "--forward", app.url, "--max-events", "3", text="listen"
        )
    finally:
        await app.stop()
    assert code == 0, err
    assert text.count("[verified]") == 3 and f"-> {app.url} 201" in text
    assert sorted(app.types()) == ["execution.queued", "execution.running", "execution.success"]
    assert (await client.get("/v1/webhooks")).json()["data"] == []  # removed on exit


async def test_a_422_shows_every_bad_field(api_server, redis: Redis) -> None:
    # issue 18: the CLI printed only "input does not match ..." although the API lists each field
    code, _, err = await cli(
        api_server, "run", "invoice-extraction", "--input", '{"document": {}, "stepDelay": "soon"}'
    )
    assert code == 3
    assert "input.document.base64: Field required" in err
    assert "input.stepDelay: Input should be a valid number" in err


async def test_an_unknown_flow_names_the_flows_that_exist(api_server, redis: Redis) -> None:
    code, _, err = await cli(api_server, "run", "nope", "--input", "{}")
    assert code == 3 and "no flow nope" in err and "invoice-extraction" in err and "echo" in err


async def test_ids_are_never_cut_even_at_80_columns(api_server, worker, redis: Redis, client) -> None:
    import asyncio
    import os

    ids = [
        (await client.post("/v1/flows/echo/runs", json={"input": {"text": "x"}})).json()["id"]
        for _ in range(3)
    ]
    env = {**os.environ, "ORCH_BASE_URL": api_server.url, "ORCH_API_KEY": KEY_A, "COLUMNS": "80"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "orchestrator",
        "runs",
        "list",
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await proc.communicate()
    text = out.decode()
    for run_id in ids:
        assert run_id in text  # whole, on one line
    assert max(len(line) for line in text.splitlines()) <= 80


async def test_flows_list_and_show(api_server, redis: Redis) -> None:
    code, out, _ = await cli(api_server, "flows", "list")
    assert code == 0 and "invoice-extraction" in out and "echo" in out
    code, out, _err = await cli(api_server, "flows", "show", "invoice-extraction")
    assert code == 0 and '"base64"' in out and "orchestrator run invoice-extraction --input '{" in out
    code, out, _ = await cli(api_server, "flows", "show", "invoice-extraction", "--json")
    assert json.loads(out)["inputSchema"]["examples"][0]["document"]["filename"] == "invoice.txt"


async def test_an_unreachable_api_says_what_to_try() -> None:
    import os

    env = {**os.environ, "ORCH_BASE_URL": "http://127.0.0.1:9", "ORCH_API_KEY": "k"}
    out = subprocess.run(
        [sys.executable, "-m", "orchestrator", "runs", "list"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 3
    assert "cannot reach the API at http://127.0.0.1:9" in out.stderr and "orchestrator dev" in out.stderr


async def test_run_without_wait_says_how_to_follow(api_server, redis: Redis) -> None:
    code, _out, err = await cli(api_server, "run", "echo", "--input", '{"text": "x"}')
    assert code == 0 and "orchestrator runs wait exec_" in err


async def test_help_imports_no_server_code() -> None:
    # issue 18: `orchestrator --help` took ~1.2 s because every subcommand was imported eagerly
    probe = (
        "import sys\nfrom click.testing import CliRunner\nfrom orchestrator.cli.main import main\n"
        "result = CliRunner().invoke(main, ['--help'])\nassert result.exit_code == 0, result.output\n"
        "heavy = sorted(m for m in ('starlette', 'arq', 'aiohttp', 'uvicorn', 'rich') if m in sys.modules)\n"
        "print(heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("insecure", [False, True])
async def test_webhooks_listen_forwards_to_a_self_signed_server_only_with_insecure(
    api_server, worker, redis: Redis, client, tmp_path, insecure: bool
) -> None:
    # Issue 14: forwarding to `https://localhost:8443/` (a self-signed dev server) answered 502, no way out.
    from orchestrator.cli.listen import INSECURE_WARNING
    from tests.receiver import Receiver
    from tests.tls import make_certs

    certs = make_certs(tmp_path)
    app = await Receiver(default=201).start(ssl_context=certs.server_context(self_signed=True))
    args = ["--forward", app.url, "--max-events", "1", "--event", "execution.queued"]
    try:
        code, text, warnings = await listen_once(
            api_server, client, redis, *args, *(["--insecure"] if insecure else []), text="tls"
        )
    finally:
        await app.stop()
    assert code == 0, warnings
    if insecure:
        assert INSECURE_WARNING in warnings
        assert f"-> {app.url} 201" in text and app.types() == ["execution.queued"]
    else:
        assert INSECURE_WARNING not in warnings
        assert "forward failed" in text and "certificate verify failed" in text and app.requests == []


async def test_webhooks_delete_removes_an_endpoint_and_a_second_delete_is_a_clear_404(
    api_server, redis: Redis
) -> None:
    # A newcomer's walk: the README's example endpoints could not be removed from the CLI.
    code, out, _ = await cli(api_server, "webhooks", "create", "https://example.com/hook", "--json")
    assert code == 0
    endpoint_id = json.loads(out)["id"]
    code, _, err = await cli(api_server, "webhooks", "delete", endpoint_id)
    assert code == 0 and f"deleted {endpoint_id}" in err
    code, out, _ = await cli(api_server, "webhooks", "list", "--json")
    assert json.loads(out) == []
    code, _, err = await cli(api_server, "webhooks", "delete", endpoint_id)
    assert code == 3 and endpoint_id in err


async def test_an_endpoints_deliveries_read_at_80_columns(api_server, worker, redis: Redis, client) -> None:
    # A newcomer's walk: at 80 columns the table kept only its two ids and printed the next attempt
    # one character a line. Now: the message id whole, the event, status, tries, a clipped error.
    from tests.deadlines import wait_for
    from tests.webhooks.helpers import running_dispatcher

    endpoint_id = (await client.post("/v1/webhooks", json={"url": "http://127.0.0.1:9/nobody"})).json()["id"]
    async with running_dispatcher(redis):
        await client.post("/v1/flows/echo/runs", json={"input": {"text": "x"}})

        async def tried() -> bool:
            view = (await client.get(f"/v1/webhooks/{endpoint_id}/deliveries")).json()["data"]
            return len(view) == 3 and all(d["attempts"] for d in view)

        await wait_for(tried, timeout=30)
    code, out, err = await cli(api_server, "webhooks", "deliveries", endpoint_id, columns=80)
    assert code == 0, err
    lines = out.splitlines()
    assert max(len(line) for line in lines) <= 80
    view = (await client.get(f"/v1/webhooks/{endpoint_id}/deliveries")).json()["data"]
    for delivery in view:
        [line] = [line for line in lines if delivery["id"] in line]  # whole, on one line
        assert delivery["eventType"].removeprefix("execution.") in line and delivery["status"] in line
