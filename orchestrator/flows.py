"""Flow registry: the ``@flow`` decorator and loading the modules named in ``ORCH_FLOWS``."""

from __future__ import annotations

import importlib
import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel

from orchestrator.models import FlowInfo

if TYPE_CHECKING:
    from orchestrator.context import RunContext

InT = TypeVar("InT", bound=BaseModel)
OutT = TypeVar("OutT", bound=BaseModel)
FlowFn = Callable[["RunContext", Any], Awaitable[Any]]

FLOW_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


@dataclass(frozen=True)
class Flow:
    """A registered flow: its function, typed input and output, steps and timeout."""

    id: str
    fn: FlowFn
    input_model: type[BaseModel]
    output_model: type[BaseModel]
    steps: int | None
    timeout: float
    description: str

    def info(self) -> FlowInfo:
        """The flow as the API shows it."""
        return FlowInfo(
            id=self.id,
            description=self.description,
            input_schema=self.input_model.model_json_schema(),
            output_schema=self.output_model.model_json_schema(),
            steps_total=self.steps,
            timeout=self.timeout,
        )


_FLOWS: dict[str, Flow] = {}


def flow(
    flow_id: str,
    *,
    input: type[InT],
    output: type[OutT],
    steps: int | None = None,
    timeout: float = 300.0,
    description: str | None = None,
) -> Callable[[Callable[[RunContext, InT], Awaitable[OutT]]], Callable[[RunContext, InT], Awaitable[OutT]]]:
    """Register an async function as the flow `flow_id`."""
    if not FLOW_ID.match(flow_id):
        raise ValueError(f"flow id {flow_id!r} must match {FLOW_ID.pattern}")
    if timeout <= 0:
        raise ValueError("timeout must be > 0")
    if steps is not None and steps < 0:
        raise ValueError("steps must be >= 0")

    def register(
        fn: Callable[[RunContext, InT], Awaitable[OutT]],
    ) -> Callable[[RunContext, InT], Awaitable[OutT]]:
        existing = _FLOWS.get(flow_id)
        if existing is not None and existing.fn is not fn:
            raise ValueError(f"flow {flow_id!r} is registered twice")
        doc = (fn.__doc__ or "").strip().splitlines()
        _FLOWS[flow_id] = Flow(
            id=flow_id,
            fn=fn,
            input_model=input,
            output_model=output,
            steps=steps,
            timeout=float(timeout),
            description=description if description is not None else (doc[0] if doc else ""),
        )
        return fn

    return register


class Registry:
    """The flows one process serves."""

    def __init__(self, flows: Iterable[Flow]) -> None:
        self._flows = {f.id: f for f in flows}

    def get(self, flow_id: str) -> Flow | None:
        """The flow registered under `flow_id`, or None."""
        return self._flows.get(flow_id)

    def all(self) -> list[Flow]:
        """Every flow, sorted by id."""
        return [self._flows[k] for k in sorted(self._flows)]

    @property
    def max_timeout(self) -> float:
        """The longest flow timeout (arq's job timeout must exceed it)."""
        return max((f.timeout for f in self._flows.values()), default=300.0)


def load_registry(modules: Iterable[str]) -> Registry:
    """Import each module (whose ``@flow`` decorators register flows) and return every flow known."""
    for name in modules:
        importlib.import_module(name)
    return Registry(_FLOWS.values())
