"""A pytest plugin (``-p tests.standalone``) that makes ``orchestrator`` unimportable for the session.

``make pytest`` runs ``tests/webhooks`` with it, proving the webhooks package and its tests stand
alone. :func:`install` is also what ``tests/webhooks/test_standalone.py`` runs in a subprocess.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from types import ModuleType
from typing import Any

import pytest

BLOCKED = "orchestrator"
MESSAGE = "orchestrator is blocked: tests/webhooks must run without it"


class OrchestratorBlocker:
    """A meta path finder that refuses `orchestrator` and every submodule."""

    def find_spec(
        self, name: str, path: Sequence[str] | None = None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if name == BLOCKED or name.startswith(BLOCKED + "."):
            raise ModuleNotFoundError(MESSAGE, name=name)
        return None


def active() -> bool:
    """Whether a blocker is installed in this interpreter."""
    return any(isinstance(finder, OrchestratorBlocker) for finder in sys.meta_path)


def install() -> None:
    """Block `orchestrator` from now on; refuse if some of it was imported already."""
    loaded = sorted(m for m in sys.modules if m == BLOCKED or m.startswith(BLOCKED + "."))
    if loaded:
        raise RuntimeError(f"cannot block orchestrator: already imported ({', '.join(loaded)})")
    if not active():
        sys.meta_path.insert(0, OrchestratorBlocker())


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config, parser: Any, args: list[str]) -> None:
    """Block before any conftest is imported, so the root conftest is held to it too."""
    try:
        install()
    except RuntimeError as exc:
        raise pytest.UsageError(str(exc)) from None
