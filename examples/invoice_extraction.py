"""Example flow: extract an invoice from a base64 document in three steps, reporting usage.

Served by `orchestrator dev` (ORCH_FLOWS=invoice_extraction with examples/ on the path). The
"extraction" is deterministic so the example runs anywhere: it reads `key: value` lines from the
decoded document text.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
from pathlib import Path

from pydantic import BaseModel, Field

from orchestrator import FlowError, RunContext, flow


class Document(BaseModel):
    base64: str = Field(min_length=1)
    filename: str = "document.pdf"
    mime_type: str = Field(default="application/pdf", alias="mimeType")


class InvoiceRequest(BaseModel):
    document: Document
    # Seconds to spend per step, so progress is visible in a demo.
    step_delay: float = Field(default=0.5, ge=0, le=30, alias="stepDelay")


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


def _fields(text: str) -> dict[str, str]:
    pairs = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            pairs[key.strip().lower()] = value.strip()
    return pairs


EXAMPLE = json.loads((Path(__file__).parent / "invoice.json").read_text())


@flow("invoice-extraction", steps=3, timeout=300, example=EXAMPLE)
async def extract(ctx: RunContext, data: InvoiceRequest) -> InvoiceData:
    """Extract invoice number, vendor, total and line items from a document."""
    try:
        raw = base64.b64decode(data.document.base64, validate=True)
    except (binascii.Error, ValueError):
        raise FlowError("invalid_document", "document.base64 is not valid base64") from None
    if raw.startswith(b"%PDF") and b"/Encrypt" in raw:
        raise FlowError("encrypted_pdf", "the PDF is encrypted", details={"page": 1})
    await asyncio.sleep(data.step_delay)
    text = raw.decode("utf-8", errors="replace")
    ctx.set_partial({"pages": max(1, text.count("\f") + 1)})
    await ctx.step("ocr")

    await asyncio.sleep(data.step_delay)
    fields = _fields(text)
    ctx.add_usage(tokens=len(text.split()) * 3 + 200, cost=0.0042)
    await ctx.step("extract")

    await asyncio.sleep(data.step_delay)
    items = [
        LineItem(description=k.removeprefix("item ").strip(), amount=float(v))
        for k, v in fields.items()
        if k.startswith("item ")
    ]
    total = float(fields.get("total", sum(i.amount for i in items)))
    await ctx.step("validate")
    return InvoiceData(
        invoiceNumber=fields.get("invoice", "unknown"),
        vendor=Vendor(name=fields.get("vendor", "unknown"), address=fields.get("address", "")),
        totalAmount=total,
        lineItems=items,
    )
