"""The event-type catalog, the OpenAPI ``webhooks`` section, typed test messages, and code generation."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import standardwebhooks.webhooks as standard
import svix.webhooks as svix_webhooks
from datamodel_code_generator import DataModelType, Formatter, InputFileType, generate
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate as validate_openapi
from redis.asyncio import Redis

from orchestrator import events
from tests.conftest import ServedApp
from tests.deadlines import wait_for
from tests.receiver import Receiver
from tests.webhooks.helpers import running_dispatcher
from webhooks.alerts import OPERATIONAL_EVENTS

EVERY_TYPE = {*events.ALL_EVENTS, *OPERATIONAL_EVENTS}


async def catalog(client: httpx.AsyncClient, **params: str) -> dict[str, dict[str, Any]]:
    resp = await client.get("/v1/event-types", params=params)
    assert resp.status_code == 200, resp.text
    page = resp.json()
    assert page["nextCursor"] is None
    return {item["type"]: item for item in page["data"]}


def valid(schema: dict[str, Any], document: Any) -> bool:
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema).is_valid(document)


async def test_every_type_has_a_schema_and_an_example_that_fits_it(client: httpx.AsyncClient) -> None:
    types = await catalog(client)
    assert set(types) == EVERY_TYPE
    for name, item in types.items():
        assert item["description"] and item["group"] in {"execution", "webhook", "operational"}
        assert item["example"]["type"] == name and valid(item["schema"], item["example"]), name
        wrong = {**item["example"], "type": "execution.other"}
        assert not valid(item["schema"], wrong)  # the schema says which type it is
    success = types["execution.success"]["schema"]
    data = success["properties"]["data"]
    assert data["title"].startswith("Execution") and "Metrics" in success["$defs"]
    assert "output" in data["properties"] and data["properties"]["status"]["$ref"].endswith("ExecutionStatus")


async def test_flow_ids_narrow_the_execution_schema_to_those_flows(client: httpx.AsyncClient) -> None:
    narrowed = await catalog(client, flowIds="invoice-extraction")
    item = narrowed["execution.success"]
    assert (
        item["flows"] == ["invoice-extraction"] and item["example"]["data"]["flowId"] == "invoice-extraction"
    )
    schema = item["schema"]
    body = {**item["example"], "data": {**item["example"]["data"], "flowId": "echo"}}
    assert not valid(schema, body)  # another flow's execution does not fit
    output = {"vendor": "ACME", "total": 12.5, "currency": "EUR", "lines": []}
    flow = (await client.get("/v1/flows/invoice-extraction")).json()
    typed = {**item["example"], "data": {**item["example"]["data"], "output": output}}
    assert valid(schema, typed) == valid(flow["outputSchema"], output)
    bad_output = {**item["example"], "data": {**item["example"]["data"], "output": {"total": "not a number"}}}
    assert not valid(schema, bad_output)
    both = await catalog(client, flowIds="echo,invoice-extraction")
    assert len(both["execution.queued"]["schema"]["properties"]["data"]["anyOf"]) == 2
    assert both["endpoint.disabled"]["flows"] == []  # only execution types are narrowed
    refused = await client.get("/v1/event-types", params={"flowIds": "echo,nope"})
    assert (
        refused.status_code == 422 and refused.json()["error"]["details"]["fields"][0]["field"] == "flowIds"
    )


async def test_openapi_has_a_valid_webhooks_section_for_every_type(api_server: ServedApp) -> None:
    async with httpx.AsyncClient(base_url=api_server.url) as anon:
        spec = (await anon.get("/openapi.json")).json()
    validate_openapi(spec)  # raises on any error
    assert set(spec["webhooks"]) == EVERY_TYPE
    for name, item in spec["webhooks"].items():
        post = item["post"]
        assert {p["name"] for p in post["parameters"]} == {
            "webhook-id",
            "webhook-timestamp",
            "webhook-signature",
        }
        ref = post["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        assert ref.rsplit("/", 1)[-1] in spec["components"]["schemas"], name
    # Execution events are typed per registered flow.
    success = spec["components"]["schemas"]["ExecutionSuccessEvent"]
    variants = success["properties"]["data"]["anyOf"]
    assert {v["properties"]["flowId"]["const"] for v in variants} >= {"echo", "invoice-extraction"}


def generated_model(schema: dict[str, Any], directory: Path, name: str) -> Any:
    """The pydantic model datamodel-code-generator makes of `schema`, imported."""
    target = directory / f"{name}.py"
    generate(
        json.dumps(schema),
        input_file_type=InputFileType.JsonSchema,
        output=target,
        output_model_type=DataModelType.PydanticV2BaseModel,
        class_name="Body",
        formatters=[Formatter.BUILTIN],
    )
    spec = importlib.util.spec_from_file_location(f"generated_{name}", target)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module.Body


@pytest.mark.timeout(240)
async def test_datamodel_code_generator_makes_a_model_of_every_event_schema(
    client: httpx.AsyncClient, tmp_path: Path
) -> None:
    types = await catalog(client, flowIds="invoice-extraction")
    for name, item in types.items():
        model = generated_model(item["schema"], tmp_path, name.replace(".", "_"))
        parsed = model.model_validate(item["example"])
        assert parsed.model_dump(mode="json", by_alias=True, exclude_unset=True)["type"] == name
        with pytest.raises(ValueError):
            model.model_validate({**item["example"], "data": "not an object"})


async def test_a_test_message_can_carry_any_types_example(
    client: httpx.AsyncClient, redis: Redis, worker: Any
) -> None:
    receiver = await Receiver().start()
    try:
        made = (await client.post("/v1/webhooks", json={"url": receiver.url, "flowIds": ["echo"]})).json()
        types = await catalog(client, flowIds="echo")
        async with running_dispatcher(redis):
            plain = await client.post(f"/v1/webhooks/{made['id']}/test")
            typed = await client.post(
                f"/v1/webhooks/{made['id']}/test", json={"eventType": "execution.failed"}
            )
            alerting = await client.post(
                f"/v1/webhooks/{made['id']}/test", json={"eventType": "endpoint.disabled"}
            )
            empty = await client.post(f"/v1/webhooks/{made['id']}/test", json={})
            assert [r.status_code for r in (plain, typed, alerting, empty)] == [202] * 4
            await wait_for(lambda: len(receiver.requests) == 4)
        by_id = {r.id: r for r in receiver.requests}
        assert by_id[plain.json()["messageId"]].json["type"] == "webhook.test"
        assert by_id[empty.json()["messageId"]].json["type"] == "webhook.test"
        failed = by_id[typed.json()["messageId"]].json
        assert failed["type"] == "execution.failed" and failed["data"]["flowId"] == "echo"
        assert valid(types["execution.failed"]["schema"], failed)
        assert valid(types["endpoint.disabled"]["schema"], by_id[alerting.json()["messageId"]].json)
        for r in receiver.requests:
            standard.Webhook(made["secret"]).verify(r.body, r.headers)
            svix_webhooks.Webhook(made["secret"]).verify(r.body, r.headers)
        for body, field in (
            ({"eventType": "nope"}, "eventType"),
            ({"other": 1}, "other"),
            ({"eventType": 5}, "eventType"),
        ):
            refused = await client.post(f"/v1/webhooks/{made['id']}/test", json=body)
            assert (
                refused.status_code == 422
                and refused.json()["error"]["details"]["fields"][0]["field"] == field
            )
    finally:
        await receiver.stop()


async def test_what_is_really_sent_fits_the_catalog(
    client: httpx.AsyncClient, redis: Redis, worker: Any
) -> None:
    receiver = await Receiver().start()
    try:
        ep = (
            await client.post(
                "/v1/webhooks", json={"url": receiver.url, "events": sorted(EVERY_TYPE - {"webhook.test"})}
            )
        ).json()
        other = (await client.post("/v1/webhooks", json={"url": "https://example.com/x"})).json()
        narrowed = await catalog(client, flowIds="echo")
        async with running_dispatcher(redis):
            run = (await client.post("/v1/flows/echo/runs", json={"input": {"text": "typed"}})).json()
            await client.get(f"/v1/runs/{run['id']}/wait", params={"timeout": 20})
            await client.patch(f"/v1/webhooks/{other['id']}", json={"enabled": False})
            await wait_for(
                lambda: {"execution.success", "endpoint.disabled"} <= set(receiver.types()), timeout=20
            )
        for r in receiver.requests:
            assert valid(narrowed[r.json["type"]]["schema"], r.json), r.json
        log = (await client.get(f"/v1/webhooks/{other['id']}/events")).json()["data"]
        disabled = {k: log[0][k] for k in ("type", "timestamp", "data")}
        assert valid(narrowed["endpoint.disabled"]["schema"], disabled)
        assert ep["id"] != other["id"]
    finally:
        await receiver.stop()
