"""Read a module's imports with ast (no import runs): what the layout and standalone tests check."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Import:
    """One imported module: ``import m`` gives names (), ``from m import a, b`` gives ("a", "b")."""

    path: Path
    line: int
    module: str
    names: tuple[str, ...] = ()

    def where(self) -> str:
        """file:line, relative to the repository."""
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def module_name(path: Path) -> str:
    """The dotted name of a module file under the repository root."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def module_file(name: str) -> Path | None:
    """The file of module `name` in this repository, if it is one."""
    base = ROOT.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _nodes(tree: ast.AST, *, import_time_only: bool) -> Iterator[ast.AST]:
    """Every node; with `import_time_only`, not function bodies nor ``if TYPE_CHECKING:`` blocks."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        if import_time_only and isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            continue
        children = list(ast.iter_child_nodes(node))
        if import_time_only and isinstance(node, ast.If) and _is_type_checking(node):
            children = [node.test, *node.orelse]
        stack.extend(children)


def imports(path: Path, *, import_time_only: bool = False) -> list[Import]:
    """The imports in `path` (relative ones resolved), in line order."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    found: list[Import] = []
    for node in _nodes(tree, import_time_only=import_time_only):
        if isinstance(node, ast.Import):
            found += [Import(path, node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                module = ".".join([*base, module] if module else base)
            found.append(Import(path, node.lineno, module, tuple(a.name for a in node.names)))
    return sorted(found, key=lambda i: i.line)


def imported_modules(found: Import) -> list[str]:
    """The modules an import loads: ``from pkg import sub`` loads ``pkg.sub`` when that is a module."""
    subs = [f"{found.module}.{n}" for n in found.names if module_file(f"{found.module}.{n}")]
    return subs or [found.module]


def reachable_imports(roots: list[Path], *, loaded: tuple[Path, ...] = ()) -> list[Import]:
    """All imports of `roots`, then the import-time ones of `loaded` and of every test module reached.

    `loaded` are modules that run before the roots (a conftest); test modules are those under tests/.
    """
    seen: set[tuple[Path, bool]] = set()
    out: list[Import] = []
    todo = [(path, True) for path in loaded] + [(path, False) for path in roots]
    while todo:
        path, import_time_only = todo.pop()
        if (path, import_time_only) in seen or (path, False) in seen:
            continue
        seen.add((path, import_time_only))
        for found in imports(path, import_time_only=import_time_only):
            out.append(found)
            for name in imported_modules(found):
                # the packages on the way are imported too (tests/__init__.py, ...)
                parts = name.split(".")
                for depth in range(1, len(parts) + 1):
                    target = module_file(".".join(parts[:depth]))
                    if target is not None and target.is_relative_to(ROOT / "tests"):
                        todo.append((target, True))
    return list(dict.fromkeys(out))


def is_under(module: str, package: str) -> bool:
    """Whether `module` is `package` or one of its submodules."""
    return module == package or module.startswith(package + ".")
