"""The event-type catalog: every type a receiver can get, with the JSON Schema of its body and an example.

The webhook service stays generic: the mounting application supplies its own types (for the
orchestrator, ``execution.*`` with the Execution schema, narrowed per flow) as a function of the
filter values asked for; this module adds the service's own (``webhook.test`` and the operational
events of ``webhooks.alerts``). Bodies are always ``{type, timestamp, data}``; each schema is a
self-contained JSON Schema (2020-12, ``$defs`` inside) of the whole body. :func:`openapi_webhooks`
renders the same entries as OpenAPI 3.1's top-level ``webhooks`` section.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from webhooks import alerts
from webhooks.models import Attempt, WireModel

Schema = dict[str, Any]


@dataclass(frozen=True)
class EventType:
    """One event type: its name, what it means, its group, the schema of ``data`` and an example ``data``.

    `data_schema` may carry ``$defs`` (referenced as ``#/$defs/Name``), as pydantic writes them.
    """

    name: str
    description: str
    data_schema: Schema
    example: dict[str, Any]
    group: str = "events"
    flows: list[str] = field(default_factory=list)  # the filter values it was narrowed to, if any

    def schema(self) -> Schema:
        """The JSON Schema of the whole body ``{type, timestamp, data}``, self-contained."""
        data, defs = split_defs(self.data_schema)
        out: Schema = {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": title_of(self.name),
            "description": self.description,
            "type": "object",
            "required": ["type", "timestamp", "data"],
            "properties": {
                "type": {"type": "string", "const": self.name},
                "timestamp": {"type": "string", "format": "date-time"},
                "data": data,
            },
        }
        if defs:
            out["$defs"] = defs
        return out

    def body_example(self, timestamp: str) -> dict[str, Any]:
        """A whole example body, stamped `timestamp`."""
        return {"type": self.name, "timestamp": timestamp, "data": copy.deepcopy(self.example)}


# What a mounting application supplies: its event types, narrowed to the filter values given (None: all).
CatalogSource = Callable[[Sequence[str] | None], Sequence[EventType]]


def title_of(name: str) -> str:
    """A schema title for a type name: ``execution.success`` -> ``ExecutionSuccessEvent``."""
    return "".join(part.capitalize() for part in re.split(r"[._]", name)) + "Event"


def split_defs(schema: Schema) -> tuple[Schema, Schema]:
    """(`schema` without its top-level ``$defs``, those ``$defs``)."""
    rest = {k: v for k, v in schema.items() if k != "$defs"}
    return rest, dict(schema.get("$defs", {}))


def rename_refs(node: Any, rename: Callable[[str], str]) -> Any:
    """A deep copy of `node` with every ``#/$defs/Name`` reference renamed by `rename(Name)`."""
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            if k == "$ref" and isinstance(v, str) and v.startswith("#/$defs/"):
                out[k] = rename(v.removeprefix("#/$defs/"))
            else:
                out[k] = rename_refs(v, rename)
        return out
    if isinstance(node, list):
        return [rename_refs(v, rename) for v in node]
    return node


def namespaced(schema: Schema, prefix: str) -> tuple[Schema, Schema]:
    """(`schema` without ``$defs``, its ``$defs``), every definition renamed ``{prefix}{Name}`` so that
    schemas from several sources can share one ``$defs`` without clashing."""
    body, defs = split_defs(schema)

    def local(name: str) -> str:
        return f"#/$defs/{prefix}{name}"

    return rename_refs(body, local), {f"{prefix}{k}": rename_refs(v, local) for k, v in defs.items()}


# ----- the service's own types -------------------------------------------------------------------


class WebhookTestData(WireModel):
    """``data`` of ``webhook.test``."""

    endpoint_id: str
    message: str


class EndpointEventData(WireModel):
    """``data`` of ``endpoint.disabled`` and ``endpoint.enabled``."""

    endpoint_id: str
    reason: str  # failing | gone | manual (disabled); healed | manual (enabled)
    at: str
    failing_since: str | None = None


class LastAttempt(WireModel):
    """The last attempt of a message, as the ``message.attempt.*`` events show it."""

    at: str
    status_code: int | None = None
    duration_ms: int
    error: str | None = None


class MessageEventData(WireModel):
    """``data`` of ``message.attempt.failing``, ``.exhausted`` and ``.recovered``."""

    endpoint_id: str
    message_id: str
    event_type: str
    run_id: str | None = None
    attempts: int
    last_attempt: LastAttempt


def _schema(model: type[BaseModel]) -> Schema:
    return model.model_json_schema(by_alias=True, mode="serialization")


EXAMPLE_ENDPOINT = "wh_01KBA7Y0Q3T6PZ5X0G1M2N3P4Q"
EXAMPLE_MESSAGE = "msg_01KBA7Y0Q3T6PZ5X0G1M2N3P4R"
EXAMPLE_AT = "2026-11-29T12:00:00.000Z"
_ATTEMPT = Attempt.model_validate(
    {"at": EXAMPLE_AT, "statusCode": 503, "durationMs": 87, "error": "HTTP 503"}
)


def _message_example(event_type: str, attempts: int, last: Attempt) -> dict[str, Any]:
    return alerts.message_data(
        endpoint_id=EXAMPLE_ENDPOINT,
        message_id=EXAMPLE_MESSAGE,
        event_type=event_type,
        subject="exec_01KBA7Y0Q3T6PZ5X0G1M2N3P4S",
        attempts=attempts,
        last=last,
    )


def _endpoint_example(reason: str, *, since: bool) -> dict[str, Any]:
    data = alerts.endpoint_data(EXAMPLE_ENDPOINT, reason=reason, at_ms=1_795_000_000_000)
    if since:
        data["failingSince"] = "2026-11-24T12:00:00.000Z"
    return data


OWN_TYPES: tuple[EventType, ...] = (
    EventType(
        "webhook.test",
        "A test message sent from the API (POST /v1/webhooks/{id}/test), or a probe of a disabled endpoint.",
        _schema(WebhookTestData),
        {"endpointId": EXAMPLE_ENDPOINT, "message": "test message sent from the API"},
        group="webhook",
    ),
    EventType(
        alerts.ENDPOINT_DISABLED,
        "An endpoint was disabled: failing without a success for too long, 410 Gone, or by hand.",
        _schema(EndpointEventData),
        _endpoint_example("failing", since=True),
        group="operational",
    ),
    EventType(
        alerts.ENDPOINT_ENABLED,
        "An endpoint was enabled again: healed (a probe or a late attempt succeeded) or by hand.",
        _schema(EndpointEventData),
        _endpoint_example("healed", since=True),
        group="operational",
    ),
    EventType(
        alerts.MESSAGE_FAILING,
        "A message's attempts to an endpoint failed several times in a row (ORCH_WEBHOOK_FAILING_AFTER).",
        _schema(MessageEventData),
        _message_example("execution.success", 4, _ATTEMPT),
        group="operational",
    ),
    EventType(
        alerts.MESSAGE_EXHAUSTED,
        "A message's last scheduled attempt to an endpoint failed: it is failed (retry or recover it).",
        _schema(MessageEventData),
        _message_example("execution.success", 8, _ATTEMPT),
        group="operational",
    ),
    EventType(
        alerts.MESSAGE_RECOVERED,
        "A message was delivered after a failing or exhausted event about it.",
        _schema(MessageEventData),
        _message_example(
            "execution.success", 9, _ATTEMPT.model_copy(update={"status_code": 200, "error": None})
        ),
        group="operational",
    ),
)


# ----- OpenAPI -----------------------------------------------------------------------------------

_COMPONENT = re.compile(r"[^A-Za-z0-9._-]")


def openapi_webhooks(types: Sequence[EventType]) -> tuple[Schema, Schema]:
    """(the OpenAPI 3.1 ``webhooks`` section, the component schemas it references).

    Each type is one webhook named after it: a POST whose body is its schema (hoisted into
    ``components/schemas``, as OpenAPI resolves ``$ref`` against the whole document) and whose
    headers are Standard Webhooks'.
    """
    section: Schema = {}
    components: Schema = {}
    headers = [
        ("webhook-id", "The message id (the same on every attempt): deduplicate on it"),
        ("webhook-timestamp", "Unix seconds of this attempt"),
        ("webhook-signature", "Space-separated v1,<base64 HMAC-SHA256> signatures (Standard Webhooks)"),
    ]
    for event in types:
        whole = event.schema()
        whole.pop("$schema", None)
        body, defs = split_defs(whole)
        title = title_of(event.name)

        def component(name: str, title: str = title) -> str:
            # Each event's definitions under its own names: no clash with the API's or another's.
            return f"#/components/schemas/{title}.{_COMPONENT.sub('_', name)}"

        for name, definition in defs.items():
            components[f"{title}.{_COMPONENT.sub('_', name)}"] = rename_refs(definition, component)
        components[title] = rename_refs(body, component)
        section[event.name] = {
            "post": {
                "operationId": "on_" + _COMPONENT.sub("_", event.name).replace(".", "_"),
                "summary": event.description,
                "tags": [event.group],
                "parameters": [
                    {
                        "name": n,
                        "in": "header",
                        "required": True,
                        "description": d,
                        "schema": {"type": "string"},
                    }
                    for n, d in headers
                ],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {"$ref": f"#/components/schemas/{title}"},
                            "example": event.body_example(EXAMPLE_AT),
                        }
                    },
                },
                "responses": {
                    "2XX": {"description": "Received: any 2xx within the timeout counts as delivered"},
                    "410": {"description": "Gone: the endpoint is disabled for good"},
                    "429": {
                        "description": "Busy: retried, after Retry-After if it is longer than the schedule"
                    },
                },
                "security": [],
            }
        }
    return section, components
