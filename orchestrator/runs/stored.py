"""What a run is stored as: its hash's fields and its event log, read back as a :class:`Stored`; and
:class:`NewRun`, one execution to create.

The run hash holds the fields scripts compare (status, sequence, attempt, tenant, the lease holder)
and the hidden ones (input, partial output, the run's own webhook); the execution's JSON itself is
the data of its last event (``orchestrator.events.snapshot``): stored once, not once more in the hash
(issue 15).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from orchestrator import events
from orchestrator.models import Execution
from webhooks.outbox import Hook

# The run hash's fields a Stored is read from, with its last event (see parse_stored).
STORED_FIELDS = ("tenant", "input", "partial", "webhook", "handbacks")
# A run's fields ARGV and its current snapshot: its last event log entry, whose data the hash keeps
# no copy of (issue 15). KEYS: 1 run hash, 2 event log. Returns the fields' values, then the entry.
READ_RUN = """
local out = redis.call('HMGET', KEYS[1], unpack(ARGV))
out[#ARGV + 1] = redis.call('LINDEX', KEYS[2], -1)
return out
"""


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
    """A Stored from READ_RUN's answer for STORED_FIELDS, or None when the run does not exist."""
    if raw[0] is None or raw[-1] is None:
        return None
    text = [v.decode() if v is not None else None for v in raw[:-1]]
    return Stored(
        run=Execution[Any].model_validate_json(events.snapshot(raw[-1])),
        tenant=text[0] or "",
        input_json=text[1],
        partial_json=text[2],
        webhook_json=text[3],
        handbacks=int(text[4] or 0),
    )


@dataclass
class NewRun:
    """One execution to create."""

    input_json: str
    metadata: dict[str, Any] = field(default_factory=dict)
    webhook_json: str | None = None
    run_id: str | None = None
