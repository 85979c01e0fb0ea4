"""The webhooks package, and its tests, stand alone: nothing here needs the orchestrator."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys

import pytest

from tests import standalone
from tests.imports import ROOT, is_under, module_name, reachable_imports

WEBHOOKS = ROOT / "webhooks"
HERE = ROOT / "tests" / "webhooks"

CHILD = """
import importlib, json, pkgutil, sys
from tests.standalone import install
install()
import webhooks
names = sorted(m.name for m in pkgutil.walk_packages(webhooks.__path__, "webhooks."))
for name in names:
    importlib.import_module(name)
try:
    import orchestrator
    blocked = ""
except ModuleNotFoundError as exc:
    blocked = str(exc)
leaked = sorted(m for m in sys.modules if m.split(".")[0] == "orchestrator")
print(json.dumps({"imported": names, "blocked": blocked, "leaked": leaked}))
"""


def test_every_webhooks_module_imports_with_orchestrator_blocked() -> None:
    out = subprocess.run([sys.executable, "-c", CHILD], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    on_disk = {module_name(p) for p in WEBHOOKS.rglob("*.py")} - {"webhooks"}
    assert set(got["imported"]) == on_disk  # the walk missed nothing
    assert got["blocked"] == standalone.MESSAGE  # the blocker was really on
    assert got["leaked"] == []


def test_the_webhooks_tests_do_not_reach_orchestrator() -> None:
    if standalone.active():
        # `make pytest` runs this directory with -p tests.standalone: the import itself must fail.
        with pytest.raises(ModuleNotFoundError, match="orchestrator is blocked"):
            importlib.import_module("orchestrator")
    # Either way, no test module here (nor a helper or conftest it loads) names it.
    found = reachable_imports(sorted(HERE.rglob("*.py")), loaded=(ROOT / "tests" / "conftest.py",))
    offenders = [f"{i.where()}: {i.module}" for i in found if is_under(i.module, "orchestrator")]
    assert offenders == []
    assert any(i.module == "webhooks.dispatcher" for i in found)  # the scan did read the tests
