"""The running ``orchestrator dev`` stack, as a small file other commands can find.

``orchestrator dev`` keeps its data in a folder (default ``./.data/dev``): the embedded Redis's
append-only file, ``key.json`` (the dev tenant's API key, so it stays the same across restarts) and,
while it runs, ``stack.json`` (API URL, Redis URL, key, process id). The client commands and
``orchestrator keys create`` read ``stack.json`` when nothing else says where to go, so after
``make dev`` the CLI works from the same folder with no exports.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import asdict, dataclass
from pathlib import Path

DEFAULT_DIR = Path(".data") / "dev"
TENANT = "dev"


@dataclass(frozen=True)
class DevStack:
    """Where a running dev stack answers."""

    base_url: str
    redis_url: str
    api_key: str
    pid: int

    def save(self, folder: Path) -> None:
        """Write ``stack.json`` (readable by the owner only: it holds the key)."""
        path = folder / "stack.json"
        path.write_text(json.dumps(asdict(self)))
        path.chmod(0o600)


def dev_key(folder: Path) -> str:
    """The dev tenant's API key kept in `folder` (made on first use, then the same every start)."""
    path = folder / "key.json"
    try:
        key = str(json.loads(path.read_text())["key"])
        if key:
            return key
    except (OSError, ValueError, KeyError, TypeError):
        pass
    folder.mkdir(parents=True, exist_ok=True)
    key = "sk_dev_" + secrets.token_urlsafe(16)
    path.write_text(json.dumps({"tenant": TENANT, "key": key}))
    path.chmod(0o600)
    return key


def running(folder: Path = DEFAULT_DIR) -> DevStack | None:
    """The dev stack whose ``stack.json`` is in `folder`, if its process still lives."""
    try:
        doc = json.loads((folder / "stack.json").read_text())
        found = DevStack(
            base_url=str(doc["base_url"]),
            redis_url=str(doc["redis_url"]),
            api_key=str(doc["api_key"]),
            pid=int(doc["pid"]),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None
    try:
        os.kill(found.pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # alive, another user's
    return found


def forget(folder: Path) -> None:
    """Remove ``stack.json`` (the stack stopped)."""
    (folder / "stack.json").unlink(missing_ok=True)
