"""webhook-orchestrator: typed async flows run on arq, every status change sent as a signed webhook."""

from __future__ import annotations

from orchestrator.context import RunContext
from orchestrator.errors import FlowError
from orchestrator.flows import flow
from orchestrator.models import Execution, ExecutionError, ExecutionStatus, Metrics

__version__ = "0.1.0"

__all__ = [
    "Execution",
    "ExecutionError",
    "ExecutionStatus",
    "FlowError",
    "Metrics",
    "RunContext",
    "__version__",
    "flow",
]
