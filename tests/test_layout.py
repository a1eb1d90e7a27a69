"""The house rules of docs/DESIGN.md, checked on the source: imports point down, the app stays
torch-free, nothing imports the zoo, and no two project modules import each other in a circle.

Imports are read from the syntax tree (module-level and function-level alike), so a lazy import
counts as much as a top-level one.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ROOMS = ("kernels", "models", "backend", "app", "zoo")
# room -> rooms its modules may import (besides itself)
MAY_IMPORT = {
    "kernels": set(),
    "models": {"kernels"},
    "backend": {"models", "kernels"},
    "app": {"backend", "models"},
    "zoo": {"backend", "models", "kernels"},
}
HEAVY = ("torch", "transformers", "safetensors", "tokenizers", "triton", "fla")  # never reachable from app/


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for room in ROOMS for p in (REPO / room).rglob("*.py")}


MODULES = _modules()


def _imports(path: Path) -> set[str]:
    """Every absolute module name ``path`` imports (``from a.b import c`` gives a.b and a.b.c)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names}
    return out


def _project(name: str) -> str | None:
    """The project module ``name`` refers to (the longest prefix that is one), else None."""
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        if ".".join(parts[:i]) in MODULES:
            return ".".join(parts[:i])
    return None


IMPORTS = {m: _imports(p) for m, p in MODULES.items()}
GRAPH = {m: {d for d in map(_project, names) if d and d != m} for m, names in IMPORTS.items()}


def test_imports_point_down():
    bad = [f"{m} imports {d}" for m, deps in GRAPH.items() for d in deps
           if d.split(".")[0] != m.split(".")[0] and d.split(".")[0] not in MAY_IMPORT[m.split(".")[0]]]
    assert bad == []


def test_nothing_imports_the_zoo_outside_its_room():
    users = {p for p in REPO.glob("*/**/*.py") if p.parts[len(REPO.parts)] not in ("zoo", "tests", "benchmarks")}
    bad = [str(p.relative_to(REPO)) for p in users if any(n == "zoo" or n.startswith("zoo.") for n in _imports(p))]
    assert bad == []


def test_app_reaches_no_torch():
    """Every project module the app can reach (lazily or not) imports none of torch & co."""
    seen, todo = set(), [m for m in MODULES if m.split(".")[0] == "app"]
    while todo:
        m = todo.pop()
        if m not in seen:
            seen.add(m)
            todo += GRAPH[m]
    bad = sorted(f"{m} imports {n}" for m in seen for n in IMPORTS[m] if n.split(".")[0] in HEAVY)
    assert bad == []
    assert {"backend.spec", "models.ablation", "backend.store_reader"} <= seen  # the walk did reach the backend


def test_no_import_circles():
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(GRAPH[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while (w := stack.pop()) != v:
                comp.append(w)
            if comp:
                cycles.append(sorted([v, *comp]))

    for v in sorted(GRAPH):
        if v not in index:
            visit(v)
    assert cycles == []
    assert len(GRAPH) > 50 and sum(map(len, GRAPH.values())) > 100  # the graph is the real one
