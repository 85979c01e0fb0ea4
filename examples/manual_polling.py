"""Manual polling: your own loop over ``runs.get`` (seed: "Manual Polling").

Kept for parity with the seed; prefer ``wait_for_completion`` (pushed, no polling) or webhooks.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from orchestrator.client import Client

INPUT = json.loads(Path(__file__).with_name("invoice.json").read_text())


def poll_execution(
    client: Client, execution_id: str, *, max_attempts: int = 60, interval: float = 2.0
) -> dict[str, Any]:
    for _ in range(max_attempts):
        execution = client.runs.get(execution_id)
        match execution.status.value:
            case "success":
                return {"success": True, "output": execution.output}
            case "failed":
                return {"success": False, "error": execution.error}
            case "cancelled":
                return {"success": False, "error": {"message": "Cancelled"}}
            case "queued" | "running":
                time.sleep(interval)  # still processing: wait and retry
    raise RuntimeError("Polling timeout")


def main() -> None:
    with Client() as client:
        execution = client.flows.run("invoice-extraction", INPUT)
        print(poll_execution(client, execution.id, interval=0.5))


if __name__ == "__main__":
    main()
