"""Cancel an execution; partial results stay available (seed: "Cancel Execution")."""

from __future__ import annotations

import json
from pathlib import Path

from orchestrator.client import Client

INPUT = json.loads(Path(__file__).with_name("invoice.json").read_text())


def main() -> None:
    with Client() as client:
        execution = client.flows.run("invoice-extraction", {**INPUT, "stepDelay": 2})
        # Wait until the first step is done, pushed by the server (no polling): the SSE stream.
        for event in client.runs.stream(execution.id):
            if event.data.metrics.steps_run >= 1:
                break
        cancelled = client.runs.cancel(execution.id)
        print("Status:", cancelled.status.value)
        print("Partial output:", cancelled.output)


if __name__ == "__main__":
    main()
