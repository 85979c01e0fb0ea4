"""Check status: start an execution, then read it with ``runs.get`` (seed: "Check Status")."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from orchestrator.client import Client

INPUT = json.loads(Path(__file__).with_name("invoice.json").read_text())


def main(execution_id: str | None = None) -> None:
    with Client() as client:  # ORCH_BASE_URL and ORCH_API_KEY from the environment
        if execution_id is None:
            execution_id = client.flows.run("invoice-extraction", INPUT).id
        execution = client.runs.get(execution_id)
        print("Status:", execution.status.value)
        print("Created:", execution.created_at.isoformat())
        if execution.status == "success":
            print("Output:", execution.output)
            print("Duration:", execution.duration, "ms")
        elif execution.status == "failed" and execution.error is not None:
            print("Error:", execution.error.message, file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else None)
