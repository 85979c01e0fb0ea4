"""webhook-orchestrator: typed async flows run on arq, every status change sent as a signed webhook."""

from __future__ import annotations

from .context import RunContext
from .errors import FlowError
from .models import Execution, ExecutionError, ExecutionStatus, Metrics
from .registry import flow

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
