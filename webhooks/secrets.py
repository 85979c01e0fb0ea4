"""Signing secrets and their rotation: an endpoint's and a tenant's default secret (one-run webhooks).

A rotation retires the current secret: it keeps signing beside the new one for
``ROTATION_OVERLAP_MS`` (24 h, API.md "Webhooks"), whatever the sequence of rotations, so a receiver
that still holds any secret of the last 24 h verifies every delivery. At most
``MAX_PREVIOUS_SECRETS`` retired secrets may be live at once: a rotation that would retire one more
is refused (:class:`TooManyRotations`, 409) rather than silently dropping the oldest. The times are
Redis's (``TIME`` inside the rotation scripts), compared with Redis's time at the take of a delivery.
"""

from __future__ import annotations

import json

from redis.asyncio import Redis

from webhooks import keys
from webhooks.errors import EndpointNotFound, WebhookError
from webhooks.models import RetiredSecret, format_timestamp, from_ms
from webhooks.signing import generate_secret

ROTATION_OVERLAP_MS = 24 * 3600 * 1000
MAX_PREVIOUS_SECRETS = 10


class TooManyRotations(WebhookError):
    """A rotation would leave more than MAX_PREVIOUS_SECRETS retired secrets signing (409)."""

    status_code = 409
    code = "conflict"


# Shared by both rotations: `retire(current, retired_json, now)` returns the new retired list's JSON,
# or nil and the earliest expiry when the cap is reached. ARGV of the callers: 1 new secret,
# 2 overlap ms, 3 cap. Values in endpoint hashes are JSON; retired lists are [{secret, until}].
_RETIRE = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local function retire(current, retired_json, legacy_secret, legacy_until)
  local kept = {}
  local earliest = nil
  if retired_json then
    for _, r in ipairs(cjson.decode(retired_json)) do
      if tonumber(r['until']) > now then
        table.insert(kept, r)
        if earliest == nil or tonumber(r['until']) < earliest then earliest = tonumber(r['until']) end
      end
    end
  end
  -- the single previous secret of endpoints stored before retired lists existed
  if legacy_secret and legacy_until and tonumber(legacy_until) > now then
    table.insert(kept, {secret = legacy_secret, ['until'] = tonumber(legacy_until)})
    if earliest == nil or tonumber(legacy_until) < earliest then earliest = tonumber(legacy_until) end
  end
  if #kept >= tonumber(ARGV[3]) then return nil, earliest end
  table.insert(kept, 1, {secret = current, ['until'] = now + tonumber(ARGV[2])})
  return cjson.encode(kept), nil
end
"""

# Rotate an endpoint's secret. KEYS: 1 endpoint hash. Returns {1} done, {0} gone, {2, earliest} capped.
ROTATE_ENDPOINT = (
    _RETIRE
    + """
if redis.call('HEXISTS', KEYS[1], 'id') == 0 then return {0} end
local current = cjson.decode(redis.call('HGET', KEYS[1], 'secret'))
local legacy = redis.call('HGET', KEYS[1], 'previous_secret')
local legacy_until = redis.call('HGET', KEYS[1], 'previous_secret_until')
local retired, earliest = retire(current, redis.call('HGET', KEYS[1], 'previous_secrets'),
  legacy and cjson.decode(legacy), legacy_until and cjson.decode(legacy_until))
if retired == nil then return {2, earliest} end
redis.call('HSET', KEYS[1], 'secret', cjson.encode(ARGV[1]), 'previous_secrets', retired)
redis.call('HDEL', KEYS[1], 'previous_secret', 'previous_secret_until')
return {1}
"""
)

# Rotate a tenant's default secret. KEYS: 1 current secret (string), 2 retired list (JSON string).
# Returns {1} done (also when there was none yet), {2, earliest} capped.
ROTATE_DEFAULT = (
    _RETIRE
    + """
local current = redis.call('GET', KEYS[1])
if not current then
  redis.call('SET', KEYS[1], ARGV[1])
  return {1}
end
local retired, earliest = retire(current, redis.call('GET', KEYS[2]), nil, nil)
if retired == nil then return {2, earliest} end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('SET', KEYS[2], retired)
return {1}
"""
)


def _refuse(earliest_ms: int) -> TooManyRotations:
    return TooManyRotations(
        f"{MAX_PREVIOUS_SECRETS} rotated-out secrets still sign; rotate again once the oldest expires",
        details={
            "maxPreviousSecrets": MAX_PREVIOUS_SECRETS,
            "retryAt": format_timestamp(from_ms(earliest_ms)),
        },
    )


async def rotate_endpoint_secret(redis: Redis, endpoint_id: str) -> str:
    """Give the endpoint a new secret and retire the current one for 24 h; return the new secret.

    Raises EndpointNotFound if the endpoint is gone, TooManyRotations at the cap.
    """
    secret = generate_secret()
    reply = await redis.eval(
        ROTATE_ENDPOINT, 1, keys.endpoint(endpoint_id), secret, ROTATION_OVERLAP_MS, MAX_PREVIOUS_SECRETS
    )
    if int(reply[0]) == 0:
        raise EndpointNotFound(f"no endpoint {endpoint_id}")
    if int(reply[0]) == 2:
        raise _refuse(int(reply[1]))
    return secret


async def default_secrets(redis: Redis, tenant: str) -> tuple[str, list[RetiredSecret]]:
    """The tenant's default secret (made on first use) and its retired secrets."""
    key = keys.default_secret(tenant)
    await redis.set(key, generate_secret(), nx=True)
    current, retired = await redis.mget(key, keys.default_secret_retired(tenant))
    previous = [RetiredSecret.model_validate(r) for r in json.loads(retired)] if retired else []
    return str(current.decode()), previous


async def rotate_default_secret(redis: Redis, tenant: str) -> str:
    """Give the tenant a new default secret, the current one retired for 24 h; return the new one.

    Raises TooManyRotations at the cap.
    """
    secret = generate_secret()
    reply = await redis.eval(
        ROTATE_DEFAULT,
        2,
        keys.default_secret(tenant),
        keys.default_secret_retired(tenant),
        secret,
        ROTATION_OVERLAP_MS,
        MAX_PREVIOUS_SECRETS,
    )
    if int(reply[0]) == 2:
        raise _refuse(int(reply[1]))
    return secret
