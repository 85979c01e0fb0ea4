"""Sender: one signed POST over a shared aiohttp session; never retries, never follows redirects."""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

import aiohttp
from yarl import URL

from webhooks.models import Attempt
from webhooks.retry import parse_retry_after
from webhooks.settings import DispatcherSettings
from webhooks.signing import headers_for
from webhooks.ssrf import guarded_connector

logger = logging.getLogger(__name__)


# What may stand unescaped in a request target (RFC 3986 pchar, "/" and "?"): unreserved characters,
# sub-delims, ":" and "@". "%" is kept when it starts an escape (two hex digits follow).
_TARGET_SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~!$&'()*+,;=:@/?")
_HEX = frozenset("0123456789abcdefABCDEF")


def _minimal_quote(target: str) -> str:
    """Percent-encode only what cannot appear in a request target; every other byte stays as written."""
    out: list[str] = []
    for i, ch in enumerate(target):
        if ch in _TARGET_SAFE:
            out.append(ch)
        elif ch == "%" and len(target) > i + 2 and target[i + 1] in _HEX and target[i + 2] in _HEX:
            out.append(ch)  # an escape, in the case it was written (%2f stays %2f)
        else:
            out.extend(f"%{b:02X}" for b in ch.encode("utf-8"))
    return "".join(out)


def wire_url(url: str) -> URL:
    """The URL to send to: path and query byte for byte as registered (issue 14).

    aiohttp re-quotes a URL by default (``%2F`` becomes ``/``, ``%28`` becomes ``(``), but receivers
    sign and compare the URL they registered. Only what cannot stand in a request target at all
    (non-ASCII, spaces, ``"<>\\^`{|}``, a ``%`` that starts no escape) is percent-encoded, as a
    browser would; the fragment is never sent. A non-ASCII host goes as its IDNA (punycode) form.
    Raises ValueError for a URL yarl cannot parse (refused at registration anyway).
    """
    parsed = URL(url)
    scheme, sep, rest = url.partition("://")
    if not sep:
        return parsed
    cut = min((i for i in (rest.find("/"), rest.find("?"), rest.find("#")) if i >= 0), default=len(rest))
    authority, target = rest[:cut], rest[cut:].partition("#")[0]
    if not authority.isascii():
        authority = parsed.raw_authority
    if not target.startswith("/"):
        target = "/" + target  # origin-form always starts with "/" ("http://h?x" asks for "/?x")
    return URL(f"{scheme}://{authority}{_minimal_quote(target)}", encoded=True)


@dataclass
class SendResult:
    """One attempt, plus what the retry decision needs from the response."""

    attempt: Attempt
    status: int | None
    retry_after: float | None


def tls_context(ca_bundle: str | None) -> ssl.SSLContext | bool:
    """How deliveries verify TLS: the system's CAs, plus those of `ca_bundle` (a PEM file) if given.

    A private CA is added to the system's trust, never put in its place, so public receivers keep
    working. Raises ValueError naming the file when it cannot be read as PEM certificates.
    """
    if not ca_bundle:
        return True  # aiohttp's default: the system's CAs, full verification
    ctx = ssl.create_default_context()
    try:
        ctx.load_verify_locations(cafile=ca_bundle)
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"CA bundle {ca_bundle!r} cannot be read as PEM certificates: {exc}") from None
    return ctx


MASK = "********"


def _scrub(text: str | None, headers: Mapping[str, str]) -> str | None:
    """`text` with every custom header value replaced by the mask."""
    if text is None:
        return None
    for value in headers.values():
        if value:
            text = text.replace(value, MASK)
    return text


class Sender:
    """Owns the one ClientSession of a dispatcher process (call ``close()`` when done)."""

    def __init__(self, settings: DispatcherSettings) -> None:
        self.settings = settings
        self._session: aiohttp.ClientSession | None = None
        self._tls = tls_context(settings.ca_bundle)  # read once, at start: a bad file fails early

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=guarded_connector(
                    allow_private=self.settings.allow_private,
                    limit=self.settings.max_in_flight,
                    ssl=self._tls,
                ),
                timeout=aiohttp.ClientTimeout(total=self.settings.timeout),
                headers={"user-agent": self.settings.user_agent},
                # Receivers must see our exact bytes: no cookies, no automatic decompression games.
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        return self._session

    async def close(self) -> None:
        """Close the session and its connections."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def send(
        self,
        url: str,
        *,
        message_id: str,
        body: str,
        secrets: list[str],
        headers: Mapping[str, str] | None = None,
    ) -> SendResult:
        """POST `body` to `url`, signed with every one of `secrets`, with the endpoint's custom
        `headers` (validated at registration: they never replace ours); return what happened.

        The custom values are scrubbed from what the attempt keeps (a receiver that echoes its
        request headers must not put a gateway token into the delivery log).
        """
        started = time.monotonic()
        at = datetime.now(UTC)
        timestamp = int(time.time())
        custom = dict(headers or {})
        headers = {**custom, **headers_for(secrets, message_id, timestamp, body)}
        headers["content-type"] = "application/json"
        status: int | None = None
        retry_after: float | None = None
        error: str | None = None
        response_body: str | None = None
        try:
            async with self._get_session().post(
                wire_url(url), data=body.encode(), headers=headers, allow_redirects=False
            ) as resp:
                status = resp.status
                retry_after = parse_retry_after(resp.headers.get("retry-after"))
                chunk = await resp.content.read(self.settings.response_body_bytes)
                response_body = chunk.decode("utf-8", errors="replace")
                if 300 <= status < 400:
                    error = f"redirect to {resp.headers.get('location', '?')} not followed"
                elif not 200 <= status < 300:
                    error = f"HTTP {status}"
        except TimeoutError:
            error = f"timed out after {self.settings.timeout:g} s"
        except aiohttp.ClientError as exc:
            error = f"{type(exc).__name__}: {exc}"
        except (OSError, ValueError) as exc:
            error = f"{type(exc).__name__}: {exc}"
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a boundary: turn anything into a failed attempt
            logger.exception("delivery %s to %s failed unexpectedly", message_id, url)
            error = f"{type(exc).__name__}: {exc}"
        duration = round((time.monotonic() - started) * 1000)
        if custom:
            response_body, error = _scrub(response_body, custom), _scrub(error, custom)
        attempt = Attempt(
            at=at, status_code=status, duration_ms=duration, error=error, response_body=response_body or None
        )
        return SendResult(attempt=attempt, status=status, retry_after=retry_after)
