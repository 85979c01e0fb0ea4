"""EndpointStore: tenant-scoped endpoint CRUD, secret rotation, and the health fields it stores."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from redis.asyncio import Redis

from webhooks import alerts, health_scripts, keys, scripts, secrets
from webhooks.errors import EndpointNotFound
from webhooks.ids import is_valid, new_id
from webhooks.lanes import delete_lanes, dissolve_lanes
from webhooks.models import DeliveryStatus, Endpoint, redis_now, to_ms
from webhooks.outbox import OUTBOX_STREAM
from webhooks.signing import generate_secret


def _to_hash(values: dict[str, Any]) -> dict[str, str]:
    return {k: json.dumps(v) for k, v in values.items() if v is not None}


async def _write(
    redis: Redis, key: str, values: dict[str, Any], *, alert: alerts.Alert | None = None
) -> bool:
    """Set the fields of `values` (None removes a field) if the endpoint still exists; with `alert`,
    append it in the same transaction (``webhooks.alerts``)."""
    pairs = _to_hash(values)
    cleared = [k for k, v in values.items() if v is None]
    args: list[str] = [str(len(pairs))]
    for field, value in pairs.items():
        args += [field, value]
    if alert is None:
        return bool(await redis.eval(health_scripts.ENDPOINT_WRITE, 1, key, *args, *cleared))
    async with redis.pipeline(transaction=True) as tx:
        tx.eval(health_scripts.ENDPOINT_WRITE, 1, key, *args, *cleared)
        tx.eval(
            alerts.EMIT_ONE,
            3,
            key,
            OUTBOX_STREAM,
            keys.endpoint_events(alert.endpoint_id),
            alerts.EVENT_LOG_MAX,
            *alert.args(),
        )
        written, _ = await tx.execute()
    return bool(written)


# Every endpoint of each tenant, oldest first. KEYS: each tenant's endpoint set. ARGV: 1 the
# endpoint key prefix (the hashes' keys are known only from the sets: one Redis or Sentinel group).
# Returns per tenant the list of its endpoints' hashes (flat, as HGETALL; empty for a missing one).
OF_TENANTS = """
local out = {}
for i, set in ipairs(KEYS) do
  local hashes = {}
  for _, id in ipairs(redis.call('ZRANGE', set, 0, -1)) do
    table.insert(hashes, redis.call('HGETALL', ARGV[1] .. id))
  end
  out[i] = hashes
end
return out
"""


# Parsed endpoints by id, with the stored hash they came from: the dispatcher reads an endpoint
# with every claim and fan-out, and validating it anew each time cost more than the read (issue 15).
# An entry is used only for the very same stored bytes; callers never change the objects.
_PARSED: dict[bytes, tuple[dict[bytes, bytes], Endpoint]] = {}
_PARSED_MAX = 10_000


def endpoint_of(raw: dict[bytes, bytes]) -> Endpoint | None:
    """The endpoint stored as `raw` (HGETALL's shape); None if missing or a remnant of a racing write
    (a hash without its id or tenant)."""
    key = raw.get(b"id")
    if key is None or b"tenant" not in raw:
        return None
    cached = _PARSED.get(key)
    if cached is not None and cached[0] == raw:
        return cached[1]
    endpoint = _from_hash(raw)
    if len(_PARSED) >= _PARSED_MAX:
        del _PARSED[next(iter(_PARSED))]
    _PARSED[key] = (raw, endpoint)
    return endpoint


def _from_hash(raw: dict[bytes, bytes]) -> Endpoint:
    return Endpoint.model_validate({k.decode(): json.loads(v) for k, v in raw.items()})


class EndpointStore:
    """Endpoints live in one hash each, every field a JSON value, so single fields change atomically."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._of_tenants = redis.register_script(OF_TENANTS)

    async def create(
        self,
        *,
        tenant: str,
        url: str,
        events: list[str],
        flow_ids: list[str],
        description: str = "",
        secret: str | None = None,
        headers: dict[str, str] | None = None,
        ordering: str = "none",
    ) -> Endpoint:
        """Store a new enabled endpoint with a new (or the given) secret, its custom `headers`
        (checked by the caller: ``webhooks.custom_headers``) and its `ordering` (``none``, ``run``)."""
        # Redis's clock: the fan-out compares it with events' times (outbox ids, also Redis's clock).
        created = await redis_now(self.redis)
        endpoint = Endpoint(
            id=new_id("wh", now_ms=to_ms(created)),
            tenant=tenant,
            url=url,
            events=events,
            flow_ids=flow_ids,
            description=description,
            created_at=created,
            secret=secret or generate_secret(),
            headers=headers or {},
            ordering=ordering,
        )
        async with self.redis.pipeline(transaction=True) as tx:
            tx.hset(keys.endpoint(endpoint.id), mapping=_to_hash(endpoint.model_dump(mode="json")))
            tx.zadd(keys.tenant_endpoints(tenant), {endpoint.id: 0})
            tx.sadd(keys.ENDPOINTS, endpoint.id)
            await tx.execute()
        return endpoint

    async def get(self, endpoint_id: str, *, tenant: str | None = None) -> Endpoint:
        """The endpoint; EndpointNotFound if missing or (with `tenant`) another tenant's."""
        if not is_valid(endpoint_id, "wh"):
            raise EndpointNotFound(f"no endpoint {endpoint_id}")
        endpoint = endpoint_of(await self.redis.hgetall(keys.endpoint(endpoint_id)))
        if endpoint is None or (tenant is not None and endpoint.tenant != tenant):
            raise EndpointNotFound(f"no endpoint {endpoint_id}")
        return endpoint

    async def get_many(self, endpoint_ids: Sequence[str]) -> dict[str, Endpoint]:
        """The endpoints that exist among `endpoint_ids`, in one round trip."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for eid in endpoint_ids:
                pipe.hgetall(keys.endpoint(eid))
            rows = await pipe.execute()
        found = {eid: endpoint_of(raw) for eid, raw in zip(endpoint_ids, rows, strict=True)}
        return {eid: endpoint for eid, endpoint in found.items() if endpoint is not None}

    async def deleted(self, tenant: str, *, since_ms: int = 0) -> list[tuple[str, str, int]]:
        """The tenant's endpoints deleted at or after `since_ms` (Redis's ms), within their rows'
        retention: (id, URL, deleted at ms)."""
        found = await self.redis.zrangebyscore(
            keys.deleted_endpoints(tenant), since_ms, "+inf", withscores=True
        )
        if not found:
            return []
        urls = await self.redis.hmget(keys.deleted_endpoint_urls(tenant), [i for i, _ in found])
        return [(i.decode(), (u or b"").decode(), int(at)) for (i, at), u in zip(found, urls, strict=True)]

    async def for_tenant(self, tenant: str) -> list[Endpoint]:
        """Every endpoint of `tenant`, oldest first."""
        return (await self.for_tenants([tenant]))[tenant]

    async def for_tenants(self, tenants: Iterable[str]) -> dict[str, list[Endpoint]]:
        """Every endpoint of each of `tenants`, oldest first, in one round trip (a fan-out's read)."""
        names = list(tenants)
        if not names:
            return {}
        reply = await self._of_tenants(
            keys=[keys.tenant_endpoints(t) for t in names], args=[keys.endpoint("")]
        )
        out: dict[str, list[Endpoint]] = {}
        for tenant, hashes in zip(names, reply, strict=True):
            found = (endpoint_of(dict(zip(h[::2], h[1::2], strict=True))) for h in hashes)
            out[tenant] = [e for e in found if e is not None]
        return out

    async def page(self, tenant: str, *, limit: int, cursor: str | None) -> tuple[list[Endpoint], str | None]:
        """A newest-first page of the tenant's endpoints."""
        upper = "+" if cursor is None else f"({cursor}"
        ids = [
            i.decode()
            for i in await self.redis.zrevrangebylex(keys.tenant_endpoints(tenant), upper, "-", 0, limit + 1)
        ]
        more = len(ids) > limit
        ids = ids[:limit]
        found = await self.get_many(ids)
        items = [found[i] for i in ids if i in found]
        return items, (ids[-1] if more and ids else None)

    async def update(self, endpoint_id: str, *, tenant: str, changes: dict[str, Any]) -> Endpoint:
        """Change some fields of the tenant's endpoint; enabling or disabling it by hand alerts
        ``endpoint.enabled`` / ``endpoint.disabled`` (reason ``manual``) when `enabled` flips."""
        before = await self.get(endpoint_id, tenant=tenant)
        changes = {**changes, "updated_at": datetime.now(UTC)}
        note = None
        if "enabled" in changes:
            # A decision by hand replaces any automatic one: no more probes, no automatic healing.
            changes.update(disabled_reason=None, disabled_at=None)
            if changes["enabled"]:
                changes["failing_since"] = None
            await self.redis.zrem(keys.PROBES, endpoint_id)
            if changes["enabled"] != before.enabled:
                now = to_ms(await redis_now(self.redis))
                note = alerts.alert(
                    alerts.ENDPOINT_ENABLED if changes["enabled"] else alerts.ENDPOINT_DISABLED,
                    tenant=tenant,
                    endpoint_id=endpoint_id,
                    data=alerts.endpoint_data(endpoint_id, reason="manual", at_ms=now),
                    at_ms=now,
                )
        dumped = Endpoint.model_construct(**changes).model_dump(mode="json", include=set(changes))
        await _write(self.redis, keys.endpoint(endpoint_id), dumped, alert=note)
        if changes.get("ordering", before.ordering) != before.ordering and before.ordering == "run":
            await dissolve_lanes(self.redis, endpoint_id)  # what waited in lanes goes unordered now
        return await self.get(endpoint_id, tenant=tenant)

    async def delete(self, endpoint_id: str, *, tenant: str, keep_ms: int = 14 * 24 * 3600 * 1000) -> None:
        """Remove the endpoint, its queue and its listings. Rows of finished deliveries expire on
        their own; for `keep_ms` (their retention) the endpoint is remembered as deleted, with its
        URL, so a run's delivery report still shows what went to it (issue 18)."""
        endpoint = await self.get(endpoint_id, tenant=tenant)
        await delete_lanes(self.redis, endpoint_id)
        pending = await self.redis.zrange(keys.due(endpoint_id), 0, -1)
        seconds, micros = await self.redis.time()
        now_ms = int(seconds) * 1000 + int(micros) // 1000  # Redis's clock, as every label
        forgotten = await self.redis.zrangebyscore(keys.deleted_endpoints(tenant), "-inf", now_ms - keep_ms)
        async with self.redis.pipeline(transaction=True) as tx:
            tx.zadd(keys.deleted_endpoints(tenant), {endpoint_id: now_ms})
            tx.hset(keys.deleted_endpoint_urls(tenant), endpoint_id, endpoint.url)
            if forgotten:
                tx.zrem(keys.deleted_endpoints(tenant), *forgotten)
                tx.hdel(keys.deleted_endpoint_urls(tenant), *forgotten)
            tx.delete(
                keys.endpoint(endpoint_id),
                keys.due(endpoint_id),
                keys.failed_at(endpoint_id),
                keys.endpoint_events(endpoint_id),
            )
            for dlv in pending:
                tx.delete(keys.delivery(dlv.decode()), keys.delivery_log(dlv.decode()))
            tx.delete(keys.listing(endpoint_id), *(keys.listing(endpoint_id, s) for s in DeliveryStatus))
            tx.zrem(keys.DUE_ENDPOINTS, endpoint_id)
            tx.zrem(keys.PROBES, endpoint_id)
            tx.zrem(keys.REPLAYS, endpoint_id)
            tx.zrem(keys.tenant_endpoints(tenant), endpoint_id)
            tx.srem(keys.ENDPOINTS, endpoint_id)
            await tx.execute()

    async def rotate_secret(self, endpoint_id: str, *, tenant: str) -> str:
        """Give the endpoint a new secret; the current one keeps signing beside it for 24 h.

        Raises EndpointNotFound, or TooManyRotations (409) at ``MAX_PREVIOUS_SECRETS``.
        """
        await self.get(endpoint_id, tenant=tenant)
        return await secrets.rotate_endpoint_secret(self.redis, endpoint_id)

    async def default_secret(self, tenant: str) -> str:
        """The tenant's default secret (made on first use), which signs one-run webhooks."""
        current, _ = await secrets.default_secrets(self.redis, tenant)
        return current

    async def rotate_default_secret(self, tenant: str) -> str:
        """A new default secret for the tenant; the current one keeps signing beside it for 24 h."""
        return await secrets.rotate_default_secret(self.redis, tenant)

    async def disable(self, endpoint: Endpoint, *, reason: str, probe_in_ms: int | None, now_ms: int) -> None:
        """Disable `endpoint` (410 Gone: for good), alerting ``endpoint.disabled``; with `probe_in_ms`
        it is probed from then on and healed. `now_ms` labels the alert (Redis's time)."""
        values = {"enabled": False, "disabled_reason": reason, "disabled_at": now_ms}
        note = alerts.alert(
            alerts.ENDPOINT_DISABLED,
            tenant=endpoint.tenant,
            endpoint_id=endpoint.id,
            data=alerts.endpoint_data(endpoint.id, reason=reason, at_ms=now_ms),
            at_ms=now_ms,
        )
        if (
            await _write(self.redis, keys.endpoint(endpoint.id), values, alert=note)
            and probe_in_ms is not None
        ):
            await self.probe_in(endpoint.id, probe_in_ms)

    async def disable_failing(
        self, endpoint: Endpoint, *, failing_since: int, now_ms: int, after_ms: int, first_probe_ms: int
    ) -> bool:
        """Disable `endpoint` if it has failed without a success for `after_ms` (checked atomically,
        by Redis's clock) and schedule its first probe; True if this call disabled it."""
        note = alerts.alert(
            alerts.ENDPOINT_DISABLED,
            tenant=endpoint.tenant,
            endpoint_id=endpoint.id,
            data=alerts.endpoint_data(
                endpoint.id, reason="failing", at_ms=now_ms, failing_since=failing_since
            ),
            at_ms=now_ms,
        )
        done = await self.redis.eval(
            health_scripts.DISABLE_FAILING,
            4,
            keys.endpoint(endpoint.id),
            keys.PROBES,
            OUTBOX_STREAM,
            keys.endpoint_events(endpoint.id),
            after_ms,
            first_probe_ms,
            endpoint.id,
            alerts.EVENT_LOG_MAX,
            *note.args(),
        )
        return bool(done)

    async def probe_in(self, endpoint_id: str, ms: int) -> None:
        """Probe the (disabled) endpoint `ms` from Redis's now."""
        await self.redis.eval(scripts.AT, 1, keys.PROBES, endpoint_id, ms)

    async def probes_due(self, *, limit: int, claim_ms: int) -> tuple[list[str], int]:
        """Claim (for `claim_ms`) the endpoints whose probe is due by Redis's clock; return them and
        that now (ms). A claimed probe is invisible to other dispatchers until its claim runs out."""
        reply = await self.redis.eval(health_scripts.CLAIM_DUE, 1, keys.PROBES, limit, claim_ms)
        return [i.decode() for i in reply[1:]], int(reply[0])

    async def count_probe(self, endpoint_id: str) -> int:
        """Count one more unanswered probe of a disabled endpoint; return how many so far."""
        raw = await self.redis.hget(keys.endpoint(endpoint_id), "probes")
        tries = int(json.loads(raw)) + 1 if raw else 1
        await _write(self.redis, keys.endpoint(endpoint_id), {"probes": tries})
        return tries

    async def heal(self, endpoint: Endpoint, *, now_ms: int) -> bool:
        """Re-enable `endpoint` if it is disabled for failing (not if a decision by hand came first),
        alerting ``endpoint.enabled`` and booking its replay (:meth:`replays_due`); True if healed."""
        note = alerts.alert(
            alerts.ENDPOINT_ENABLED,
            tenant=endpoint.tenant,
            endpoint_id=endpoint.id,
            data=alerts.endpoint_data(
                endpoint.id, reason="healed", at_ms=now_ms, failing_since=endpoint.failing_since
            ),
            at_ms=now_ms,
        )
        healed = await self.redis.eval(
            health_scripts.HEAL,
            5,
            keys.endpoint(endpoint.id),
            keys.PROBES,
            OUTBOX_STREAM,
            keys.endpoint_events(endpoint.id),
            keys.REPLAYS,
            endpoint.id,
            alerts.EVENT_LOG_MAX,
            *note.args(),
        )
        return bool(healed)

    async def replays_due(self, *, limit: int, claim_ms: int) -> list[tuple[str, int | None]]:
        """Claim (for `claim_ms`) healed endpoints whose replay is owed: (endpoint id, replay from
        ms), None for an endpoint deleted meanwhile (nothing to replay)."""
        reply = await self.redis.eval(health_scripts.CLAIM_DUE, 1, keys.REPLAYS, limit, claim_ms)
        ids = [i.decode() for i in reply[1:]]
        if not ids:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for endpoint_id in ids:
                pipe.hget(keys.endpoint(endpoint_id), "replay_from")
            froms = await pipe.execute()
        return [(i, int(f) if f is not None else None) for i, f in zip(ids, froms, strict=True)]

    async def replay_done(self, endpoint_id: str) -> None:
        """The owed replay of a healed endpoint is done (or the endpoint is gone)."""
        async with self.redis.pipeline(transaction=True) as tx:
            tx.zrem(keys.REPLAYS, endpoint_id)
            tx.eval(health_scripts.ENDPOINT_WRITE, 1, keys.endpoint(endpoint_id), "0", "replay_from")
            await tx.execute()
