"""Type-safe results: parse the output into your model (seed: "Type-Safe Results")."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, Field

from orchestrator.client import Client

INPUT = json.loads(Path(__file__).with_name("invoice.json").read_text())


class Vendor(BaseModel):
    name: str
    address: str


class LineItem(BaseModel):
    description: str
    amount: float


class InvoiceData(BaseModel):
    invoice_number: str = Field(alias="invoiceNumber")
    vendor: Vendor
    total_amount: float = Field(alias="totalAmount")
    line_items: list[LineItem] = Field(alias="lineItems")


def main() -> None:
    with Client() as client:
        execution = client.flows.run("invoice-extraction", INPUT)
        result = client.runs.wait_for_completion(execution.id, output_type=InvoiceData)
        if result.status == "success" and result.output is not None:
            invoice: InvoiceData = result.output  # a real InvoiceData, validated
            print("Invoice:", invoice.invoice_number)
            print("Total:", invoice.total_amount)


if __name__ == "__main__":
    main()
