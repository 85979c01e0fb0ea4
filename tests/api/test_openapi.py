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
    documented = {
        (path, method)
        for path, methods in spec["paths"].items()
        for method, op in methods.items()
        if "x-flow-id" not in op  # a flow's own typed operation (served by the generic route)
    }
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


async def test_the_docs_page_is_an_interactive_reference_that_works_offline(api_server: ServedApp) -> None:
    async with httpx.AsyncClient(base_url=api_server.url) as anon:
        page = (await anon.get("/docs")).text
        # every script and stylesheet it loads is served by the API itself
        assets = re.findall(r'(?:src|href)="([^"]+)"', page)
        assert assets and all(a.startswith("/") for a in assets), assets
        for asset in assets:
            resp = await anon.get(asset)
            assert resp.status_code == 200 and len(resp.content) > 100, asset
    assert "SwaggerUIBundle" in page and 'url: "/openapi.json"' in page
    assert "http://" not in page and "https://" not in page


async def test_each_flow_has_its_own_typed_create_operation(api_server: ServedApp) -> None:
    # issue 18: `input` was untyped in the document; a flow's fields were only in GET /v1/flows/{id}
    spec = await spec_of(api_server)
    registry = api_server.app.state.services.registry
    schemas = spec["components"]["schemas"]
    for flow in registry.all():
        op = spec["paths"][f"/v1/flows/{flow.id}/runs"]["post"]
        assert op["x-flow-id"] == flow.id and op["operationId"].startswith("run_")
        body_ref = op["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
        input_ref = schemas[body_ref]["properties"]["input"]["$ref"].rsplit("/", 1)[1]
        assert schemas[input_ref].get("properties") == flow.input_schema().get("properties") or "$defs" in (
            flow.input_schema()
        )
    invoice = spec["paths"]["/v1/flows/invoice-extraction/runs"]["post"]
    assert invoice["requestBody"]["content"]["application/json"]["example"]["input"]["document"]["base64"]
    assert "document" in schemas["InvoiceExtractionInput"]["properties"]
    assert schemas["InvoiceExtractionInputDocument"]["properties"]["base64"]["type"] == "string"
    # no leaked generated names, the bearer scheme, and success answers that say what they mean
    assert not [name for name in schemas if "_Any_" in name or name.startswith("Page_")]
    assert spec["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert invoice["responses"]["202"]["description"] != "OK"


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
