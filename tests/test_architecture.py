"""The package's shape is its architecture: these tests keep it so.

Read from the modules' own import statements (every import, those inside functions
and ``TYPE_CHECKING`` blocks included), not from what happens to be loaded.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

#: The flow of a request, bottom up: a package may import its own modules and those
#: of packages of a lower rank, never one of the same or a higher rank.
RANKS = {
    "riskgate": 0, "errors": 0,
    "event": 1, "store": 1,
    "decision": 2, "model": 2,
    "config": 3,
    "signals": 4, "observability": 4,
    "rules": 5,
    "engine": 6,
    "service": 7,
    "replay": 8, "http": 8,
    "cli": 9, "__main__": 10,
}
#: Only the HTTP adapter speaks HTTP.
HTTP_ONLY = ("starlette",)


def _modules() -> dict[str, Path]:
    modules = {}
    for path in sorted((SRC / "riskgate").rglob("*.py")):
        parts = path.relative_to(SRC).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


MODULES = _modules()


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports: ``from a.b import c`` is ``a.b.c`` when that is a
    module of ours, else ``a.b``."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in MODULES else node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


IMPORTS = {name: _imports(path) for name, path in MODULES.items()}


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def _cycle() -> list[str] | None:
    """One import cycle among our modules, as the path that closes it, or None."""
    ours = {name: sorted(i for i in found if i in MODULES) for name, found in IMPORTS.items()}
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> list[str] | None:
        if module in path:
            return [*path[path.index(module):], module]
        if module in done:
            return None
        for imported in ours[module]:
            found = visit(imported, [*path, module])
            if found:
                return found
        done.add(module)
        return None

    for module in ours:
        found = visit(module, [])
        if found:
            return found
    return None


def test_no_module_imports_itself_back_through_any_path() -> None:
    cycle = _cycle()
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_every_package_is_ranked() -> None:
    assert {_package(m) for m in MODULES} <= set(RANKS), "add the new package to RANKS"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_nothing_reaches_back_up_the_flow(module: str) -> None:
    rank = RANKS[_package(module)]
    upward = sorted(
        imported for imported in IMPORTS[module]
        if imported.startswith("riskgate") and _package(imported) != _package(module)
        and RANKS[_package(imported)] >= rank
    )
    assert not upward, f"{module} (rank {rank}) imports {upward}"


@pytest.mark.parametrize("module", sorted(m for m in MODULES if _package(m) != "http"))
def test_only_the_http_package_imports_starlette(module: str) -> None:
    http = sorted(i for i in IMPORTS[module] if i.split(".")[0] in HTTP_ONLY)
    assert not http, f"{module} imports {http}; move HTTP code to riskgate.http"


def test_the_cycle_check_finds_a_planted_cycle() -> None:
    # Guards the guard: on a graph with a planted cycle the walk must find it.
    IMPORTS["riskgate.errors"].add("riskgate.engine.core")
    try:
        cycle = _cycle()
    finally:
        IMPORTS["riskgate.errors"].discard("riskgate.engine.core")
    assert cycle is not None and "riskgate.errors" in cycle
