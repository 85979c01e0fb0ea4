"""Standard Webhooks v1 signatures: sign outgoing deliveries and verify incoming ones.

Pure functions only, no I/O; the wire format is the one at https://www.standardwebhooks.com.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets as _secrets
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

SECRET_PREFIX = "whsec_"
DEFAULT_TOLERANCE = 300

# Svix sends the same values under older names; each is read only when the standard name is absent.
_HEADERS = (
    ("webhook-id", "svix-id"),
    ("webhook-timestamp", "svix-timestamp"),
    ("webhook-signature", "svix-signature"),
)
# Canonical decimals only: the signed content holds the header text, so "+12", "012" or " 12" would
# not survive a round trip through int; 16 digits bound the work and reach far past any real clock.
_TIMESTAMP_RE = re.compile(r"0|[1-9][0-9]{0,15}")


class WebhookVerificationError(Exception):
    """A delivery, or the secret meant to check it, failed verification."""


@dataclass(frozen=True)
class Event:
    """A verified delivery: ``id`` from the webhook-id header, the rest from the JSON body ("" if absent)."""

    id: str
    type: str
    timestamp: str
    data: Any
    raw: dict[str, Any]


def generate_secret() -> str:
    """Return a new random signing secret: ``whsec_`` + base64 of 24 random bytes."""
    return SECRET_PREFIX + base64.b64encode(_secrets.token_bytes(24)).decode("ascii")


def parse_secret(secret: str | bytes) -> bytes:
    """Return the HMAC key of a ``whsec_<base64>`` or bare base64 secret; bytes are the key itself."""
    if isinstance(secret, bytes):
        key = secret
    else:
        text = secret.strip().removeprefix(SECRET_PREFIX)  # env files often keep a trailing newline
        # Some issuers drop the padding; restoring it keeps `validate` strict about everything else.
        text += "=" * (-len(text) % 4)
        try:
            key = base64.b64decode(text, validate=True)
        except ValueError as exc:  # binascii.Error, or a non-ASCII string
            raise WebhookVerificationError("malformed webhook secret: not base64") from exc
    if not key:
        raise WebhookVerificationError("malformed webhook secret: empty")
    return key


def sign(secret: str | bytes, msg_id: str, timestamp: int, body: bytes | str) -> str:
    """Return the ``v1,<base64>`` signature of one delivery under one secret."""
    digest = _digest(parse_secret(secret), msg_id, str(timestamp), _as_bytes(body))
    return "v1," + base64.b64encode(digest).decode("ascii")


def signature_header(secrets: Sequence[str | bytes], msg_id: str, timestamp: int, body: bytes | str) -> str:
    """Return the ``webhook-signature`` value: one space-separated signature per secret."""
    body_bytes = _as_bytes(body)
    return " ".join(
        "v1," + base64.b64encode(_digest(key, msg_id, str(timestamp), body_bytes)).decode("ascii")
        for key in _keys(secrets)
    )


def headers_for(
    secrets: Sequence[str | bytes], msg_id: str, timestamp: int, body: bytes | str
) -> dict[str, str]:
    """Return the three Standard Webhooks headers for one delivery."""
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature_header(secrets, msg_id, timestamp, body),
    }


def verify(
    body: bytes | str,
    headers: Mapping[str, str] | Iterable[tuple[str, str]],
    secret: str | bytes | Sequence[str | bytes],
    *,
    tolerance: int = DEFAULT_TOLERANCE,
    now: float | None = None,
) -> Event:
    """Check a delivery's headers and signature against one or more secrets; return its event."""
    keys = _keys(secret)
    msg_id, timestamp, signatures = _read_headers(headers)

    if not _TIMESTAMP_RE.fullmatch(timestamp):
        raise WebhookVerificationError("webhook-timestamp is not an integer of unix seconds")
    age = (time.time() if now is None else now) - int(timestamp)
    if not -tolerance <= age <= tolerance:  # written so that a NaN `now` refuses instead of passing
        raise WebhookVerificationError(f"webhook-timestamp is {'in the future' if age < 0 else 'too old'}")

    body_bytes = _as_bytes(body)
    expected = [_digest(key, msg_id, timestamp, body_bytes) for key in keys]
    if not any(hmac.compare_digest(sig, want) for sig in _v1_signatures(signatures) for want in expected):
        raise WebhookVerificationError("no matching signature")

    try:
        payload = json.loads(body_bytes)
    except (ValueError, RecursionError) as exc:  # ValueError covers bad JSON and bad UTF-8
        raise WebhookVerificationError("body is not JSON") from exc
    if not isinstance(payload, dict):
        raise WebhookVerificationError("body is not a JSON object")
    # The spec only recommends {type, timestamp, data} (its own reference vector has neither), so
    # absent fields are empty; present ones of the wrong kind would break Event's str contract.
    event_type, event_time = payload.get("type", ""), payload.get("timestamp", "")
    if not isinstance(event_type, str) or not isinstance(event_time, str):
        raise WebhookVerificationError("body 'type' or 'timestamp' is not a string")
    return Event(id=msg_id, type=event_type, timestamp=event_time, data=payload.get("data"), raw=payload)


def _as_bytes(body: bytes | str) -> bytes:
    return body.encode("utf-8") if isinstance(body, str) else body


def _digest(key: bytes, msg_id: str, timestamp: str, body: bytes) -> bytes:
    return hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()


def _keys(secrets: str | bytes | Sequence[str | bytes]) -> list[bytes]:
    # A lone str is itself a Sequence[str]; unwrapped it would be read as one secret per character.
    items: Sequence[str | bytes] = [secrets] if isinstance(secrets, str | bytes) else secrets
    if not items:
        raise WebhookVerificationError("no webhook secret given")
    return [parse_secret(item) for item in items]


def _read_headers(headers: Mapping[str, str] | Iterable[tuple[str, str]]) -> tuple[str, str, str]:
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    lowered: dict[str, str] = {}
    for name, value in pairs:
        # First value wins, as with starlette's and multidict's get() on a repeated header.
        lowered.setdefault(name.lower(), value)
    found: list[str] = []
    for name, fallback in _HEADERS:
        value = lowered.get(name) or lowered.get(fallback)
        if not value or not isinstance(value, str):
            raise WebhookVerificationError(f"missing {name} header")
        found.append(value)
    return found[0], found[1], found[2]


def _v1_signatures(header: str) -> Iterable[bytes]:
    for entry in header.split():
        version, _, encoded = entry.partition(",")
        if version != "v1":
            continue  # e.g. v1a (asymmetric): not ours to check, and must not count as a match
        try:
            yield base64.b64decode(encoded, validate=True)
        except ValueError:
            continue  # one garbled entry must not hide a valid one beside it
