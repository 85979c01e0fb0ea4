"""The one write path: a transition commits a run's new state, its event and its side effects atomically.

One Lua script (``TRANSITION``), run as a compare-and-set on the run's ``sequence``: it writes the
execution, moves it between the per-tenant indexes, appends the event to the outbox stream (the
seam to the webhook dispatcher) and to the run's event log, updates the lease and pending books,
enqueues the arq job when there is one, and publishes the transition notice. If any of these
happened, all of them did (DESIGN.md "The one write path").

The script binds its KEYS and ARGV to named locals in its first lines, in the order of the fields
of :class:`TransitionKeys` and :class:`TransitionArgs`, which build them on the Python side (a test
keeps the two in step).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any, ClassVar

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from orchestrator import events
from orchestrator.models import Execution, ExecutionStatus
from orchestrator.runs import jobs, keys
from orchestrator.runs.notices import Notice
from webhooks.errors import NotReplicated
from webhooks.ids import new_id
from webhooks.models import to_ms
from webhooks.outbox import OUTBOX_STREAM, Hook, OutboxEntry
from webhooks.replication import Replication, shortfall_noted

logger = logging.getLogger(__name__)

COMMITTED, MOVED, LEASE_RENEWED = 1, 0, -1


@dataclass(frozen=True)
class Deadline:
    """What a transition does to the run's entry in a deadline set (leases, pending).

    ``KEEP`` leaves it, ``CLEAR`` removes it, ``Deadline.after(ms)`` sets it to the script's now + ms.
    """

    op: str = "keep"
    ms: int = 0
    KEEP: ClassVar[Deadline]
    CLEAR: ClassVar[Deadline]

    @classmethod
    def after(cls, ms: int) -> Deadline:
        """Due `ms` milliseconds after the commit."""
        return cls("after", ms)

    def arg(self) -> str:
        """The script's encoding: '' keep, 'del' clear, '+N' now + N ms."""
        return {"keep": "", "clear": "del"}.get(self.op, f"+{self.ms}")


Deadline.KEEP = Deadline("keep")
Deadline.CLEAR = Deadline("clear")


@dataclass
class Plan:
    """One transition: the new execution and everything committed with it."""

    run: Execution[Any]
    event_type: str
    lease: Deadline = Deadline.KEEP
    pending: Deadline = Deadline.KEEP
    # Write (and wake a worker for) the arq job of this attempt.
    enqueue_attempt: int | None = None
    # Terminal: the run and its log expire after the retention period; its queued job is dropped.
    retention: bool = False
    # A reaper's take-over: refused if the attempt's lease was renewed meanwhile.
    require_lease_expired: bool = False
    # Written only when the run is created.
    input_json: str | None = None
    hook: Hook | None = None
    # A stopping worker handed the attempt back: the run's new count of such attempts.
    handbacks: int | None = None
    # The channel of the worker that starts running the attempt (it then hears of cancels).
    holder: str | None = None


@dataclass(frozen=True)
class TransitionKeys:
    """KEYS of ``TRANSITION``, in order."""

    run: str
    outbox: str
    events: str
    index_all: str
    index_flow: str
    index_old_status: str
    index_new_status: str
    index_flow_old_status: str
    index_flow_new_status: str
    leases: str
    pending: str
    job: str
    job_result: str
    queue: str
    current_job: str
    tenants: str
    tenant_flows: str


@dataclass(frozen=True)
class TransitionArgs:
    """ARGV of ``TRANSITION``, in order; the outbox entry's field/value pairs follow them."""

    expected_sequence: str  # '' = the run must not exist yet
    sequence: int
    status: str
    attempt: int
    log_entry: str | bytes  # the event, with the execution's JSON as its data; packed (events.pack)
    run_id: str
    tenant: str
    flow: str
    lease_change: str  # Deadline.arg()
    pending_change: str  # Deadline.arg()
    job_payload: bytes  # b'' = no job to write
    job_id: str
    job_score_offset_ms: int
    job_expiry_ms: int
    retention_ms: str  # '' = not terminal
    run_channel: str  # the run's own notice channel (API waiters)
    wake_list: str  # one token per enqueued job: one idle worker wakes
    require_lease_expired: str  # '1' or ''
    webhook: str  # '' = none (creation only)
    input: str  # '' = none (creation only)
    current_job_id: str
    notice: str
    handbacks: str  # '' = unchanged, else the run's count of attempts handed back by a stopping worker
    holder: str  # '' = unchanged, else the channel of the worker now running the attempt


KEY_NAMES = tuple(f.name for f in fields(TransitionKeys))
ARG_NAMES = tuple(f.name for f in fields(TransitionArgs))
_ARGC = len(ARG_NAMES)


def _names(cls: type) -> str:
    return ", ".join(f.name for f in fields(cls))


TRANSITION = f"""
local {_names(TransitionKeys)} = unpack(KEYS)
local {_names(TransitionArgs)} = unpack(ARGV, 1, {_ARGC})
local outbox_entry = {{unpack(ARGV, {_ARGC + 1})}}
local id = run_id

local cur = redis.call('HGET', run, 'sequence')
if expected_sequence == '' then
  if cur then return {MOVED} end
elseif cur ~= expected_sequence then
  return {MOVED}
end
-- One clock (DESIGN.md): deadlines are Redis's time, never the writer's host clock.
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
if require_lease_expired == '1' then
  local held = redis.call('ZSCORE', leases, id)
  if held and tonumber(held) > now then return {LEASE_RENEWED} end
end

local old = redis.call('HGET', run, 'status')
-- the worker running the previous state hears about this one (a cancel, a take-over)
local previous_holder = redis.call('HGET', run, 'holder')
if holder ~= '' then redis.call('HSET', run, 'holder', holder) end
-- The snapshot is the event's data (RPUSH below): the hash keeps no copy (issue 15; 'json' held
-- one before, dropped as the run moves on).
redis.call('HSET', run, 'status', status, 'sequence', sequence, 'attempt', attempt, 'tenant', tenant,
  'flow', flow)
redis.call('HDEL', run, 'json')
if webhook ~= '' then redis.call('HSET', run, 'webhook', webhook) end
if input ~= '' then redis.call('HSET', run, 'input', input) end
if handbacks ~= '' then redis.call('HSET', run, 'handbacks', handbacks) end
if not old then
  redis.call('ZADD', index_all, 0, id)
  redis.call('ZADD', index_flow, 0, id)
  redis.call('SADD', tenants, tenant)
  redis.call('SADD', tenant_flows, flow)
end
if old ~= status then
  if old then
    redis.call('ZREM', index_old_status, id)
    redis.call('ZREM', index_flow_old_status, id)
  end
  redis.call('ZADD', index_new_status, 0, id)
  redis.call('ZADD', index_flow_new_status, 0, id)
end

redis.call('XADD', outbox, '*', unpack(outbox_entry))
redis.call('RPUSH', events, log_entry)

local function move(set, change)
  if change == 'del' then
    redis.call('ZREM', set, id)
  elseif change ~= '' then
    redis.call('ZADD', set, now + tonumber(string.sub(change, 2)), id)
  end
end
move(leases, lease_change)
move(pending, pending_change)

local woke = false
if job_payload ~= '' then
  if redis.call('EXISTS', job, job_result) == 0 then
    redis.call('SET', job, job_payload, 'PX', job_expiry_ms)
    redis.call('ZADD', queue, now - tonumber(job_score_offset_ms), job_id)
    woke = true
  end
end
if retention_ms ~= '' then
  redis.call('PEXPIRE', run, retention_ms)
  redis.call('PEXPIRE', events, retention_ms)
  redis.call('HDEL', run, 'partial')
  -- a queued job of a run that ended (cancelled while queued) must never start
  redis.call('ZREM', queue, current_job_id)
  redis.call('DEL', current_job)
end
redis.call('PUBLISH', run_channel, notice)
if previous_holder and previous_holder ~= holder then redis.call('PUBLISH', previous_holder, notice) end
if woke then
  redis.call('LPUSH', wake_list, '1')
  redis.call('LTRIM', wake_list, 0, 99)
end
return {COMMITTED}
"""


def inputs(
    plan: Plan,
    *,
    queue_name: str,
    retention_ms: int,
    tenant: str,
    now: datetime,
    prev_sequence: int | None,
    prev_status: ExecutionStatus | None,
    hook: Hook | None,
) -> tuple[list[str], list[str | bytes | int]]:
    """KEYS and ARGV committing `plan` over the state (`prev_*`) it was computed from (no I/O)."""
    run = plan.run
    message_id = new_id("msg")
    data = run.model_dump_json(by_alias=True)
    log_entry, body = events.render(
        data, sequence=run.sequence, message_id=message_id, event_type=plan.event_type, at=now
    )
    old_status = prev_status if prev_status is not None else run.status
    job_attempt = plan.enqueue_attempt or run.attempt
    job_id = jobs.job_id(run.id, job_attempt)
    current_job = jobs.job_id(run.id, run.attempt)
    now_ms = to_ms(now)
    key_list = TransitionKeys(
        run=keys.run(run.id),
        outbox=OUTBOX_STREAM,
        events=keys.run_events(run.id),
        index_all=keys.index(tenant),
        index_flow=keys.index(tenant, flow_id=run.flow_id),
        index_old_status=keys.index(tenant, status=old_status),
        index_new_status=keys.index(tenant, status=run.status),
        index_flow_old_status=keys.index(tenant, flow_id=run.flow_id, status=old_status),
        index_flow_new_status=keys.index(tenant, flow_id=run.flow_id, status=run.status),
        leases=keys.LEASES,
        pending=keys.PENDING,
        job=jobs.job_key(job_id),
        job_result=jobs.result_key(job_id),
        queue=queue_name,
        current_job=jobs.job_key(current_job),
        tenants=keys.TENANTS,
        tenant_flows=keys.tenant_flows(tenant),
    )
    notice = Notice(run.id, run.status, run.sequence, run.attempt)
    args = TransitionArgs(
        expected_sequence="" if prev_sequence is None else str(prev_sequence),
        sequence=run.sequence,
        status=run.status.value,
        attempt=run.attempt,
        log_entry=events.pack(log_entry),
        run_id=run.id,
        tenant=tenant,
        flow=run.flow_id,
        lease_change=plan.lease.arg(),
        pending_change=plan.pending.arg(),
        job_payload=b""
        if plan.enqueue_attempt is None
        else jobs.job_payload(run.id, plan.enqueue_attempt, now_ms=now_ms),
        job_id=job_id,
        job_score_offset_ms=jobs.JOB_SCORE_OFFSET_MS,
        job_expiry_ms=jobs.JOB_EXPIRY_MS,
        retention_ms=str(retention_ms) if plan.retention else "",
        run_channel=keys.run_channel(run.id),
        wake_list=keys.WAKE_LIST,
        require_lease_expired="1" if plan.require_lease_expired else "",
        webhook=plan.hook.to_json() if plan.hook is not None else "",
        input=plan.input_json or "",
        current_job_id=current_job,
        notice=notice.format(),
        handbacks="" if plan.handbacks is None else str(plan.handbacks),
        holder=plan.holder or "",
    )
    entry = OutboxEntry(
        id=message_id,
        type=plan.event_type,
        tenant=tenant,
        subject=run.id,
        flow=run.flow_id,
        body=events.pack(body),
        hook=hook,
        sequence=run.sequence,
    )
    return (
        [getattr(key_list, n) for n in KEY_NAMES],
        [*(getattr(args, n) for n in ARG_NAMES), *entry.to_fields()],
    )


class Transitions:
    """Builds and commits transitions for one Redis client.

    With ``replication.replicas`` > 0 a commit also waits for that many replicas (WAIT, in the
    same round trip). A shortfall raises NotReplicated when `strict` (the API: 503, the client
    retries), else it is logged (a worker: the transition stands on the primary, and one that a
    failover loses is recovered like a lost worker's, by the lease and the reaper).
    """

    def __init__(
        self,
        redis: Redis,
        *,
        queue_name: str,
        retention_ms: int,
        replication: Replication | None = None,
        strict: bool = True,
    ) -> None:
        self.redis = redis
        self.queue_name = queue_name
        self.retention_ms = retention_ms
        self.replication = replication or Replication()
        self.strict = strict
        self._script = redis.register_script(TRANSITION)

    def confirmed(self, outcome: int | NotReplicated, *, what: str) -> None:
        """Act on WAIT's outcome: raise a shortfall (`strict`) or log it."""
        if isinstance(outcome, NotReplicated) and self.strict:
            raise outcome
        shortfall_noted(outcome, what=what)

    async def commit(
        self,
        plan: Plan,
        *,
        tenant: str,
        now: datetime,
        prev_sequence: int | None,
        prev_status: ExecutionStatus | None,
        hook: Hook | None,
        pipe: Pipeline | None = None,
    ) -> int:
        """Run the script: COMMITTED, MOVED (the sequence changed) or LEASE_RENEWED.

        With `pipe` the call is only queued (the caller executes the pipeline and reads the result).
        """
        key_list, args = inputs(
            plan,
            queue_name=self.queue_name,
            retention_ms=self.retention_ms,
            tenant=tenant,
            now=now,
            prev_sequence=prev_sequence,
            prev_status=prev_status,
            hook=hook,
        )
        if pipe is not None:
            await self._script(keys=key_list, args=args, client=pipe)
            return COMMITTED
        if not self.replication.enabled:
            result = int(await self._script(keys=key_list, args=args))
            if result == COMMITTED:
                log_commit(plan)
            return result
        what = f"run {plan.run.id} {plan.event_type}"
        reply, outcome = await self.replication.script(self.redis, self._script, key_list, args, what=what)
        result = int(reply)
        if result == COMMITTED:
            log_commit(plan)
            self.confirmed(outcome, what=what)
        return result


def log_commit(plan: Plan) -> None:
    """One log line per committed transition (a failure's error code at its end)."""
    run = plan.run
    why = f": {run.error.code}" if run.error is not None else ""
    logger.info("run %s seq %d -> %s (attempt %d)%s", run.id, run.sequence, plan.event_type, run.attempt, why)
