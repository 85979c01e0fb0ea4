"""Batch processing: start many executions, then wait for all of them (seed: "Batch Processing")."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path

from orchestrator.client import AsyncClient

INPUT = json.loads(Path(__file__).with_name("invoice.json").read_text())


def documents(n: int) -> list[dict[str, object]]:
    docs = []
    for i in range(n):
        text = f"Invoice: INV-{i:04d}\nVendor: Vendor {i}\nTotal: {10 + i}.00\n"
        docs.append({"base64": base64.b64encode(text.encode()).decode(), "filename": f"{i}.txt"})
    return docs


async def main() -> None:
    async with AsyncClient() as client:
        # Start all executions: one request for the whole batch (or one flows.run per document).
        executions = await client.flows.run_batch(
            "invoice-extraction",
            [{"input": {"document": doc, "stepDelay": INPUT["stepDelay"]}} for doc in documents(5)],
        )
        # Wait for all to complete, each released by the server the moment it ends.
        results = await client.runs.wait_all([e.id for e in executions], timeout=120.0)
        for result in results:
            if result.status == "success":
                print("Output:", result.output)
            else:
                print("Failed:", result.error.message if result.error else result.status.value)


if __name__ == "__main__":
    asyncio.run(main())
