"""The orchestrator's event types for the catalog (``GET /v1/event-types``, OpenAPI ``webhooks``).

Every ``execution.*`` type's ``data`` is an Execution (API.md). Without flow ids its ``output`` is any
JSON value; narrowed to flows (``?flowIds=a,b``, as an endpoint's ``flowIds`` narrows what it gets)
``data`` is any of those flows' Executions, each with its ``flowId`` fixed and its ``output`` typed
by the flow's output schema. The webhooks package renders and serves them (``webhooks.catalog``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from orchestrator import events
from orchestrator.flows import Registry
from orchestrator.models import Execution, ExecutionStatus
from webhooks.catalog import EventType, namespaced, split_defs

DESCRIPTIONS = {
    "execution.queued": "A run was created and waits for a worker.",
    "execution.running": "A worker started an attempt of the run (again after a retry).",
    "execution.success": "The run finished; `output` holds its result.",
    "execution.failed": "The run failed for good; `error` says why (`output` keeps any partial result).",
    "execution.cancelled": "The run was cancelled (queued or running); `output` keeps any partial result.",
    events.PROGRESS: "The run's `metrics.stepsRun` changed (opt-in; coalesced per run and endpoint).",
}
STATUS_OF = {
    **{events.status_event(s): s for s in ExecutionStatus},
    events.PROGRESS: ExecutionStatus.running,
}
EXAMPLE_RUN = "exec_01KBA7Y0Q3T6PZ5X0G1M2N3P4S"
_SAFE = re.compile(r"[^A-Za-z0-9_]")


def execution_schema() -> dict[str, Any]:
    """The Execution schema (output: any JSON), as a self-contained JSON Schema with ``$defs``."""
    return Execution[Any].model_json_schema(by_alias=True, mode="serialization")


def flow_execution_schema(flow_id: str, output_schema: dict[str, Any]) -> dict[str, Any]:
    """The Execution schema of one flow: ``flowId`` fixed, ``output`` of the flow's output schema."""
    base, base_defs = split_defs(execution_schema())
    prefix = "Flow_" + _SAFE.sub("_", flow_id) + "_"
    output, output_defs = namespaced(output_schema, prefix) if output_schema else ({}, {})
    props = dict(base["properties"])
    props["flowId"] = {"type": "string", "const": flow_id, "title": "Flowid"}
    props["output"] = {"anyOf": [output, {"type": "null"}]} if output else {}
    return {
        **base,
        "title": f"Execution of {flow_id}",
        "properties": props,
        "$defs": {**base_defs, **output_defs},
    }


def data_schema(flows: Sequence[tuple[str, dict[str, Any]]] | None) -> dict[str, Any]:
    """``data``'s schema: the generic Execution, or any of the Executions of `flows` (id, output schema)."""
    if not flows:
        return execution_schema()
    variants, defs = [], {}
    for flow_id, output in flows:
        body, found = split_defs(flow_execution_schema(flow_id, output))
        variants.append(body)
        defs.update(found)
    return {"anyOf": variants, "$defs": defs}


def example(event_type: str, flow_id: str) -> dict[str, Any]:
    """An Execution as `event_type` would carry it (its ``output`` null: it validates for any flow)."""
    status = STATUS_OF[event_type]
    done = status.terminal
    failed = status is ExecutionStatus.failed
    return {
        "id": EXAMPLE_RUN,
        "flowId": flow_id,
        "status": status.value,
        "createdAt": "2026-11-29T12:00:00.000Z",
        "startedAt": None if status is ExecutionStatus.queued else "2026-11-29T12:00:00.250Z",
        "completedAt": "2026-11-29T12:00:03.250Z" if done else None,
        "duration": 3000 if done else None,
        "output": None,
        "metrics": {"tokensUsed": 0, "cost": 0.0, "stepsRun": 1 if done else 0, "stepsTotal": None},
        "traceId": "0af7651916cd43dd8448eb211c80319c",
        "metadata": {},
        "error": {"code": "flow_error", "message": "the PDF is encrypted", "details": {}} if failed else None,
        "attempt": 1,
        "sequence": {"queued": 1, "running": 2}.get(status.value, 4),
    }


def source(registry: Registry) -> Any:
    """The catalog source the webhooks package calls: flow ids (None: no narrowing) -> event types."""

    def event_types(flow_ids: Sequence[str] | None) -> list[EventType]:
        flows = [f for f in (registry.get(i) for i in flow_ids or ()) if f is not None]
        narrowed = [(f.id, f.output_schema()) for f in flows] or None
        schema = data_schema(narrowed)
        example_flow = flows[0].id if flows else "invoice-extraction"
        return [
            EventType(
                name,
                DESCRIPTIONS[name],
                schema,
                example(name, example_flow),
                group="execution",
                flows=[f.id for f in flows],
            )
            for name in (*events.STATUS_EVENTS, events.PROGRESS)
        ]

    return event_types
