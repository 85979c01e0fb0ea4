"""How a flow call ended, as the run will report it: pure functions shared by every isolation.

They run where the flow ran (in the worker, or in its child process) so that only plain, checked
data crosses back: a success carries its output as JSON data; a failure an ``ExecutionError`` whose
code says what happened (API.md "Python": ``flow_error``, ``timeout``; and ``invalid_output``,
``invalid_error``, ``out_of_memory``, ``flow_crashed``).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from orchestrator.encoding import InvalidValue, check, describe, safe_text, shown
from orchestrator.errors import FlowError
from orchestrator.flows import Flow
from orchestrator.models import ExecutionError, ExecutionStatus
from webhooks.errors import field_errors

logger = logging.getLogger(__name__)

S = ExecutionStatus
ERROR_CODE = re.compile(r"^[a-z][a-z0-9_.-]{0,63}$")


class FlowExit(Exception):
    """A flow raised SystemExit or KeyboardInterrupt: its outcome, never the worker's end."""

    def __init__(self, exc: BaseException) -> None:
        super().__init__(describe(exc))
        self.exc = exc


@dataclass
class Outcome:
    """The end of one attempt: success with `output` (JSON data), or failed/cancelled with `error`."""

    status: ExecutionStatus
    output: Any = None
    error: ExecutionError | None = None


def returned(flow: Flow, value: Any) -> Outcome:
    """A flow returned `value`: validate it against the output type, then check it is storable JSON."""
    if flow.output_adapter is not None:
        try:
            typed = flow.output_adapter.validate_python(value)
            value = flow.output_adapter.dump_python(typed, mode="json", by_alias=True)
        except ValidationError as exc:
            return Outcome(
                S.failed,
                error=ExecutionError(
                    code="invalid_output",
                    message="the flow returned output that does not match its output type",
                    details={"fields": field_errors(exc, prefix="output")},
                ),
            )
        except Exception as exc:  # a value pydantic can validate but not serialize
            return invalid_output(InvalidValue("output", f"{type(exc).__name__}: {describe(exc)}"))
    try:
        return Outcome(S.success, output=check(value, "output"))
    except InvalidValue as exc:
        return invalid_output(exc)


def invalid_output(exc: InvalidValue) -> Outcome:
    """A value the flow handed over (output, partial output, usage) cannot be stored."""
    return Outcome(
        S.failed,
        error=ExecutionError(
            code="invalid_output",
            message=f"the flow handed over a value that cannot be stored as JSON: {safe_text(str(exc))}",
            details={"path": safe_text(exc.path), "reason": safe_text(exc.reason)},
        ),
    )


def raised(flow: Flow, exc: BaseException, *, run_id: str = "") -> Outcome:
    """A flow raised `exc`: its own FlowError (checked), a value it could not hand over, or a crash.

    A crash is logged with its traceback (for the flow's author; the run's error shows none).
    """
    if isinstance(exc, FlowError):
        try:
            code = check(exc.code, "error.code")
            if not isinstance(code, str) or not ERROR_CODE.match(code):
                raise InvalidValue("error.code", f"must match {ERROR_CODE.pattern}, not {shown(code)}")
            message = check(exc.message, "error.message")
            if not isinstance(message, str):
                raise InvalidValue("error.message", f"must be a string, not {type(message).__name__}")
            details = check(exc.details, "error.details")
            if not isinstance(details, dict):
                raise InvalidValue("error.details", f"must be an object, not {type(details).__name__}")
        except InvalidValue as bad:
            return Outcome(
                S.failed,
                error=ExecutionError(
                    code="invalid_error",
                    message=f"the flow raised a FlowError that cannot be stored: {safe_text(str(bad))}",
                    details={"path": safe_text(bad.path), "reason": safe_text(bad.reason)},
                ),
            )
        return Outcome(S.failed, error=ExecutionError(code=code, message=message, details=details))
    if isinstance(exc, InvalidValue):
        return invalid_output(exc)
    if isinstance(exc, FlowExit):
        exc = exc.exc
    name = type(exc).__name__
    logger.error("run %s flow %s raised %s", run_id, flow.id, name, exc_info=exc)
    return Outcome(
        S.failed,
        error=ExecutionError(code="flow_error", message=describe(exc), details={"type": name}),
    )


def timed_out(flow: Flow) -> Outcome:
    """The attempt ran past the flow's timeout."""
    return Outcome(
        S.failed,
        error=ExecutionError(
            code="timeout",
            message=f"the flow ran longer than its timeout of {flow.timeout:g} s",
            details={"timeout": flow.timeout},
        ),
    )


def out_of_memory(flow: Flow, used_mb: float) -> Outcome:
    """The attempt's child process grew past ``max_memory_mb`` and was killed."""
    return Outcome(
        S.failed,
        error=ExecutionError(
            code="out_of_memory",
            message=f"the flow used {used_mb:.0f} MB, over its limit of {flow.max_memory_mb} MB",
            details={"maxMemoryMb": flow.max_memory_mb, "usedMb": round(used_mb)},
        ),
    )


def crashed(flow: Flow, exitcode: int | None) -> Outcome:
    """The attempt's child process died on its own (a segfault, os._exit, a signal)."""
    return Outcome(
        S.failed,
        error=ExecutionError(
            code="flow_crashed",
            message=f"the process running the flow exited with code {exitcode}",
            details={"exitCode": exitcode},
        ),
    )
