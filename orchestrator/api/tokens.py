"""Per-run read tokens: ``POST /v1/runs/{id}/tokens``, and the reads that accept one instead of a key.

A token is ``rt_{run id}.{expiry ms}.{signature}``, the signature being HMAC-SHA256 over the tenant,
the run id and the expiry with a server secret kept in Redis (made once, ``SET NX``), so any API
process verifies it and nothing is stored per token. The tenant is bound by the signature but not
written in the token. Expiry is compared with the API's Redis-synced clock (DESIGN.md "One clock").

A token reads one run (``GET /v1/runs/{id}``) and its events (``GET /v1/runs/{id}/events``, JSON
or SSE), sent as ``Authorization: Bearer rt_...`` or, where headers cannot be set (a browser's
EventSource), as ``?access_token=rt_...`` (RFC 6750 section 2.3). Anything else refuses it: to the
key ring it is an unknown key. Answers to a token carry ``Access-Control-Allow-Origin: *``, so a
page on any origin can read them (nothing ambient authenticates such a read: no cookie, no key).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass

from redis.asyncio import Redis
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from orchestrator.api.auth import authenticate
from orchestrator.api.services import services
from orchestrator.errors import RunNotFound, Unauthorized
from orchestrator.models import RunToken, RunTokenCreate
from orchestrator.runs import keys
from webhooks.api.apidoc import operation
from webhooks.api.inputs import model_of, parse_json, read_body, render
from webhooks.ids import is_valid
from webhooks.models import from_ms

PREFIX = "rt_"
QUERY_PARAMETER = "access_token"
_SIGNATURE = re.compile(r"[A-Za-z0-9_-]{43}")  # 32 bytes, base64url without padding


@dataclass(frozen=True)
class ParsedToken:
    """The parts of a token as presented (not yet verified)."""

    run_id: str
    expires_ms: int
    signature: str


def parse(token: str) -> ParsedToken | None:
    """The parts of a well-formed token, or None (then it is not a run token at all)."""
    if not token.startswith(PREFIX) or len(token) > 200:
        return None
    parts = token[len(PREFIX) :].split(".")
    if len(parts) != 3:
        return None
    run_id, expiry, signature = parts
    if not is_valid(run_id, "exec") or not (expiry.isascii() and expiry.isdigit() and len(expiry) <= 15):
        return None
    if not _SIGNATURE.fullmatch(signature):
        return None
    return ParsedToken(run_id, int(expiry), signature)


def _sign(secret: bytes, *, tenant: str, run_id: str, expires_ms: int) -> str:
    message = f"run-read\n{tenant}\n{run_id}\n{expires_ms}".encode()
    digest = hmac.new(secret, message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


class RunTokens:
    """Issues and verifies per-run read tokens with the secret in Redis, against `now_ms` (Redis's time)."""

    def __init__(self, redis: Redis, *, now_ms: Callable[[], int]) -> None:
        self.redis = redis
        self.now_ms = now_ms

    async def _secret(self, *, create: bool) -> bytes | None:
        # Read each time (one GET): every API process, and one started after a restore, agrees.
        raw = await self.redis.get(keys.RUN_TOKEN_SECRET)
        if raw is None and create:
            await self.redis.set(keys.RUN_TOKEN_SECRET, base64.b64encode(secrets.token_bytes(32)), nx=True)
            raw = await self.redis.get(keys.RUN_TOKEN_SECRET)
        return base64.b64decode(raw) if raw is not None else None

    async def issue(self, *, tenant: str, run_id: str, ttl_seconds: int) -> RunToken:
        """A token reading `run_id` (which the caller has checked is the tenant's) for `ttl_seconds`."""
        secret = await self._secret(create=True)
        assert secret is not None  # created just above
        expires_ms = self.now_ms() + ttl_seconds * 1000
        signature = _sign(secret, tenant=tenant, run_id=run_id, expires_ms=expires_ms)
        return RunToken(
            token=f"{PREFIX}{run_id}.{expires_ms}.{signature}", run_id=run_id, expires_at=from_ms(expires_ms)
        )

    async def reader(self, token: ParsedToken, run_id: str) -> str:
        """The tenant whose run `run_id` the token may read; RunNotFound or Unauthorized otherwise."""
        if token.run_id != run_id:
            # A valid token sees one run: any other is "not found", as another tenant's would be.
            raise RunNotFound(f"no execution {run_id}")
        owner = await self.redis.hget(keys.run(run_id), "tenant")
        secret = await self._secret(create=False)
        if owner is None or secret is None:
            raise Unauthorized("invalid run token")
        tenant = str(owner.decode())
        expected = _sign(secret, tenant=tenant, run_id=run_id, expires_ms=token.expires_ms)
        if not hmac.compare_digest(expected.encode(), token.signature.encode()):
            raise Unauthorized("invalid run token")
        if self.now_ms() >= token.expires_ms:
            raise Unauthorized("the run token has expired")
        return tenant


def presented_token(request: Request) -> ParsedToken | None:
    """The run token the request carries (bearer first, then ``?access_token=``), if any."""
    header = request.headers.get("authorization")
    if header is not None:
        scheme, _, value = header.partition(" ")
        return parse(value.strip()) if scheme.lower() == "bearer" else None
    query = request.query_params.get(QUERY_PARAMETER)
    if query is None:
        return None
    parsed = parse(query)
    if parsed is None:
        raise Unauthorized(f"{QUERY_PARAMETER} is not a run token")
    return parsed


def token_cors(request: Request) -> dict[str, str]:
    """CORS for a read made with a run token: any page may read it (no cookie or key is involved)."""
    return {"Access-Control-Allow-Origin": "*"} if presented_token(request) is not None else {}


async def authenticate_reader(request: Request, run_id: str) -> str:
    """The tenant for a read of `run_id`: by API key, or by a run token for that run."""
    token = presented_token(request)
    if token is None:
        return await authenticate(request)
    return await services(request).tokens.reader(token, run_id)


@operation(
    summary="Make a short-lived token that reads this execution, its events and its SSE stream",
    tag="Executions",
    body=RunTokenCreate,
    body_required=False,
    responses={201: RunToken},
    errors=(400, 401, 404, 413, 422, 503),
)
async def create_token(request: Request) -> Response:
    """``POST /v1/runs/{id}/tokens {ttlSeconds?}``: 201 with a token (default 15 minutes, at most 24 h)."""
    tenant = await authenticate(request)
    run_id: str = request.path_params["run_id"]
    state = services(request)
    if not is_valid(run_id, "exec"):
        raise RunNotFound(f"no execution {run_id}")
    await state.store.get_json_status(run_id, tenant=tenant)  # a missing or foreign run: 404
    raw = await read_body(request, max_bytes=state.settings.max_body_bytes)
    body = model_of(parse_json(raw), RunTokenCreate) if raw else RunTokenCreate()
    token = await state.tokens.issue(tenant=tenant, run_id=run_id, ttl_seconds=body.ttl_seconds)
    return render(token, 201)


TOKEN_ROUTES = [Route("/v1/runs/{run_id}/tokens", create_token, methods=["POST"])]
