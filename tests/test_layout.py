"""The source layout holds: orchestrator uses webhooks only through a listed face, module size and docs."""

from __future__ import annotations

import ast

import webhooks
from tests.imports import ROOT, imported_modules, imports, is_under, module_file, module_name

SOURCES = sorted([*(ROOT / "orchestrator").rglob("*.py"), *(ROOT / "webhooks").rglob("*.py")])
# What orchestrator may import from webhooks, besides the names of `webhooks.__all__`.
FACE = (
    "webhooks.api.apidoc",
    "webhooks.api.inputs",
    "webhooks.api.routes",
    "webhooks.catalog",
    "webhooks.compression",
    "webhooks.errors",
    "webhooks.ids",
    "webhooks.metrics",
    "webhooks.models",
    "webhooks.outbox",
    "webhooks.replication",
    "webhooks.report",
    "webhooks.settings",
)
MAX_LINES = 400
# Test directories that are not one source package: suites across all of them.
ACROSS = {"faults", "security"}


def test_the_face_names_modules_that_exist() -> None:
    assert [m for m in FACE if module_file(m) is None] == []


def test_orchestrator_imports_webhooks_only_through_its_face() -> None:
    offenders = []
    for path in ROOT.joinpath("orchestrator").rglob("*.py"):
        for found in imports(path):
            for module in imported_modules(found):
                if not is_under(module, "webhooks"):
                    continue
                if module == "webhooks":
                    outside = [n for n in found.names if n not in webhooks.__all__]
                    if outside:
                        offenders.append(f"{found.where()}: from webhooks import {', '.join(outside)}")
                elif module not in FACE:
                    offenders.append(f"{found.where()}: {module}")
    assert offenders == [], (
        "orchestrator reaches past the webhooks face (webhooks.__all__ and FACE in tests/test_layout.py):\n"
        + "\n".join(sorted(offenders))
    )


def test_webhooks_never_imports_orchestrator() -> None:
    offenders = [
        f"{found.where()}: {found.module}"
        for path in ROOT.joinpath("webhooks").rglob("*.py")
        for found in imports(path)
        if is_under(found.module, "orchestrator")
    ]
    assert offenders == []


def test_every_module_opens_with_a_docstring() -> None:
    missing = [module_name(p) for p in SOURCES if ast.get_docstring(ast.parse(p.read_text())) is None]
    assert missing == []


def test_no_module_is_over_the_line_limit() -> None:
    long = {module_name(p): n for p in SOURCES if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert long == {}, f"modules over {MAX_LINES} lines (split them along their nouns): {long}"


def test_the_tests_mirror_the_packages() -> None:
    packages = {p.parent.name for p in SOURCES if p.name == "__init__.py"}
    directories = {p.parent.name for p in ROOT.joinpath("tests").glob("*/test_*.py")}
    assert directories - packages - ACROSS == set()
    assert {"runs", "api", "worker", "cli", "client", "webhooks"} <= directories


def test_the_webhooks_tests_name_the_orchestrators_event_types() -> None:
    # tests/webhooks spells the event types out (it runs without orchestrator); they must not drift.
    from orchestrator import events
    from tests.webhooks import helpers

    assert tuple(events.DEFAULT_EVENTS) == helpers.DEFAULT_EVENTS
    assert helpers.PROGRESS == events.PROGRESS
    assert tuple(events.COALESCED_EVENTS) == (helpers.PROGRESS,)
