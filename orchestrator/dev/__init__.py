"""Developer tooling: ``orchestrator dev`` (embedded Redis, child processes) and ``orchestrator bench``."""
