"""The Python SDK: ``AsyncClient`` (aiohttp) and ``Client`` (sync), with the same resources.

It imports only pydantic, aiohttp and the shared models: never starlette, arq or redis.
"""

from __future__ import annotations

from orchestrator.client._async import AsyncClient
from orchestrator.client._sync import Client
from orchestrator.client.errors import (
    APIConnectionError,
    APIError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    InternalServerError,
    NotFoundError,
    PayloadTooLargeError,
    RateLimitError,
    ServiceUnavailableError,
    TimeoutError,
    ValidationError,
)
from orchestrator.client.pagination import AsyncPaginator
from orchestrator.models import Execution, ExecutionError, ExecutionStatus, FlowInfo, Metrics, RunEvent

__all__ = [
    "APIConnectionError",
    "APIError",
    "APIStatusError",
    "APITimeoutError",
    "AsyncClient",
    "AsyncPaginator",
    "AuthenticationError",
    "BadRequestError",
    "Client",
    "ConflictError",
    "Execution",
    "ExecutionError",
    "ExecutionStatus",
    "FlowInfo",
    "InternalServerError",
    "Metrics",
    "NotFoundError",
    "PayloadTooLargeError",
    "RateLimitError",
    "RunEvent",
    "ServiceUnavailableError",
    "TimeoutError",
    "ValidationError",
]
