"""RunStore: executions in Redis; every status change goes through one atomic transition script."""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from redis.asyncio import Redis

from orchestrator import events
from orchestrator.errors import RunNotFound, StaleAttempt, Unavailable
from orchestrator.models import Execution, ExecutionError, ExecutionStatus, Metrics
from orchestrator.runs import keys, scripts
from orchestrator.runs.jobs import JOB_EXPIRY_MS, job_key, job_payload, result_key
from orchestrator.runs.states import advance
from webhooks.ids import new_id
from webhooks.outbox import OUTBOX_STREAM

logger = logging.getLogger(__name__)

S = ExecutionStatus
_FIELDS = ("json", "tenant", "input", "partial", "webhook")
_CHUNK = 200  # creates per pipelined round trip


def utcnow() -> datetime:
    """The store's default clock."""
    return datetime.now(UTC)


def _to_ms_precision(at: datetime) -> datetime:
    # The wire carries milliseconds; keeping more in memory would make a re-read differ.
    return at.replace(microsecond=at.microsecond - at.microsecond % 1000)


def _ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


@dataclass
class Stored:
    """An execution as read from Redis, with the fields the API does not show."""

    run: Execution[Any]
    tenant: str
    input_json: str | None = None
    partial_json: str | None = None
    webhook_json: str | None = None

    @property
    def partial(self) -> Any:
        """The flow's last saved partial output (reported by a cancel or a lost worker), or None."""
        return json.loads(self.partial_json) if self.partial_json else None


@dataclass
class NewRun:
    """One execution to create."""

    input_json: str
    metadata: dict[str, Any] = field(default_factory=dict)
    webhook_json: str | None = None
    run_id: str | None = None


@dataclass
class _Plan:
    """What one transition commits besides the new execution."""

    run: Execution[Any]
    event_type: str
    lease: str = ""
    pending: str = ""
    job_attempt: int | None = None
    retention: bool = False
    lease_expired_before: int | None = None
    extra: dict[str, str] = field(default_factory=dict)


class RunStore:
    """Reads and writes executions; nothing else writes a run's status."""

    def __init__(
        self,
        redis: Redis,
        *,
        queue_name: str,
        retention_seconds: int,
        lease_seconds: float,
        requeue_after_seconds: float,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.redis = redis
        self.queue_name = queue_name
        self.retention_ms = retention_seconds * 1000
        self.lease_ms = int(lease_seconds * 1000)
        self.requeue_ms = int(requeue_after_seconds * 1000)
        self._clock = clock
        self._transition = redis.register_script(scripts.TRANSITION)
        self._acquire = redis.register_script(scripts.ACQUIRE)
        self._heartbeat = redis.register_script(scripts.HEARTBEAT)
        self._save_partial = redis.register_script(scripts.SAVE_PARTIAL)

    def clock(self) -> datetime:
        """Now, at millisecond precision."""
        return _to_ms_precision(self._clock())

    # ----- reads -------------------------------------------------------------------------------

    async def load(self, run_id: str) -> Stored | None:
        """Read one execution with its hidden fields, or None."""
        raw = await self.redis.hmget(keys.run(run_id), _FIELDS)
        return self._parse(raw)

    @staticmethod
    def _parse(raw: Sequence[bytes | None]) -> Stored | None:
        if raw[0] is None or raw[1] is None:
            return None
        text = [v.decode() if v is not None else None for v in raw]
        return Stored(
            run=Execution[Any].model_validate_json(raw[0]),
            tenant=text[1] or "",
            input_json=text[2],
            partial_json=text[3],
            webhook_json=text[4],
        )

    async def get(self, run_id: str, *, tenant: str) -> Execution[Any]:
        """Return the tenant's execution; a missing or foreign id raises RunNotFound."""
        stored = await self.load(run_id)
        if stored is None or stored.tenant != tenant:
            raise RunNotFound(f"no execution {run_id}")
        return stored.run

    async def get_json(self, run_id: str, *, tenant: str) -> bytes:
        """Return the execution's stored JSON without parsing it (the hot GET path)."""
        body, _ = await self.get_json_status(run_id, tenant=tenant)
        return body

    async def get_json_status(self, run_id: str, *, tenant: str) -> tuple[bytes, ExecutionStatus]:
        """Return the execution's stored JSON and its status."""
        body, owner, status = await self.redis.hmget(keys.run(run_id), ("json", "tenant", "status"))
        if body is None or owner is None or owner.decode() != tenant:
            raise RunNotFound(f"no execution {run_id}")
        return bytes(body), ExecutionStatus(status.decode())

    async def events(
        self, run_id: str, *, tenant: str, after: int = 0
    ) -> tuple[list[bytes], ExecutionStatus]:
        """The run's event log entries with sequence > `after` (entry n has sequence n + 1)."""
        # Two plain commands, not a pipeline: an SSE stream is cancelled whenever its client
        # leaves, and redis-py leaks the connection of a pipeline cancelled mid-flight.
        owner, status = await self.redis.hmget(keys.run(run_id), ("tenant", "status"))
        if owner is None or owner.decode() != tenant:
            raise RunNotFound(f"no execution {run_id}")
        entries = await self.redis.lrange(keys.run_events(run_id), after, -1)
        return [bytes(e) for e in entries], ExecutionStatus(status.decode())

    async def page(
        self,
        *,
        tenant: str,
        limit: int,
        cursor: str | None = None,
        status: ExecutionStatus | None = None,
        flow_id: str | None = None,
    ) -> tuple[list[Execution[Any]], str | None]:
        """Return one newest-first page and the cursor of the next, reading O(limit) keys."""
        index = keys.index(tenant, flow_id=flow_id, status=status)
        found: list[Execution[Any]] = []
        upper = "+" if cursor is None else f"({cursor}"
        while len(found) <= limit:
            want = limit + 1 - len(found)
            ids = await self.redis.zrevrangebylex(index, upper, "-", start=0, num=want)
            if not ids:
                break
            async with self.redis.pipeline(transaction=False) as pipe:
                for rid in ids:
                    pipe.hmget(keys.run(rid.decode()), ("json", "status"))
                rows = await pipe.execute()
            gone = []
            for rid, (body, current) in zip(ids, rows, strict=True):
                if body is None:
                    gone.append(rid)  # expired by retention; the index entry goes with it
                elif status is None or current.decode() == status.value:
                    found.append(Execution[Any].model_validate_json(body))
            if gone:
                await self.redis.zrem(index, *gone)
            upper = f"({ids[-1].decode()}"
            if len(ids) < want:
                break
        more = len(found) > limit
        found = found[:limit]
        return found, (found[-1].id if more and found else None)

    # ----- the transition ----------------------------------------------------------------------

    async def _commit(self, prev: Stored | None, plan: _Plan, *, tenant: str) -> int:
        key_list, args = self._script_input(prev, plan, tenant=tenant)
        result = int(await self._transition(keys=key_list, args=args))
        if result == 1:
            self._log(plan)
        return result

    @staticmethod
    def _log(plan: _Plan) -> None:
        run = plan.run
        logger.info("run %s seq %d -> %s (attempt %d)", run.id, run.sequence, plan.event_type, run.attempt)

    def _script_input(
        self, prev: Stored | None, plan: _Plan, *, tenant: str
    ) -> tuple[list[str], list[str | bytes | int]]:
        run = plan.run
        now = self.clock()
        message_id = new_id("msg")
        data = run.model_dump_json(by_alias=True)
        entry, body = events.render(
            data, sequence=run.sequence, message_id=message_id, event_type=plan.event_type, at=now
        )
        old_status = prev.run.status if prev else run.status
        job_id = keys.job_id(run.id, plan.job_attempt or run.attempt)
        current_job = keys.job_id(run.id, run.attempt)
        payload = b""
        if plan.job_attempt is not None:
            payload = job_payload(run.id, plan.job_attempt, now_ms=_ms(now))
        key_list = [
            keys.run(run.id),
            OUTBOX_STREAM,
            keys.run_events(run.id),
            keys.index(tenant),
            keys.index(tenant, flow_id=run.flow_id),
            keys.index(tenant, status=old_status),
            keys.index(tenant, status=run.status),
            keys.index(tenant, flow_id=run.flow_id, status=old_status),
            keys.index(tenant, flow_id=run.flow_id, status=run.status),
            keys.LEASES,
            keys.PENDING,
            job_key(job_id),
            result_key(job_id),
            self.queue_name,
            job_key(current_job),
            keys.TENANTS,
            keys.tenant_flows(tenant),
        ]
        args: list[str | bytes | int] = [
            "" if prev is None else str(prev.run.sequence),
            str(run.sequence),
            run.status.value,
            str(run.attempt),
            data,
            entry,
            body,
            run.id,
            message_id,
            plan.event_type,
            tenant,
            run.flow_id,
            plan.lease,
            plan.pending,
            payload,
            job_id,
            str(_ms(now)),
            str(JOB_EXPIRY_MS),
            str(self.retention_ms) if plan.retention else "",
            keys.TRANSITIONS_CHANNEL,
            keys.WAKE_CHANNEL,
            "" if plan.lease_expired_before is None else str(plan.lease_expired_before),
            plan.extra.get("webhook", ""),
            plan.extra.get("input", ""),
            current_job,
        ]
        return key_list, args

    async def _update(
        self,
        run_id: str,
        plan_for: Callable[[Stored], _Plan | None],
        *,
        tenant: str | None = None,
        known: Stored | None = None,
    ) -> Execution[Any] | None:
        """Plan from the state read (or `known`), compare-and-set; on a lost race re-read and re-plan.

        `known` is the state a worker holds from its own last write: trying it first saves a read,
        and the compare-and-set makes a stale guess harmless. It is updated on success.
        """
        stored = known
        for _ in range(100):
            if stored is None:
                stored = await self.load(run_id)
            if stored is None or (tenant is not None and stored.tenant != tenant):
                raise RunNotFound(f"no execution {run_id}")
            plan = plan_for(stored)
            if plan is None:
                return None
            result = await self._commit(stored, plan, tenant=stored.tenant)
            if result == 1:
                if known is not None:
                    known.run = plan.run
                return plan.run
            if result == -1:
                return None
            stored = None
        raise Unavailable(f"execution {run_id} is changing too fast to update")

    # ----- operations --------------------------------------------------------------------------

    async def create(
        self,
        *,
        tenant: str,
        flow_id: str,
        input_json: str,
        metadata: dict[str, Any] | None = None,
        steps_total: int | None = None,
        webhook_json: str | None = None,
        run_id: str | None = None,
    ) -> Execution[Any]:
        """Write a new `queued` execution, its event and its arq job in one atomic step.

        With a `run_id` that exists already, nothing is written and the stored execution is returned.
        """
        item = NewRun(
            input_json=input_json, metadata=metadata or {}, webhook_json=webhook_json, run_id=run_id
        )
        [(run, _)] = await self.create_many(
            tenant=tenant, flow_id=flow_id, items=[item], steps_total=steps_total
        )
        return run

    async def create_many(
        self, *, tenant: str, flow_id: str, items: Sequence[NewRun], steps_total: int | None = None
    ) -> list[tuple[Execution[Any], bool]]:
        """Create executions in order, pipelined (one round trip per chunk, not per run).

        Returns each execution with whether this call created it; an id that existed already
        (an idempotent replay) is returned as stored.
        """
        out: list[tuple[Execution[Any], bool]] = []
        for start in range(0, len(items), _CHUNK):
            chunk = items[start : start + _CHUNK]
            plans = [self._queued_plan(flow_id, item, steps_total=steps_total) for item in chunk]
            async with self.redis.pipeline(transaction=False) as pipe:
                for plan in plans:
                    key_list, args = self._script_input(None, plan, tenant=tenant)
                    await self._transition(keys=key_list, args=args, client=pipe)
                results = await pipe.execute()
            for plan, result in zip(plans, results, strict=True):
                if int(result) == 1:
                    self._log(plan)
                    out.append((plan.run, True))
                else:
                    out.append((await self.get(plan.run.id, tenant=tenant), False))
        return out

    def _queued_plan(self, flow_id: str, item: NewRun, *, steps_total: int | None) -> _Plan:
        now = self.clock()
        run: Execution[Any] = Execution[Any](
            id=item.run_id or new_id("exec", now_ms=_ms(now)),
            flow_id=flow_id,
            status=S.queued,
            created_at=now,
            trace_id=secrets.token_hex(16),
            metadata=item.metadata,
            metrics=Metrics(steps_total=steps_total),
            attempt=1,
            sequence=1,
        )
        return _Plan(
            run=run,
            event_type=events.status_event(S.queued),
            pending=str(_ms(now) + self.requeue_ms),
            job_attempt=1,
            extra={"input": item.input_json, "webhook": item.webhook_json or ""},
        )

    async def start(self, run_id: str, attempt: int) -> Stored:
        """Make `attempt` the executing one: queued -> running, or take a retried attempt's lease.

        Raises StaleAttempt when the run is terminal or another attempt is current.
        """
        while True:
            stored = await self.load(run_id)
            if stored is None or stored.run.attempt != attempt or stored.run.status.terminal:
                raise StaleAttempt(run_id)
            now = self.clock()
            deadline = str(_ms(now) + self.lease_ms)
            if stored.run.status is S.running:
                ok = await self._acquire(
                    keys=[keys.run(run_id), keys.LEASES, keys.PENDING], args=[run_id, attempt, deadline]
                )
                if not ok:
                    raise StaleAttempt(run_id)
                return stored
            run = advance(stored.run, S.running, now=now)
            plan = _Plan(run=run, event_type=events.status_event(S.running), lease=deadline, pending="del")
            if await self._commit(stored, plan, tenant=stored.tenant) == 1:
                stored.run = run
                return stored

    async def progress(
        self, run_id: str, attempt: int, metrics: Metrics, *, known: Stored | None = None
    ) -> Execution[Any] | None:
        """Record new metrics of a running attempt as an ``execution.progress`` event."""

        def plan(stored: Stored) -> _Plan | None:
            if stored.run.attempt != attempt or stored.run.status is not S.running:
                raise StaleAttempt(run_id)
            if stored.run.metrics == metrics:
                return None
            run = stored.run.model_copy(update={"metrics": metrics, "sequence": stored.run.sequence + 1})
            return _Plan(run=run, event_type=events.PROGRESS)

        return await self._update(run_id, plan, known=known)

    async def finish(
        self,
        run_id: str,
        attempt: int,
        status: ExecutionStatus,
        *,
        output: Any = None,
        error: ExecutionError | None = None,
        metrics: Metrics | None = None,
        known: Stored | None = None,
    ) -> Execution[Any] | None:
        """End a running attempt with `status`; a stale attempt raises StaleAttempt."""

        def plan(stored: Stored) -> _Plan:
            if stored.run.attempt != attempt:
                raise StaleAttempt(run_id)
            run = advance(stored.run, status, now=self.clock(), output=output, error=error, metrics=metrics)
            return _Plan(
                run=run, event_type=events.status_event(status), lease="del", pending="del", retention=True
            )

        return await self._update(run_id, plan, known=known)

    async def cancel(self, run_id: str, *, tenant: str) -> Execution[Any]:
        """Cancel a queued or running execution, keeping its saved partial output."""

        def plan(stored: Stored) -> _Plan:
            run = advance(stored.run, S.cancelled, now=self.clock(), output=stored.partial)
            return _Plan(
                run=run,
                event_type=events.status_event(S.cancelled),
                lease="del",
                pending="del",
                retention=True,
            )

        run = await self._update(run_id, plan, tenant=tenant)
        assert run is not None  # the plan never skips
        return run

    async def reap(self, run_id: str, *, max_attempts: int) -> Execution[Any] | None:
        """Retry (or fail with ``worker_lost``) a run whose lease expired; None if it is alive after all."""
        now = self.clock()
        now_ms = _ms(now)

        def plan(stored: Stored) -> _Plan | None:
            run = stored.run
            if run.status is not S.running:
                return None
            if run.attempt >= max_attempts:
                error = ExecutionError(
                    code="worker_lost",
                    message=f"the worker running attempt {run.attempt} stopped responding",
                    details={"attempts": run.attempt},
                )
                done = advance(run, S.failed, now=now, output=stored.partial, error=error)
                return _Plan(
                    run=done,
                    event_type=events.status_event(S.failed),
                    lease="del",
                    pending="del",
                    retention=True,
                    lease_expired_before=now_ms,
                )
            # The next attempt starts its steps over (stepsRun never passes stepsTotal); usage and
            # cost stay, as the lost attempt really spent them.
            metrics = run.metrics.model_copy(update={"steps_run": 0})
            retried = advance(run, S.running, now=now, attempt=run.attempt + 1, metrics=metrics)
            return _Plan(
                run=retried,
                event_type=events.status_event(S.running),
                lease="del",
                pending=str(now_ms + self.requeue_ms),
                job_attempt=run.attempt + 1,
                lease_expired_before=now_ms,
            )

        try:
            return await self._update(run_id, plan)
        except RunNotFound:
            await self.redis.zrem(keys.LEASES, run_id)
            return None

    async def heartbeat(self, held: Sequence[tuple[str, int]]) -> list[str]:
        """Renew the leases of `held` (run id, attempt) pairs; return the ids no longer ours."""
        if not held:
            return []
        deadline = _ms(self.clock()) + self.lease_ms
        args: list[str | int] = [deadline]
        for run_id, attempt in held:
            args += [run_id, attempt, keys.run(run_id)]
        lost = await self._heartbeat(keys=[keys.LEASES], args=args)
        return [x.decode() if isinstance(x, bytes) else str(x) for x in lost]

    async def save_partial(self, run_id: str, attempt: int, partial_json: str) -> bool:
        """Keep a running attempt's partial output, for a cancel or failure to report."""
        return bool(await self._save_partial(keys=[keys.run(run_id)], args=[attempt, partial_json]))

    async def expired_leases(self, *, limit: int = 100) -> list[str]:
        """Run ids whose lease deadline has passed."""
        now = _ms(self.clock())
        ids = await self.redis.zrangebyscore(keys.LEASES, "-inf", now, start=0, num=limit)
        return [i.decode() for i in ids]

    async def due_pending(self, *, limit: int = 100) -> list[str]:
        """Run ids whose current attempt should have started by now."""
        now = _ms(self.clock())
        ids = await self.redis.zrangebyscore(keys.PENDING, "-inf", now, start=0, num=limit)
        return [i.decode() for i in ids]

    async def postpone_pending(self, run_id: str) -> None:
        """Check `run_id` again after the requeue interval."""
        await self.redis.zadd(keys.PENDING, {run_id: _ms(self.clock()) + self.requeue_ms}, xx=True)

    async def drop_pending(self, run_id: str) -> None:
        """Forget a pending entry whose run has started or ended."""
        await self.redis.zrem(keys.PENDING, run_id)
