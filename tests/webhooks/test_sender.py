"""The sender: one signed POST to a real loopback receiver; statuses, redirects, truncation, timeouts."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest
from aiohttp import web

from tests.receiver import RawReceiver, Receiver, hang
from webhooks import generate_secret, verify
from webhooks.sender import Sender
from webhooks.settings import DispatcherSettings

BODY = '{"type": "execution.success", "timestamp": "2026-11-29T00:00:00.000Z", "data": {"id": "exec_1"}}'


@asynccontextmanager
async def sender(**overrides: object) -> AsyncIterator[Sender]:
    values: dict = {"timeout": 5.0, "allow_private": True, **overrides}
    s = Sender(DispatcherSettings(**values))
    try:
        yield s
    finally:
        await s.close()


def answer_with(text: str) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handler(request: web.Request) -> web.StreamResponse:
        return web.Response(status=200, text=text)

    return handler


async def test_a_200_is_a_clean_attempt(receiver: Receiver) -> None:
    async with sender() as s:
        result = await s.send(receiver.url, message_id="msg_1", body=BODY, secrets=[generate_secret()])
    assert result.status == 200 and result.retry_after is None
    assert result.attempt.status_code == 200 and result.attempt.error is None
    assert result.attempt.response_body == "answer 200" and result.attempt.duration_ms >= 0


async def test_a_500_is_an_error_with_its_status(receiver: Receiver) -> None:
    receiver.default = 500
    async with sender() as s:
        result = await s.send(receiver.url, message_id="msg_1", body=BODY, secrets=[generate_secret()])
    assert result.status == 500 and result.attempt.error == "HTTP 500"


async def test_retry_after_is_read_from_the_response(receiver: Receiver) -> None:
    receiver.default = (429, {"Retry-After": "7"})
    async with sender() as s:
        result = await s.send(receiver.url, message_id="msg_1", body=BODY, secrets=[generate_secret()])
    assert result.status == 429 and result.retry_after == 7.0 and result.attempt.error == "HTTP 429"


async def test_a_redirect_is_not_followed(receiver: Receiver) -> None:
    target = await Receiver().start()
    try:
        receiver.default = (302, {"Location": target.url})
        async with sender() as s:
            result = await s.send(receiver.url, message_id="msg_1", body=BODY, secrets=[generate_secret()])
        assert result.status == 302
        assert result.attempt.error == f"redirect to {target.url} not followed"
        assert len(receiver.requests) == 1 and target.requests == []
    finally:
        await target.stop()


async def test_a_long_response_body_is_truncated(receiver: Receiver) -> None:
    receiver.default = answer_with("x" * 5000)
    async with sender(response_body_bytes=16) as s:
        result = await s.send(receiver.url, message_id="msg_1", body=BODY, secrets=[generate_secret()])
    assert result.status == 200 and result.attempt.response_body == "x" * 16


async def test_a_hang_past_the_timeout_is_a_timed_out_attempt(receiver: Receiver) -> None:
    receiver.default = hang
    started = time.monotonic()
    async with sender(timeout=0.3) as s:
        result = await s.send(receiver.url, message_id="msg_1", body=BODY, secrets=[generate_secret()])
    assert result.status is None and result.attempt.status_code is None
    assert result.attempt.error == "timed out after 0.3 s"
    assert time.monotonic() - started < 5  # the timeout, not the receiver, ended it


async def test_the_request_is_signed_json_that_verifies(receiver: Receiver) -> None:
    old, new = generate_secret(), generate_secret()
    async with sender() as s:
        await s.send(receiver.url, message_id="msg_signed", body=BODY, secrets=[old, new])
    [got] = receiver.requests
    assert got.body == BODY.encode()  # the exact bytes that were signed
    assert got.headers["content-type"] == "application/json"
    assert got.headers["webhook-id"] == "msg_signed"
    assert abs(int(got.headers["webhook-timestamp"]) - time.time()) < 60
    assert len(got.headers["webhook-signature"].split(" ")) == 2
    for secret in (old, new):
        event = verify(got.body, got.headers, secret)
        assert event.id == "msg_signed" and event.data == {"id": "exec_1"}


# Every reserved character of RFC 3986 (gen-delims and sub-delims), percent-encoded in both cases,
# and "%" itself: what aiohttp decoded or re-cased on the wire before issue 14.
RESERVED = ":/?#[]@!$&'()*+,;="
ESCAPES = [f"%{ord(c):02X}" for c in RESERVED + "%"] + [f"%{ord(c):02x}" for c in RESERVED + "%"]
# Sub-delims, ":" and "@" may also stand raw in a path or query; they stay raw.
RAW = "!$&'()*+,;=:@"


@pytest.mark.parametrize("escape", ESCAPES)
async def test_the_url_goes_byte_for_byte_as_registered(escape: str) -> None:
    # Regression (issue 14): `?token=abc%2Fdef%28x%29` arrived as `?token=abc/def(x)`.
    raw = await RawReceiver().start()
    try:
        target = f"/hook{escape}x/p{RAW}?token=abc{escape}def&{RAW}=v{escape}"
        async with sender() as s:
            result = await s.send(
                raw.url + target, message_id="msg_1", body=BODY, secrets=[generate_secret()]
            )
        assert result.status == 200, result.attempt.error
        assert [r.target for r in raw.requests] == [target.encode()]
    finally:
        await raw.stop()


@pytest.mark.parametrize(
    ("registered", "sent"),
    [
        ("/caf\u00e9?q=\u00fc", "/caf%C3%A9?q=%C3%BC"),  # not allowed raw: encoded as a browser would
        ("/a b", "/a%20b"),
        ("/a%zz", "/a%25zz"),  # a "%" that starts no escape
        ("/a?b#fragment", "/a?b"),  # the fragment is never sent
        ("?only=query", "/?only=query"),
    ],
)
async def test_what_cannot_stand_in_a_request_target_is_encoded_minimally(registered: str, sent: str) -> None:
    raw = await RawReceiver().start()
    try:
        async with sender() as s:
            await s.send(raw.url + registered, message_id="msg_1", body=BODY, secrets=[generate_secret()])
        assert [r.target for r in raw.requests] == [sent.encode()]
    finally:
        await raw.stop()


async def test_custom_headers_go_along_and_never_stay_in_the_attempt(receiver: Receiver) -> None:
    async def echo(request: web.Request) -> web.StreamResponse:
        return web.Response(status=500, text=f"you sent {request.headers.get('X-Gateway-Token')}")

    receiver.default = echo
    token = "gw-" + "s3cr3t" * 4
    async with sender() as s:
        result = await s.send(
            receiver.url,
            message_id="msg_1",
            body=BODY,
            secrets=[generate_secret()],
            headers={"X-Gateway-Token": token},
        )
    [got] = receiver.requests
    assert got.headers["x-gateway-token"] == token and got.headers["content-type"] == "application/json"
    assert result.attempt.response_body == "you sent ********"
    assert token not in result.attempt.model_dump_json()
