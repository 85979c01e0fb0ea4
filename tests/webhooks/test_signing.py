"""Standard Webhooks v1 signing: the reference vector, each refusal, and the official libraries."""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
import standardwebhooks.webhooks
import svix.webhooks
from multidict import CIMultiDict, CIMultiDictProxy
from starlette.datastructures import Headers

from webhooks.signing import (
    Event,
    WebhookVerificationError,
    generate_secret,
    headers_for,
    parse_secret,
    sign,
    signature_header,
    verify,
)

# The standard-webhooks reference vector.
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
MSG_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
TS = 1614265330
BODY = '{"test": 2432232314}'
EXPECTED = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="

OTHER_SECRET = "whsec_" + base64.b64encode(b"another key, 24 bytes!!!").decode()
EVENT_BODY = json.dumps(
    {"type": "execution.succeeded", "timestamp": "2026-01-02T03:04:05.678Z", "data": {"id": "exec_1"}}
).encode()


def signed(body: bytes | str = EVENT_BODY, secrets: list[str] | None = None) -> dict[str, str]:
    return headers_for(secrets or [SECRET], MSG_ID, TS, body)


def refused(call: Callable[[], Any]) -> WebhookVerificationError:
    """Run `call` and return its error, which must be exactly WebhookVerificationError."""
    with pytest.raises(Exception) as info:
        call()
    assert info.type is WebhookVerificationError, f"{info.type.__name__}: {info.value}"
    assert isinstance(info.value, WebhookVerificationError)
    return info.value


# --- the reference vector -------------------------------------------------------------------


def test_reference_vector() -> None:
    # Recomputed by hand so the vector checks the signing scheme, not just our sign() against itself.
    key = base64.b64decode(SECRET.removeprefix("whsec_"))
    digest = hmac.new(key, f"{MSG_ID}.{TS}.{BODY}".encode(), hashlib.sha256).digest()
    assert "v1," + base64.b64encode(digest).decode() == EXPECTED

    assert sign(SECRET, MSG_ID, TS, BODY) == EXPECTED
    assert sign(SECRET, MSG_ID, TS, BODY.encode()) == EXPECTED
    headers = {"webhook-id": MSG_ID, "webhook-timestamp": str(TS), "webhook-signature": EXPECTED}
    event = verify(BODY, headers, SECRET, now=TS)
    # The vector's body has no type/timestamp/data: those stay empty, the body is in raw.
    assert event == Event(id=MSG_ID, type="", timestamp="", data=None, raw={"test": 2432232314})


# --- secrets --------------------------------------------------------------------------------


def test_generate_secret() -> None:
    first, second = generate_secret(), generate_secret()
    assert first.startswith("whsec_") and first != second
    assert len(base64.b64decode(first.removeprefix("whsec_"), validate=True)) == 24
    assert len(parse_secret(first)) == 24


def test_whsec_prefix_is_optional() -> None:
    bare = SECRET.removeprefix("whsec_")
    assert parse_secret(bare) == parse_secret(SECRET) == base64.b64decode(bare)
    assert sign(bare, MSG_ID, TS, BODY) == EXPECTED
    assert verify(EVENT_BODY, signed(), bare, now=TS).id == MSG_ID
    assert verify(EVENT_BODY, signed(secrets=[bare]), SECRET, now=TS).id == MSG_ID


def test_bytes_secret_is_the_raw_key() -> None:
    key = base64.b64decode(SECRET.removeprefix("whsec_"))
    assert parse_secret(key) == key
    assert sign(key, MSG_ID, TS, BODY) == EXPECTED
    assert verify(EVENT_BODY, signed(), key, now=TS).id == MSG_ID


def test_unpadded_secret_and_surrounding_whitespace_are_accepted() -> None:
    key = b"0123456789abcdefghijklm"  # 23 bytes: base64 ends in "="
    padded = base64.b64encode(key).decode()
    assert padded.endswith("=")
    assert parse_secret("whsec_" + padded.rstrip("=")) == key
    assert parse_secret(f"  whsec_{padded}\n") == key


@pytest.mark.parametrize(
    "secret",
    ["whsec_not base64!", "whsec_abcde", "whsec_", "", "whsec_\u00e9t\u00e9", "whsec_YWJj ZGVm", b""],
)
def test_malformed_secret(secret: str | bytes) -> None:
    refused(lambda: parse_secret(secret))
    refused(lambda: sign(secret, MSG_ID, TS, BODY))
    refused(lambda: verify(EVENT_BODY, signed(), secret, now=TS))
    refused(lambda: verify(EVENT_BODY, signed(), [SECRET, secret], now=TS))


def test_no_secret_at_all() -> None:
    refused(lambda: verify(EVENT_BODY, signed(), [], now=TS))


# --- a good delivery ------------------------------------------------------------------------


def test_verify_returns_the_event() -> None:
    event = verify(EVENT_BODY, signed(), SECRET, now=TS)
    assert event.id == MSG_ID
    assert event.type == "execution.succeeded"
    assert event.timestamp == "2026-01-02T03:04:05.678Z"
    assert event.data == {"id": "exec_1"}
    assert event.raw == json.loads(EVENT_BODY)


def test_str_and_bytes_bodies_sign_alike() -> None:
    text = '{"type": "caf\u00e9"}'
    assert signed(text) == signed(text.encode())
    assert verify(text, signed(text.encode()), SECRET, now=TS).type == "caf\u00e9"
    assert verify(text.encode(), signed(text), SECRET, now=TS).type == "caf\u00e9"


def test_header_names_are_case_insensitive() -> None:
    headers = signed()
    upper = {name.upper(): value for name, value in headers.items()}
    title = {name.title(): value for name, value in headers.items()}
    pairs = [(name.title(), value) for name, value in headers.items()]
    starlette = Headers(raw=[(n.title().encode(), v.encode()) for n, v in headers.items()])
    aiohttp = CIMultiDictProxy(CIMultiDict([(name.upper(), value) for name, value in headers.items()]))
    for variant in (upper, title, pairs, starlette, aiohttp):
        assert verify(EVENT_BODY, variant, SECRET, now=TS).id == MSG_ID


def test_svix_header_names_are_a_fallback() -> None:
    svix_headers = {name.replace("webhook-", "Svix-"): value for name, value in signed().items()}
    assert verify(EVENT_BODY, svix_headers, SECRET, now=TS).id == MSG_ID
    # The standard name wins when both are present.
    both = {**svix_headers, "webhook-signature": "v1,AAAA"}
    refused(lambda: verify(EVENT_BODY, both, SECRET, now=TS))


def test_tolerance_is_inclusive() -> None:
    assert verify(EVENT_BODY, signed(), SECRET, now=TS + 300).id == MSG_ID
    assert verify(EVENT_BODY, signed(), SECRET, now=TS - 300).id == MSG_ID
    assert verify(EVENT_BODY, signed(), SECRET, now=TS + 10, tolerance=10).id == MSG_ID


# --- one test per broken thing --------------------------------------------------------------


@pytest.mark.parametrize("missing", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_missing_header(missing: str) -> None:
    headers = signed()
    del headers[missing]
    assert missing in str(refused(lambda: verify(EVENT_BODY, headers, SECRET, now=TS)))
    headers[missing] = ""  # present but empty is still missing
    refused(lambda: verify(EVENT_BODY, headers, SECRET, now=TS))


@pytest.mark.parametrize(
    "timestamp",
    [
        "soon",
        "1614265330.0",
        "1614265330.5",
        "+1614265330",
        " 1614265330",
        "01614265330",
        "1614265330\n",
        "-1",
        "1_614_265_330",
        "\u0661\u0666\u0661\u0664",
        "9" * 5000,
    ],
)
def test_malformed_timestamp(timestamp: str) -> None:
    headers = {**signed(), "webhook-timestamp": timestamp}
    assert "timestamp" in str(refused(lambda: verify(EVENT_BODY, headers, SECRET, now=TS)))


def test_stale_timestamp() -> None:
    assert "old" in str(refused(lambda: verify(EVENT_BODY, signed(), SECRET, now=TS + 301)))
    refused(lambda: verify(EVENT_BODY, signed(), SECRET, now=TS + 11, tolerance=10))
    refused(lambda: verify(EVENT_BODY, signed(), SECRET))  # 2021 is long past


def test_unusable_clock_or_header_values() -> None:
    refused(lambda: verify(EVENT_BODY, signed(), SECRET, now=float("nan")))
    refused(lambda: verify(EVENT_BODY, {**signed(), "webhook-timestamp": TS}, SECRET, now=TS))  # type: ignore[arg-type]


def test_future_timestamp() -> None:
    assert "future" in str(refused(lambda: verify(EVENT_BODY, signed(), SECRET, now=TS - 301)))
    refused(lambda: verify(EVENT_BODY, signed(), SECRET, now=TS - 11, tolerance=10))


@pytest.mark.parametrize(
    "signature",
    [
        "v1," + base64.b64encode(bytes(32)).decode(),
        EXPECTED,  # right secret, other message
        "v1,not base64!",
        "v1,",
        "v1",
        ",",
        "v1,\u00e9\u00e9\u00e9\u00e9",
        " ",
    ],
)
def test_wrong_signature(signature: str) -> None:
    headers = {**signed(), "webhook-signature": signature}
    refused(lambda: verify(EVENT_BODY, headers, SECRET, now=TS))


def test_signature_for_another_body() -> None:
    headers = signed(b'{"type": "execution.failed"}')
    assert "signature" in str(refused(lambda: verify(EVENT_BODY, headers, SECRET, now=TS)))
    refused(lambda: verify(EVENT_BODY + b" ", signed(), SECRET, now=TS))


def test_signature_binds_id_and_timestamp() -> None:
    headers = signed()
    refused(lambda: verify(EVENT_BODY, {**headers, "webhook-id": "msg_other"}, SECRET, now=TS))
    refused(lambda: verify(EVENT_BODY, {**headers, "webhook-timestamp": str(TS + 1)}, SECRET, now=TS))


def test_wrong_secret() -> None:
    refused(lambda: verify(EVENT_BODY, signed(), OTHER_SECRET, now=TS))
    refused(lambda: verify(EVENT_BODY, signed(secrets=[OTHER_SECRET]), SECRET, now=TS))


def test_rotation() -> None:
    header = signature_header([OTHER_SECRET, SECRET], MSG_ID, TS, EVENT_BODY)
    old, new = header.split(" ")
    assert old == sign(OTHER_SECRET, MSG_ID, TS, EVENT_BODY) and new == sign(SECRET, MSG_ID, TS, EVENT_BODY)
    headers = signed(secrets=[OTHER_SECRET, SECRET])
    assert headers["webhook-signature"] == header
    # Sender rotating: either secret alone verifies the two-signature header.
    assert verify(EVENT_BODY, headers, SECRET, now=TS).id == MSG_ID
    assert verify(EVENT_BODY, headers, OTHER_SECRET, now=TS).id == MSG_ID
    # Receiver rotating: any of its secrets may match the one signature sent.
    third = generate_secret()
    assert verify(EVENT_BODY, signed(), [third, SECRET], now=TS).id == MSG_ID
    assert verify(EVENT_BODY, signed(), (SECRET, third), now=TS).id == MSG_ID
    refused(lambda: verify(EVENT_BODY, signed(), [third, OTHER_SECRET], now=TS))


def test_unknown_versions_are_ignored() -> None:
    good = sign(SECRET, MSG_ID, TS, EVENT_BODY)
    raw = good.removeprefix("v1,")
    for header in (f"v2,xxx {good}", f"v1a,{raw} {good}", f"{good} v2,{raw}", f"v1,garbage!! {good}"):
        assert verify(EVENT_BODY, {**signed(), "webhook-signature": header}, SECRET, now=TS).id == MSG_ID
    # The right bytes under another version are not a v1 signature.
    for header in (f"v2,{raw}", f"v1a,{raw}", f"V1,{raw}", "v2,xxx"):
        headers = {**signed(), "webhook-signature": header}
        refused(functools.partial(verify, EVENT_BODY, headers, SECRET, now=TS))


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"",
        b'{"type": "a"',
        b"\xff\xfe{}",
        b'["type"]',
        b'"type"',
        b"null",
        b'{"type": 1}',
        b'{"type": "a", "timestamp": 1614265330}',
        b"[" * 100_000 + b"]" * 100_000,
    ],
)
def test_bad_body(body: bytes) -> None:
    # Correctly signed, so only the body check can refuse it.
    refused(lambda: verify(body, signed(body), SECRET, now=TS))


# --- the official libraries -----------------------------------------------------------------


LIBRARIES = [standardwebhooks.webhooks.Webhook, svix.webhooks.Webhook]


@pytest.mark.parametrize("library", LIBRARIES)
def test_official_libraries_accept_our_signature(library: Any) -> None:
    now = int(time.time())
    for secrets in ([SECRET], [OTHER_SECRET, SECRET]):
        headers = headers_for(secrets, MSG_ID, now, EVENT_BODY)
        library(SECRET).verify(EVENT_BODY, headers)
        library(SECRET).verify(EVENT_BODY.decode(), {n.title(): v for n, v in headers.items()})
    with pytest.raises(standardwebhooks.webhooks.WebhookVerificationError):
        library(SECRET).verify(EVENT_BODY, headers_for([OTHER_SECRET], MSG_ID, now, EVENT_BODY))


@pytest.mark.parametrize("library", LIBRARIES)
def test_we_accept_official_libraries_signature(library: Any) -> None:
    when = datetime.now(UTC).replace(microsecond=0)
    signature = library(SECRET).sign(MSG_ID, when, EVENT_BODY.decode())
    headers = {
        "webhook-id": MSG_ID,
        "webhook-timestamp": str(int(when.timestamp())),
        "webhook-signature": signature,
    }
    event = verify(EVENT_BODY, headers, SECRET)
    assert event.id == MSG_ID and event.type == "execution.succeeded"
    # Same inputs, same bytes: a fixed time gives the reference vector from either side.
    assert library(SECRET).sign(MSG_ID, datetime.fromtimestamp(TS, UTC), BODY) == EXPECTED
    assert library(SECRET).sign(MSG_ID, datetime.fromtimestamp(TS, UTC), EVENT_BODY.decode()) == sign(
        SECRET, MSG_ID, TS, EVENT_BODY
    )
