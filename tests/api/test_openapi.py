"""The OpenAPI document is generated from the route table and the models, and is valid."""

from __future__ import annotations

import asyncio
import os
import re
import sys

import httpx
import pytest
import schemathesis
from starlette.routing import Route

from tests.conftest import KEY_A, ROOT, ServedApp

META = {"/openapi.json", "/docs"}
# The dashboard's pages are HTML for people (docs/dashboard.md), not API operations.
DASHBOARD = "/dashboard"


async def spec_of(api_server: ServedApp) -> dict:
    async with httpx.AsyncClient(base_url=api_server.url) as anon:
        resp = await anon.get("/openapi.json")
    assert resp.status_code == 200
    return resp.json()


async def test_every_route_is_documented(api_server: ServedApp) -> None:
    spec = await spec_of(api_server)
    assert spec["openapi"] == "3.1.0"
    routed = {
        (route.path, method.lower())
        for route in api_server.app.routes
        if isinstance(route, Route) and route.path not in META and not route.path.startswith(DASHBOARD)
        for method in (route.methods or set()) - {"HEAD"}
    }
    documented = {(path, method) for path, methods in spec["paths"].items() for method in methods}
    assert routed == documented
    create = spec["paths"]["/v1/flows/{flow_id}/runs"]["post"]
    assert {"202", "200", "400", "401", "404", "409", "413", "422", "503"} <= set(create["responses"])
    assert {p["name"] for p in create["parameters"]} >= {"flow_id", "Idempotency-Key", "Prefer"}
    error = create["responses"]["422"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
    assert set(spec["components"]["schemas"][error]["properties"]) == {"error"}


async def test_schemathesis_loads_it_without_schema_errors(api_server: ServedApp) -> None:
    schema = schemathesis.openapi.from_dict(await spec_of(api_server))
    operations = list(schema.get_all_operations())
    assert len(operations) >= 20
    for result in operations:
        result.ok()  # raises if the operation's definition is invalid


async def test_the_docs_page_works_offline(api_server: ServedApp) -> None:
    async with httpx.AsyncClient(base_url=api_server.url) as anon:
        page = (await anon.get("/docs")).text
    assert "/v1/runs/{run_id}/wait" in page and "Execution" in page
    assert "<script" not in page and "http://" not in page and "https://" not in page


async def run_schemathesis(api_server: ServedApp, *args: str) -> str:
    """Run the schemathesis CLI against the served API as tenant A; return its output (exit 0 asserted)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "schemathesis.cli",
        "run",
        f"{api_server.url}/openapi.json",
        "--checks",
        "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
        "--header",
        f"Authorization: Bearer {KEY_A}",
        "--no-color",
        "--exclude-path",
        "/v1/runs/{run_id}/wait",
        "--seed",
        "1",
        *args,
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 280)
    text = out.decode()
    assert proc.returncode == 0, text[-4000:]
    return text


@pytest.mark.timeout(300)
async def test_schemathesis_finds_no_server_error(api_server: ServedApp, worker) -> None:
    text = await run_schemathesis(api_server, "--phases", "examples,coverage,fuzzing", "--max-examples", "15")
    assert "Coverage" in text and "Fuzzing" in text


async def test_responses_link_to_the_calls_that_take_their_ids(api_server: ServedApp) -> None:
    spec = await spec_of(api_server)
    created = spec["paths"]["/v1/flows/{flow_id}/runs"]["post"]["responses"]["202"]["links"]
    assert created["GetRun"] == {"operationId": "get_run", "parameters": {"run_id": "$response.body#/id"}}
    operation_ids = {op["operationId"] for methods in spec["paths"].values() for op in methods.values()}
    for methods in spec["paths"].values():
        for op in methods.values():
            for response in op["responses"].values():
                for link in response.get("links", {}).values():
                    assert link["operationId"] in operation_ids
    flow_param = spec["paths"]["/v1/flows/{flow_id}/runs"]["post"]["parameters"][0]
    assert flow_param["name"] == "flow_id" and "echo" in flow_param["schema"]["enum"]


@pytest.mark.timeout(300)
async def test_schemathesis_stateful_sequences_find_no_server_error(api_server: ServedApp, worker) -> None:
    # Chains of calls that follow the declared links (create a run, then get/cancel/events it).
    text = await run_schemathesis(api_server, "--phases", "stateful", "--max-examples", "60")
    covered = re.search(r"API Links:\s+(\d+) covered", text)
    assert covered is not None and int(covered.group(1)) >= 5, text[-2000:]
