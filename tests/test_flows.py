"""Authoring flows like FastAPI or Hatchet: types from annotations, optional output, isolation, and
every definition error raised at import with one line naming the function (issues 13 and 18)."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from orchestrator import RunContext
from orchestrator.flows import FlowDefinitionError, FlowModuleError, define, import_flow_module


class In(BaseModel):
    name: str


class Out(BaseModel):
    greeting: str


class Opaque:
    """Not a type pydantic can validate as JSON."""


async def annotated(ctx: RunContext, data: In) -> Out:
    return Out(greeting=data.name)


def plain(ctx: RunContext, data: In) -> dict[str, Any]:
    return {"greeting": data.name}


async def untyped_output(ctx: RunContext, data: In):  # type: ignore[no-untyped-def]
    return {"anything": [1, 2]}


def test_types_come_from_the_annotations() -> None:
    flow = define("f", annotated)
    assert flow.input_type is In and flow.output_type is Out
    assert flow.isolation == "async" and flow.is_async
    assert flow.info().input_schema["properties"] == {"name": {"title": "Name", "type": "string"}}
    assert flow.info().output_schema["required"] == ["greeting"]


def test_explicit_types_win_over_annotations() -> None:
    flow = define("f", annotated, input=dict, output=list[int])
    assert flow.input_type is dict and flow.output_schema() == {"items": {"type": "integer"}, "type": "array"}


def test_a_plain_def_runs_in_a_thread_by_default() -> None:
    flow = define("f", plain)
    assert flow.isolation == "thread" and not flow.is_async
    assert flow.output_schema() == {"additionalProperties": True, "type": "object"}


def test_no_output_type_means_any_json() -> None:
    flow = define("f", untyped_output)
    assert flow.output_type is None and flow.output_adapter is None
    assert flow.info().output_schema == {}


def test_plain_json_types_need_no_model() -> None:
    # issue 18: `input=dict, output=dict` used to register, then make GET /v1/flows answer 500
    flow = define("f", plain, input=dict, output=dict)
    info = flow.info()
    assert info.input_schema == {"additionalProperties": True, "type": "object"}


@pytest.mark.parametrize(
    ("fn", "kwargs", "says"),
    [
        (lambda ctx: None, {}, "takes two arguments (ctx, data); this one takes 1"),
        (lambda ctx, data, extra: None, {}, "takes two arguments (ctx, data); this one takes 3"),
        (lambda ctx, data: None, {}, "give the input type"),
        (plain, {"isolation": "async"}, "isolation='async' needs an async def"),
        (plain, {"isolation": "fibre"}, "isolation must be one of async, thread, process"),
        (plain, {"max_memory_mb": 100}, "max_memory_mb applies to isolation='process' only"),
        (plain, {"isolation": "process", "max_memory_mb": 0}, "max_memory_mb must be a positive integer"),
        (plain, {"timeout": 0}, "timeout must be a number of seconds > 0"),
        (plain, {"timeout": float("inf")}, "timeout must be a number of seconds > 0"),
        (plain, {"timeout": "30"}, "timeout must be a number of seconds > 0"),
        (plain, {"steps": -1}, "steps must be an integer >= 0"),
        (plain, {"steps": 10**5000}, "not an integer of 16610 bits"),
        (plain, {"input": Opaque}, "its input type"),
        (plain, {"output": RunContext}, "its output type"),
    ],
)
def test_definition_errors_name_the_function_and_what_to_change(
    fn: Any, kwargs: dict[str, Any], says: str
) -> None:
    with pytest.raises(FlowDefinitionError) as info:
        define("x", fn, **kwargs)
    message = str(info.value)
    assert says in message
    assert message.startswith("flow 'x' in ") and "test_flows.py:" in message  # the function's place
    assert "\n" not in message


def test_a_process_flow_must_be_importable_by_name() -> None:
    def nested(ctx: RunContext, data: In) -> None:
        return None

    with pytest.raises(FlowDefinitionError, match="module-level function"):
        define("x", nested, isolation="process")


def test_generators_and_bad_ids_are_refused() -> None:
    def gen(ctx: RunContext, data: In) -> Any:
        yield 1

    with pytest.raises(FlowDefinitionError, match="cannot be a generator"):
        define("x", gen)
    with pytest.raises(FlowDefinitionError, match="must match"):
        define("no spaces", plain)


def test_an_annotation_that_cannot_be_resolved_says_so() -> None:
    def later(ctx: RunContext, data: NotDefinedYet) -> None:  # type: ignore[name-defined]  # noqa: F821
        return None

    with pytest.raises(FlowDefinitionError, match="NotDefinedYet"):
        define("x", later)


def _module(tmp_path: Path, name: str, source: str) -> str:
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
    sys.path.insert(0, str(tmp_path))
    return name


@pytest.mark.parametrize(
    ("source", "says"),
    [
        ("def broken(:\n    pass\n", "syntax error at"),
        ("import not_a_real_package_xyz\n", "it imports 'not_a_real_package_xyz', not installed"),
        ("raise RuntimeError('boom at import')\n", "failed at"),
        (
            "from orchestrator import flow\n"
            "@flow('dup-x')\ndef one(ctx, data: dict) -> dict:\n    return data\n"
            "@flow('dup-x')\ndef two(ctx, data: dict) -> dict:\n    return data\n",
            "defined twice",
        ),
    ],
)
def test_a_broken_flows_module_is_one_clear_line(tmp_path: Path, source: str, says: str) -> None:
    name = _module(tmp_path, f"flows_broken_{abs(hash(source)) % 10**8}", source)
    try:
        with pytest.raises(FlowModuleError) as info:
            import_flow_module(name)
    finally:
        sys.path.remove(str(tmp_path))
    message = str(info.value)
    assert says in message and name in message and "\n" not in message


def test_a_missing_flows_module_says_where_it_looked() -> None:
    with pytest.raises(FlowModuleError, match="not found \\(looked in"):
        import_flow_module("no_such_flows_module_abc")
