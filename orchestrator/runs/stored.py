"""A run as read from Redis (``Stored``: the execution and the fields the API does not show).

And ``NewRun``, one execution to create.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from orchestrator.models import Execution
from webhooks.outbox import Hook

# The run hash's fields a Stored is read from (see parse_stored).
STORED_FIELDS = ("json", "tenant", "input", "partial", "webhook", "handbacks")


@dataclass
class Stored:
    """An execution as read from Redis, with the fields the API does not show."""

    run: Execution[Any]
    tenant: str
    input_json: str | None = None
    partial_json: str | None = None
    webhook_json: str | None = None
    # Attempts handed back by a stopping worker (a deploy): they do not count as lost.
    handbacks: int = 0

    @property
    def partial(self) -> Any:
        """The flow's last saved partial output (reported by a cancel or a lost worker), or None."""
        return json.loads(self.partial_json) if self.partial_json else None

    @property
    def hook(self) -> Hook | None:
        """The run's own webhook given at creation, if any."""
        return Hook.from_json(self.webhook_json) if self.webhook_json else None


def parse_stored(raw: Sequence[bytes | None]) -> Stored | None:
    """A Stored from the values of STORED_FIELDS (HMGET), or None when the run does not exist."""
    if raw[0] is None or raw[1] is None:
        return None
    text = [v.decode() if v is not None else None for v in raw]
    return Stored(
        run=Execution[Any].model_validate_json(raw[0]),
        tenant=text[1] or "",
        input_json=text[2],
        partial_json=text[3],
        webhook_json=text[4],
        handbacks=int(text[5] or 0),
    )


@dataclass
class NewRun:
    """One execution to create."""

    input_json: str
    metadata: dict[str, Any] = field(default_factory=dict)
    webhook_json: str | None = None
    run_id: str | None = None
