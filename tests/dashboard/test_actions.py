"""Actions and their guards in a real browser: an endpoint made on the page, a failed delivery retried
from the page and verified with the secret the page showed once; another tenant's ids are "not
found"; a POST without the CSRF token is refused; the API key never shows in a URL or a log.
"""

from __future__ import annotations

import logging

import httpx
import pytest
from aiohttp import web
from playwright.async_api import Browser, BrowserContext, expect
from redis.asyncio import Redis

from orchestrator.flows import Registry
from orchestrator.settings import Settings
from tests.conftest import KEY_A, ServedApp, running_worker, tenant_client, wait_for
from tests.dashboard.conftest import open_page, screenshot, watch
from tests.receiver import Receiver
from tests.webhooks.helpers import running_dispatcher
from webhooks import verify


async def test_a_failed_delivery_is_retried_from_the_page_and_arrives_signed(
    context: BrowserContext, api_server: ServedApp, redis: Redis, settings: Settings, registry: Registry
) -> None:
    receiver = await Receiver(default=500).start()
    try:
        # Add the endpoint on the Endpoints page; the secret is shown once, there.
        endpoints = await open_page(context, f"{api_server.url}/dashboard/endpoints")
        page = endpoints.page
        await page.get_by_label("URL").fill(receiver.url)
        await page.get_by_label("Description").fill("made in the browser")
        await page.get_by_label("execution.success").check()
        await page.get_by_role("button", name="Add endpoint").click()
        await expect(page.get_by_role("heading", level=1)).to_have_text("Endpoint created")
        secret = await page.get_by_label("Signing secret", exact=False).input_value()
        assert secret.startswith("whsec_")
        await page.get_by_role("link", name="Go to the endpoint").click()
        endpoint_id = page.url.rsplit("/", 1)[-1]

        # A run started from the Flows page's generated form; its success delivery fails for good.
        await page.goto(f"{api_server.url}/dashboard/flows/echo")
        await page.get_by_label("text").fill("retry me")
        await page.get_by_role("button", name="Start a run").click()
        await page.wait_for_url("**/dashboard/runs/exec_*")
        run_id = page.url.rsplit("/", 1)[-1]
        async with tenant_client(api_server.url) as api:

            async def failed() -> list[dict[str, object]]:
                found = await api.get(f"/v1/webhooks/{endpoint_id}/deliveries", params={"status": "failed"})
                return list(found.json()["data"])

            async with running_dispatcher(redis), running_worker(settings, registry):
                await wait_for(failed, timeout=20)
                assert len(receiver.requests) == 5  # every attempt failed
                message_id = str((await failed())[0]["id"])
                receiver.default = 200
                await page.goto(f"{api_server.url}/dashboard/endpoints/{endpoint_id}/deliveries")
                row = page.locator(f"#dlv-{message_id}")
                await expect(row).to_have_attribute("data-delivery", "failed")
                await screenshot(page, "deliveries-failed")
                await row.get_by_role("button", name=f"Retry {message_id}").click()
                await expect(row).to_have_attribute("data-delivery", "pending")  # swapped in place by htmx
                await wait_for(lambda: len(receiver.requests) == 6, timeout=20)
        delivered = receiver.requests[-1]
        assert delivered.id == message_id
        event = verify(delivered.body, delivered.headers, secret)
        assert event.type == "execution.success" and event.data["id"] == run_id
        endpoints.check()
    finally:
        await receiver.stop()


async def test_another_tenants_ids_are_not_found(
    context: BrowserContext, api_server: ServedApp, client_b: httpx.AsyncClient
) -> None:
    b_run = (await client_b.post("/v1/flows/echo/runs", json={"input": {"text": "b"}})).json()["id"]
    b_endpoint = (await client_b.post("/v1/webhooks", json={"url": "http://127.0.0.1:9/b"})).json()["id"]
    page = await context.new_page()
    for path in (
        f"/dashboard/runs/{b_run}",
        f"/dashboard/endpoints/{b_endpoint}",
        f"/dashboard/endpoints/{b_endpoint}/deliveries",
        "/dashboard/runs/exec_01M8JFKRM31KNKQKXWXQWENK52",
        "/dashboard/runs/nope",
    ):
        response = await page.goto(api_server.url + path)
        assert response is not None and response.status == 404, path
        await expect(page.get_by_role("heading", level=1)).to_have_text("Not found")
        assert b_run not in await page.locator("main").inner_text() or path.endswith(b_run)
    await screenshot(page, "not-found")
    # Searching for B's run by id finds nothing either.
    await page.goto(f"{api_server.url}/dashboard/runs?id={b_run}")
    await expect(page.locator("#no-runs")).to_be_visible()
    # And a cancel of B's run from A's session is "not found", and changes nothing.
    token = await page.locator("input[name=csrf_token]").first.input_value()
    refused = await page.request.post(
        f"{api_server.url}/dashboard/runs/{b_run}/cancel", form={"csrf_token": token}
    )
    assert refused.status == 404
    assert (await client_b.get(f"/v1/runs/{b_run}")).json()["status"] == "queued"


async def test_a_post_without_the_csrf_token_is_refused(
    context: BrowserContext, api_server: ServedApp, client: httpx.AsyncClient
) -> None:
    run_id = (await client.post("/v1/flows/echo/runs", json={"input": {"text": "x"}})).json()["id"]
    watched = await open_page(context, f"{api_server.url}/dashboard/runs/{run_id}")
    page = watched.page
    token = await page.locator("input[name=csrf_token]").first.input_value()
    cancel = f"{api_server.url}/dashboard/runs/{run_id}/cancel"
    origin = {"Origin": api_server.url}
    # The session cookie alone is not enough: no token, a wrong token, or the right one from another site.
    for form, headers in (
        ({}, origin),
        ({"csrf_token": "not-the-token"}, origin),
        ({"csrf_token": token}, {"Origin": "https://evil.example"}),
        ({"csrf_token": token}, {"Sec-Fetch-Site": "cross-site"}),
    ):
        refused = await page.request.post(cancel, form=form, headers=headers, max_redirects=0)
        assert refused.status == 403, (form, headers)
        assert (await refused.json())["error"]["code"] == "csrf_failed"
    assert (await client.get(f"/v1/runs/{run_id}")).json()["status"] == "queued"
    # A form on another origin (same host, another port: the session cookie still goes along), even
    # one that somehow knows the token, submitted by the browser itself, is refused the same way.
    attack = f'<form method="post" action="{cancel}"><input name="csrf_token" value="{token}"></form>'

    async def attacker(request: web.Request) -> web.StreamResponse:
        return web.Response(text=attack, content_type="text/html")

    other = await Receiver(default=attacker).start()
    try:
        await page.goto(other.url)
        async with page.expect_navigation():
            await page.evaluate("document.forms[0].submit()")
        await expect(page.get_by_role("heading", level=1)).to_have_text("Refused")
    finally:
        await other.stop()
    assert (await client.get(f"/v1/runs/{run_id}")).json()["status"] == "queued"
    # The page's own button carries the token and works.
    await page.goto(f"{api_server.url}/dashboard/runs/{run_id}")
    await page.get_by_role("button", name="Cancel run").click()
    await expect(page.locator("#run-live .status").first).to_have_text("cancelled")
    assert (await client.get(f"/v1/runs/{run_id}")).json()["status"] == "cancelled"


async def test_the_key_never_shows_in_a_url_a_log_or_redis(
    browser: Browser, api_server: ServedApp, redis: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    ctx = await browser.new_context()
    urls: list[str] = []
    ctx.on("request", lambda request: urls.append(request.url))
    try:
        page = await ctx.new_page()
        watched = watch(page)
        with caplog.at_level(logging.DEBUG):
            await page.goto(f"{api_server.url}/dashboard/login")
            await page.get_by_label("API key").fill("wrong-key-that-is-long-enough")
            await page.get_by_role("button", name="Sign in").click()
            await expect(page.get_by_role("alert")).to_have_text("That API key is not known.")
            assert await page.get_by_label("API key").input_value() == ""  # not echoed back
            await page.get_by_label("API key").fill(KEY_A)
            await page.get_by_role("button", name="Sign in").click()
            await page.wait_for_url("**/dashboard")
            await page.goto(f"{api_server.url}/dashboard/runs")
        assert urls and not [u for u in urls if KEY_A in u or "wrong-key" in u]
        assert KEY_A not in caplog.text and "wrong-key" not in caplog.text
        cookies = {c["name"]: c for c in await ctx.cookies()}
        session = cookies["orch_session"]
        assert session["httpOnly"] and session["sameSite"] == "Lax" and KEY_A not in session["value"]
        everything = b"".join([k + (await redis.dump(k) or b"") for k in await redis.keys("*")])
        assert KEY_A.encode() not in everything and session["value"].encode() not in everything
        # Signing out ends the session: the old cookie opens nothing.
        await page.get_by_role("button", name="Sign out").click()
        await page.wait_for_url("**/dashboard/login")
        async with httpx.AsyncClient(
            base_url=api_server.url, cookies={"orch_session": session["value"]}
        ) as old:
            assert (await old.get("/dashboard/runs")).status_code == 401
        # Only the login form's first, wrong key answered 401: nothing else failed.
        assert [p for p in watched.problems if "401" not in p] == []
    finally:
        await ctx.close()
