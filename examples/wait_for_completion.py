"""Wait for completion: start an execution and wait for its end (seed: "Wait for Completion").

Unlike the seed's poll-every-second loop, ``wait_for_completion`` long-polls: the server answers
the moment the execution ends. ``interval`` is only used against a server without long-poll.
"""

from __future__ import annotations

import json
from pathlib import Path

from orchestrator.client import Client, TimeoutError

INPUT = json.loads(Path(__file__).with_name("invoice.json").read_text())


def main() -> None:
    with Client() as client:
        execution = client.flows.run("invoice-extraction", INPUT)
        try:
            result = client.runs.wait_for_completion(execution.id, interval=2.0, timeout=300.0)
        except TimeoutError:
            # The execution goes on: call wait_for_completion again with a new timeout.
            print("Still running:", execution.id)
            return
        print("Final status:", result.status.value)
        print("Output:", result.output)


if __name__ == "__main__":
    main()
