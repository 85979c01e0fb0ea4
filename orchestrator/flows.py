"""Flows: the ``@flow`` decorator, the registry, and loading the modules named in ``ORCH_FLOWS``.

A flow is a function ``(ctx, data) -> output``. Its input and output types come from its
annotations, as FastAPI and Hatchet read them (explicit ``input=`` / ``output=`` win); the output is
optional (any JSON when absent). Types are anything pydantic can validate and describe as JSON
Schema (models, ``dict``, ``list[int]``...). Every definition error is raised at import, naming the
function and what is wrong, so it can never surface later as a request or run error.

Isolation (how an attempt runs inside the worker; see the README "Writing flows"):
``async`` (on the worker's event loop; the default for ``async def``), ``thread`` (its own thread;
the default for ``def``), ``process`` (a pre-started child process that can be killed).
"""

from __future__ import annotations

import importlib
import inspect
import os
import re
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import TypeAdapter

from orchestrator.encoding import shown
from orchestrator.models import FlowInfo

Isolation = Literal["async", "thread", "process"]
ISOLATIONS: tuple[Isolation, ...] = ("async", "thread", "process")
FLOW_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
MAX_TIMEOUT = 30 * 24 * 3600  # seconds: a month; arq's job timeout is derived from the longest
MAX_STEPS = 1_000_000
F = TypeVar("F", bound=Callable[..., Any])


class FlowDefinitionError(TypeError):
    """A flow is defined wrongly; the message names the flow, its function and what to change."""


def _where(fn: Callable[..., Any]) -> str:
    code = getattr(fn, "__code__", None)
    if code is None:
        return getattr(fn, "__qualname__", repr(fn))
    try:
        path = Path(code.co_filename).resolve().relative_to(Path.cwd())
    except ValueError:
        path = Path(code.co_filename)
    return f"{getattr(fn, '__qualname__', fn)} ({path}:{code.co_firstlineno})"


@dataclass(frozen=True)
class Flow:
    """A registered flow: its function, typed input and output, steps, timeout and isolation."""

    id: str
    fn: Callable[..., Any]
    input_type: Any
    output_type: Any | None  # None: any JSON value
    steps: int | None
    timeout: float
    description: str
    isolation: Isolation
    max_memory_mb: int | None = None
    example: Any = None  # an input, shown in the OpenAPI document and the docs
    input_adapter: TypeAdapter[Any] = field(repr=False, compare=False, kw_only=True)
    output_adapter: TypeAdapter[Any] | None = field(repr=False, compare=False, kw_only=True)

    @property
    def is_async(self) -> bool:
        """True for an ``async def`` flow."""
        return inspect.iscoroutinefunction(self.fn)

    @property
    def location(self) -> tuple[str, str]:
        """(module, qualified name): how a child process finds the function again."""
        return self.fn.__module__, self.fn.__qualname__

    def input_schema(self) -> dict[str, Any]:
        """JSON Schema of the input (with the flow's example under ``examples``, JSON Schema 2020-12)."""
        schema = self.input_adapter.json_schema(by_alias=True)
        if self.example is not None:
            schema["examples"] = [self.example]
        return schema

    def output_schema(self) -> dict[str, Any]:
        """JSON Schema of the output (``{}``, any JSON value, when the flow declares none)."""
        if self.output_adapter is None:
            return {}
        return self.output_adapter.json_schema(by_alias=True, mode="serialization")

    def info(self) -> FlowInfo:
        """The flow as the API shows it."""
        return FlowInfo(
            id=self.id,
            description=self.description,
            input_schema=self.input_schema(),
            output_schema=self.output_schema(),
            steps_total=self.steps,
            timeout=self.timeout,
        )


_FLOWS: dict[str, Flow] = {}
_MISSING = inspect.Parameter.empty


def _adapter(flow_id: str, fn: Callable[..., Any], what: str, type_: Any) -> TypeAdapter[Any]:
    try:
        adapter: TypeAdapter[Any] = TypeAdapter(type_)
        adapter.json_schema(by_alias=True)
    except Exception as exc:
        raise FlowDefinitionError(
            f"flow {flow_id!r} in {_where(fn)}: its {what} type {type_!r} cannot be validated as JSON "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); use a pydantic model "
            "or a JSON type such as dict or list[str]"
        ) from None
    return adapter


def _annotation(flow_id: str, fn: Callable[..., Any], name: str) -> Any:
    """The resolved annotation `name` of `fn` (a parameter, or "return"), or _MISSING.

    Only what is needed is evaluated, so a ``ctx`` annotation imported under TYPE_CHECKING is fine.
    """
    raw = inspect.get_annotations(fn).get(name, _MISSING)
    if not isinstance(raw, str):
        return raw
    try:
        return eval(raw, getattr(fn, "__globals__", {}))  # the module's own annotation text
    except Exception as exc:  # an annotation naming something not defined (yet)
        raise FlowDefinitionError(
            f"flow {flow_id!r} in {_where(fn)}: the annotation {raw!r} cannot be resolved ({exc}); define "
            "the type before the function or pass input=/output= explicitly"
        ) from None


def define(
    flow_id: str,
    fn: Callable[..., Any],
    *,
    input: Any = None,
    output: Any = None,
    steps: int | None = None,
    timeout: float = 300.0,
    description: str | None = None,
    isolation: Isolation | None = None,
    max_memory_mb: int | None = None,
    example: Any = None,
) -> Flow:
    """Check a flow definition and build its Flow; FlowDefinitionError says what is wrong."""

    def wrong(what: str) -> FlowDefinitionError:
        return FlowDefinitionError(f"flow {flow_id!r} in {_where(fn)}: {what}")

    if not isinstance(flow_id, str) or not FLOW_ID.match(flow_id):
        raise FlowDefinitionError(f"flow id {flow_id!r} in {_where(fn)} must match {FLOW_ID.pattern}")
    if not callable(fn) or inspect.isclass(fn):
        raise wrong("@flow decorates a function")
    if inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn):
        raise wrong("a flow returns its output; it cannot be a generator")
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0 < timeout <= MAX_TIMEOUT:
        raise wrong(f"timeout must be a number of seconds > 0 and <= {MAX_TIMEOUT}, not {shown(timeout)}")
    if steps is not None and (
        isinstance(steps, bool) or not isinstance(steps, int) or not 0 <= steps <= MAX_STEPS
    ):
        raise wrong(f"steps must be an integer >= 0 and <= {MAX_STEPS}, not {shown(steps)}")
    params = [
        p
        for p in inspect.signature(fn).parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is _MISSING
    ]
    if len(params) != 2:
        raise wrong(f"a flow takes two arguments (ctx, data); this one takes {len(params)}")
    in_type = input if input is not None else _annotation(flow_id, fn, params[1].name)
    if in_type is _MISSING:
        raise wrong(
            f"give the input type: annotate the data parameter ({params[1].name}: MyModel) or pass input="
        )
    out_type = output if output is not None else _annotation(flow_id, fn, "return")
    if out_type in (_MISSING, Any, None, type(None)):
        out_type = None  # declares nothing about the output: any JSON value
    is_async = inspect.iscoroutinefunction(fn)
    mode = isolation or ("async" if is_async else "thread")
    if mode not in ISOLATIONS:
        raise wrong(f"isolation must be one of {', '.join(ISOLATIONS)}, not {shown(isolation)}")
    if mode == "async" and not is_async:
        raise wrong("isolation='async' needs an async def (a plain def runs in 'thread' or 'process')")
    if mode == "process" and "<locals>" in fn.__qualname__:
        raise wrong("isolation='process' needs a module-level function (a child process imports it by name)")
    if max_memory_mb is not None:
        if mode != "process":
            raise wrong("max_memory_mb applies to isolation='process' only (a thread's memory is shared)")
        if isinstance(max_memory_mb, bool) or not isinstance(max_memory_mb, int) or max_memory_mb <= 0:
            raise wrong(f"max_memory_mb must be a positive integer, not {shown(max_memory_mb)}")
    input_adapter = _adapter(flow_id, fn, "input", in_type)
    if example is not None:
        try:
            input_adapter.validate_python(example)
        except Exception as exc:
            first = str(exc).splitlines()
            raise wrong(
                f"its example is not a valid input ({first[1].strip() if len(first) > 1 else exc})"
            ) from None
    doc = (fn.__doc__ or "").strip().splitlines()
    return Flow(
        id=flow_id,
        fn=fn,
        input_type=in_type,
        output_type=out_type,
        steps=steps,
        timeout=float(timeout),
        description=description if description is not None else (doc[0] if doc else ""),
        isolation=mode,
        max_memory_mb=max_memory_mb,
        example=example,
        input_adapter=input_adapter,
        output_adapter=_adapter(flow_id, fn, "output", out_type) if out_type is not None else None,
    )


def flow(
    flow_id: str,
    *,
    input: Any = None,
    output: Any = None,
    steps: int | None = None,
    timeout: float = 300.0,
    description: str | None = None,
    isolation: Isolation | None = None,
    max_memory_mb: int | None = None,
    example: Any = None,
) -> Callable[[F], F]:
    """Register a function as the flow `flow_id` (API.md "Python"); the function is returned unchanged.

    Args:
        flow_id: the id in URLs (``/v1/flows/{flowId}/runs``), ``[A-Za-z0-9][A-Za-z0-9_.-]{0,127}``.
        input, output: the data types; default: the function's annotations. No output: any JSON.
        steps: how many ``ctx.step()`` calls a run makes (``stepsTotal``), if known.
        timeout: seconds an attempt may run; then it ends ``failed`` with code ``timeout``.
        description: shown by ``GET /v1/flows``; default: the docstring's first line.
        isolation: ``async``, ``thread`` or ``process`` (default: async for ``async def``, else thread).
        max_memory_mb: with ``process``, an attempt whose child grows past this ends ``out_of_memory``.
        example: an input (validated now), shown in ``/docs`` and the input schema's ``examples``.

    Raises:
        FlowDefinitionError: at import, for any mistake in the definition.
    """

    def register(fn: F) -> F:
        defined = define(
            flow_id,
            fn,
            input=input,
            output=output,
            steps=steps,
            timeout=timeout,
            description=description,
            isolation=isolation,
            max_memory_mb=max_memory_mb,
            example=example,
        )
        existing = _FLOWS.get(flow_id)
        if existing is not None and existing.location != defined.location:
            raise FlowDefinitionError(
                f"flow {flow_id!r} is defined twice: {_where(existing.fn)} and {_where(fn)}"
            )
        _FLOWS[flow_id] = defined
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


class FlowModuleError(ImportError):
    """A module named in ``ORCH_FLOWS`` could not be imported; the message is one line with its place."""


def import_flow_module(name: str) -> None:
    """Import one flows module the way ``uvicorn`` and ``celery`` find apps: the current directory first.

    Raises FlowModuleError (one line: module, file and line, what went wrong) for a missing module,
    a syntax error, a failing import inside it, or a FlowDefinitionError.
    """
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        importlib.import_module(name)
    except FlowDefinitionError as exc:
        raise FlowModuleError(f"flows module {name!r}: {exc}") from exc
    except SyntaxError as exc:
        where = f"{exc.filename}:{exc.lineno}" if exc.filename else name
        raise FlowModuleError(f"flows module {name!r}: syntax error at {where}: {exc.msg}") from exc
    except ModuleNotFoundError as exc:
        if exc.name == name or (exc.name and name.startswith(exc.name + ".")):
            raise FlowModuleError(
                f"flows module {name!r} not found (looked in {cwd} and sys.path; set PYTHONPATH or "
                "run from the folder that holds it)"
            ) from exc
        raise FlowModuleError(f"flows module {name!r}: it imports {exc.name!r}, not installed") from exc
    except Exception as exc:
        frame = _innermost(exc, name)
        raise FlowModuleError(
            f"flows module {name!r} failed at {frame}: {type(exc).__name__}: {exc}"
        ) from None


def _innermost(exc: BaseException, module: str) -> str:
    tb = exc.__traceback__
    found = module
    while tb is not None:
        code = tb.tb_frame.f_code
        if not code.co_filename.startswith(("<frozen", sys.prefix)):
            found = f"{code.co_filename}:{tb.tb_lineno}"
        tb = tb.tb_next
    return found


def load_registry(modules: Iterable[str]) -> Registry:
    """Import each module (whose ``@flow`` decorators register flows) and return every flow known."""
    for name in modules:
        import_flow_module(name)
    return Registry(_FLOWS.values())
