"""Every Redis key and channel of the orchestrator's runs, in one place (arq's own keys: ``runs.jobs``)."""

from __future__ import annotations

from orchestrator.models import ExecutionStatus

PREFIX = "orch"

# One token per enqueue; an idle worker blocks on it (BLPOP), so one enqueue wakes one worker.
WAKE_LIST = f"{PREFIX}:wake"
# Workers that are running now (worker id -> expiry ms of its beacon), to see them from outside.
WORKERS = f"{PREFIX}:workers"
# run id -> lease deadline (ms) of the attempt that is executing it.
LEASES = f"{PREFIX}:leases"
# run id -> time (ms) after which its current attempt's job should be enqueued again if not started.
PENDING = f"{PREFIX}:pending"
# sha256(api key) -> tenant, for keys made by `orchestrator keys create`.
API_KEYS = f"{PREFIX}:apikeys"

# Every tenant that ever created a run, and per tenant every flow: enough to name every index key.
TENANTS = f"{PREFIX}:tenants"


def run_channel(run_id: str) -> str:
    """Pub/sub channel of one run's transition notices (the API subscribes while someone waits)."""
    return f"{PREFIX}:run:{run_id}:notices"


def run_of_channel(channel: str) -> str | None:
    """The run id of a :func:`run_channel` name; None for another channel."""
    head, _, rest = channel.partition(f"{PREFIX}:run:")
    if head or not rest.endswith(":notices"):
        return None
    return rest.removesuffix(":notices")


def worker_channel(worker_id: str) -> str:
    """Pub/sub channel of one worker: notices of the runs it holds (a cancel, a take-over)."""
    return f"{PREFIX}:w:{worker_id}"


def tenant_flows(tenant: str) -> str:
    """Set of the flow ids a tenant has runs of."""
    return f"{PREFIX}:t:{tenant}:flows"


def idempotency(tenant: str, key: str) -> str:
    """The claim of one Idempotency-Key: its body fingerprint and the run ids it created."""
    return f"{PREFIX}:t:{tenant}:idem:{key}"


def run(run_id: str) -> str:
    """Hash holding one execution (fields: json, status, sequence, attempt, tenant, flow, ...)."""
    return f"{PREFIX}:run:{run_id}"


def run_events(run_id: str) -> str:
    """List of the run's events, in order, one JSON document each."""
    return f"{PREFIX}:run:{run_id}:events"


def index(tenant: str, *, flow_id: str | None = None, status: ExecutionStatus | None = None) -> str:
    """Sorted set (all scores 0, members are time-ordered run ids) listing a tenant's runs."""
    key = f"{PREFIX}:t:{tenant}:runs"
    if flow_id is not None:
        key += f":f:{flow_id}"
    if status is not None:
        key += f":s:{status.value}"
    return key


def index_keys(tenant: str, flows: list[str]) -> list[str]:
    """Every index key of a tenant with runs of `flows` (all, by flow, by status, by both)."""
    statuses: list[ExecutionStatus | None] = [None, *ExecutionStatus]
    return [
        keys_for
        for flow_id in [None, *flows]
        for keys_for in (index(tenant, flow_id=flow_id, status=s) for s in statuses)
    ]


# The server secret that signs per-run read tokens (base64 of 32 random bytes, made once with NX).
RUN_TOKEN_SECRET = f"{PREFIX}:run-token-secret"


def dashboard_session(session_digest: str) -> str:
    """Hash of one dashboard sign-in (tenant, csrf), under the SHA-256 of its cookie; expires when idle."""
    return f"{PREFIX}:dash:session:{session_digest}"
