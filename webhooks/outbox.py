"""The outbox stream: the one seam between a producer of events and the webhook dispatcher.

A producer appends one entry per message inside its own atomic write; the dispatcher reads the
stream with a consumer group. Entry fields are all strings:

``id`` (``msg_…``, the ``webhook-id``), ``type`` (event type), ``tenant``, ``subject`` (for
executions the run id), ``flow`` (a filter value, may be empty), ``body`` (the JSON body sent on
the wire), and optionally ``url`` / ``events`` for a one-off webhook attached to the subject.
"""

from __future__ import annotations

OUTBOX_STREAM = "wh:outbox"
