"""The ``orchestrator`` command: process commands, client commands over the SDK, ``webhooks listen``."""
