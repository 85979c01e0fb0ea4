"""RunStore: reads of executions, and the operations that move them (each one transition).

Every operation computes the new state with ``states.advance`` from the state it read, then
commits it with ``runs.transition`` as a compare-and-set on the run's sequence; on a lost race it
re-reads and re-plans, so racing writers (a cancel against a success) end with exactly one winner.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from redis.asyncio import Redis

from orchestrator import events
from orchestrator.errors import RunNotFound, StaleAttempt, Unavailable
from orchestrator.models import Execution, ExecutionError, ExecutionStatus, Metrics
from orchestrator.runs import keys
from orchestrator.runs.leases import Leases
from orchestrator.runs.plans import next_attempt_plan, queued_plan, terminal_plan
from orchestrator.runs.states import advance
from orchestrator.runs.stored import READ_RUN, STORED_FIELDS, NewRun, Stored, parse_stored
from orchestrator.runs.transition import COMMITTED, LEASE_RENEWED, Deadline, Plan, Transitions, log_commit
from webhooks.compression import expand
from webhooks.errors import NotReplicated
from webhooks.replication import Replication

S = ExecutionStatus
_CHUNK = 200  # creates per pipelined round trip

# Save a flow's partial output while its attempt is current. Returns 1 when saved.
SAVE_PARTIAL = """
local run = KEYS[1]
local attempt, partial = unpack(ARGV)
local fields = redis.call('HMGET', run, 'status', 'attempt')
if fields[1] ~= 'running' or fields[2] ~= attempt then return 0 end
redis.call('HSET', run, 'partial', partial)
return 1
"""


def utcnow() -> datetime:
    """The store's default clock."""
    return datetime.now(UTC)


def _to_ms_precision(at: datetime) -> datetime:
    # The wire carries milliseconds; keeping more in memory would make a re-read differ.
    return at.replace(microsecond=at.microsecond - at.microsecond % 1000)


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
        replication: Replication | None = None,
        strict: bool = True,
    ) -> None:
        """`replication` and `strict`: see ``runs.transition.Transitions`` (strict for the API)."""
        self.redis = redis
        self.queue_name = queue_name
        self.retention_ms = retention_seconds * 1000
        self.lease_ms = int(lease_seconds * 1000)
        self.requeue_ms = int(requeue_after_seconds * 1000)
        self._clock = clock
        self.transitions = Transitions(
            redis,
            queue_name=queue_name,
            retention_ms=self.retention_ms,
            replication=replication,
            strict=strict,
        )
        self.leases = Leases(redis, lease_seconds=lease_seconds, requeue_after_seconds=requeue_after_seconds)
        self._save_partial = redis.register_script(SAVE_PARTIAL)
        self._read = redis.register_script(READ_RUN)

    def clock(self) -> datetime:
        """Now, at millisecond precision."""
        return _to_ms_precision(self._clock())

    # ----- reads -------------------------------------------------------------------------------

    async def load(self, run_id: str) -> Stored | None:
        """Read one execution with its hidden fields, or None."""
        return parse_stored(
            await self._read(keys=[keys.run(run_id), keys.run_events(run_id)], args=STORED_FIELDS)
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
        owner, status, last = await self._read(
            keys=[keys.run(run_id), keys.run_events(run_id)], args=("tenant", "status")
        )
        if last is None or owner is None or owner.decode() != tenant:
            raise RunNotFound(f"no execution {run_id}")
        return events.snapshot(last), ExecutionStatus(status.decode())

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
        return [expand(e) for e in entries], ExecutionStatus(status.decode())

    # ----- committing ----------------------------------------------------------------------------

    async def _commit(self, prev: Stored, plan: Plan) -> int:
        return await self.transitions.commit(
            plan,
            tenant=prev.tenant,
            now=self.clock(),
            prev_sequence=prev.run.sequence,
            prev_status=prev.run.status,
            hook=prev.hook,
        )

    async def _update(
        self,
        run_id: str,
        plan_for: Callable[[Stored], Plan | None],
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
            result = await self._commit(stored, plan)
            if result == COMMITTED:
                if known is not None:
                    known.run = plan.run
                return plan.run
            if result == LEASE_RENEWED:
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
            now = self.clock()
            plans = [
                queued_plan(
                    flow_id,
                    run_id=item.run_id,
                    input_json=item.input_json,
                    metadata=item.metadata,
                    webhook_json=item.webhook_json,
                    now=now,
                    steps_total=steps_total,
                    requeue_ms=self.requeue_ms,
                )
                for item in chunk
            ]
            async with self.redis.pipeline(transaction=False) as pipe:
                for plan in plans:
                    await self.transitions.commit(
                        plan,
                        tenant=tenant,
                        now=now,
                        prev_sequence=None,
                        prev_status=None,
                        hook=plan.hook,
                        pipe=pipe,
                    )
                replication = self.transitions.replication
                if replication.enabled:  # WAIT on the creates' own connection: no extra round trip
                    replication.queue(pipe)
                results = await pipe.execute()
            if replication.enabled:
                what = f"{len(plans)} created runs"
                try:
                    replication.check(results.pop(), what=what)
                    if not all(int(r) == COMMITTED for r in results):  # a replay: made on another connection
                        await replication.fence(self.redis, what=what)
                except NotReplicated as exc:
                    self.transitions.confirmed(exc, what=what)
            for plan, result in zip(plans, results, strict=True):
                if int(result) == COMMITTED:
                    log_commit(plan)
                    out.append((plan.run, True))
                else:
                    out.append((await self.get(plan.run.id, tenant=tenant), False))
        return out

    async def start(self, run_id: str, attempt: int, *, holder: str = "") -> Stored:
        """Make `attempt` the executing one: queued -> running, or take a retried attempt's lease.

        `holder` is the starting worker's notice channel: a cancel or a take-over is published there.
        Raises StaleAttempt when the run is terminal or another attempt is current.
        """
        while True:
            stored = await self.load(run_id)
            if stored is None or stored.run.attempt != attempt or stored.run.status.terminal:
                raise StaleAttempt(run_id)
            if stored.run.status is S.running:
                if not await self.leases.acquire(run_id, attempt, holder=holder):
                    raise StaleAttempt(run_id)
                return stored
            run = advance(stored.run, S.running, now=self.clock())
            plan = Plan(
                run=run,
                event_type=events.status_event(S.running),
                lease=Deadline.after(self.lease_ms),
                pending=Deadline.CLEAR,
                holder=holder or None,
            )
            if await self._commit(stored, plan) == COMMITTED:
                stored.run = run
                return stored

    async def progress(
        self, run_id: str, attempt: int, metrics: Metrics, *, known: Stored | None = None
    ) -> Execution[Any] | None:
        """Record new metrics of a running attempt as an ``execution.progress`` event."""

        def plan(stored: Stored) -> Plan | None:
            if stored.run.attempt != attempt or stored.run.status is not S.running:
                raise StaleAttempt(run_id)
            if stored.run.metrics == metrics:
                return None
            run = stored.run.model_copy(update={"metrics": metrics, "sequence": stored.run.sequence + 1})
            return Plan(run=run, event_type=events.PROGRESS)

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

        def plan(stored: Stored) -> Plan:
            if stored.run.attempt != attempt:
                raise StaleAttempt(run_id)
            run = advance(stored.run, status, now=self.clock(), output=output, error=error, metrics=metrics)
            return terminal_plan(run)

        return await self._update(run_id, plan, known=known)

    async def cancel(self, run_id: str, *, tenant: str) -> Execution[Any]:
        """Cancel a queued or running execution, keeping its saved partial output."""

        def plan(stored: Stored) -> Plan:
            return terminal_plan(advance(stored.run, S.cancelled, now=self.clock(), output=stored.partial))

        run = await self._update(run_id, plan, tenant=tenant)
        assert run is not None  # the plan never skips
        return run

    async def take_over(
        self, run_id: str, plan_for: Callable[[Stored, datetime], Plan | None]
    ) -> Execution[Any] | None:
        """Apply a reaper's plan to a run whose lease expired.

        The plan is committed only if the attempt's lease is still expired at commit time; None
        when it was renewed meanwhile (the worker lives), when `plan_for` skips, or the run is gone.
        """
        now = self.clock()

        def plan(stored: Stored) -> Plan | None:
            planned = plan_for(stored, now)
            if planned is not None:
                planned.require_lease_expired = True
            return planned

        try:
            return await self._update(run_id, plan)
        except RunNotFound:
            await self.leases.drop_lease(run_id)
            return None

    async def hand_back(self, run_id: str, attempt: int) -> Execution[Any] | None:
        """Give a running attempt back to the queue now, as the next attempt (a stopping worker).

        The new attempt is enqueued at once (not after the lease lapses) and the handed-back one does
        not count toward ``ORCH_MAX_ATTEMPTS``. Raises StaleAttempt if `attempt` is no longer current.
        """

        def plan(stored: Stored) -> Plan:
            if stored.run.attempt != attempt or stored.run.status is not S.running:
                raise StaleAttempt(run_id)
            return next_attempt_plan(
                stored.run, now=self.clock(), requeue_ms=self.requeue_ms, handbacks=stored.handbacks + 1
            )

        return await self._update(run_id, plan)

    async def save_partial(self, run_id: str, attempt: int, partial_json: str) -> bool:
        """Keep a running attempt's partial output, for a cancel or failure to report."""
        return bool(await self._save_partial(keys=[keys.run(run_id)], args=[attempt, partial_json]))
