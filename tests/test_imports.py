"""The import graph of nsdlib, read from its sources (SPEC §4): no circles, nothing imports
upward, no ``except ImportError`` around nsdlib's own modules, and an import of nsdlib's own
modules inside a function only where it defers a heavy optional dependency, with its reason."""

from __future__ import annotations

import ast
import collections
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "nsdlib"

# SPEC §4's floors, bottom up. A module may import its own floor or any floor below it.
FLOORS = {
    "nsdlib.names": 1, "nsdlib.guard": 1, "nsdlib.config": 1, "nsdlib.store": 1, "nsdlib.images": 1, "nsdlib.hrf": 1,
    "nsdlib.paper": 1, "nsdlib.assets": 1, "nsdlib.protocols": 1, "nsdlib.reconstructions": 1,
    "nsdlib.glm": 2, "nsdlib.ridge": 2, "nsdlib.noise": 2, "nsdlib.vdvae": 2, "nsdlib.clip": 2,
    "nsdlib.regressors": 2, "nsdlib.diffusion": 2, "nsdlib.metrics": 2,
    "nsdlib.nsd": 3, "nsdlib.mini": 3, "nsdlib.features": 3,
    "nsdlib.pipeline": 4,
    "nsdlib.report": 5, "nsdlib.teach": 5,
    "nsdlib.runner": 6, "nsdlib.batch": 6, "nsdlib.bookcheck": 6,
    "nsdlib.cli": 7, "nsdlib.__main__": 7,
}
# The vocabulary imports nothing of nsdlib.
IMPORTS_NOTHING = {"nsdlib.names"}
MAX_DEFERRED = 5


def _modules() -> dict[str, Path]:
    mods = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        mods[name] = path
    return mods


MODULES = _modules()


def _floor(module: str) -> int | None:
    """The floor of ``module``: its own entry or its package's (``nsdlib.mini.zoo`` → ``nsdlib.mini``)."""
    while module:
        if module in FLOORS:
            return FLOORS[module]
        module = module.rpartition(".")[0]
    return None


def _targets(module: str, node: ast.Import | ast.ImportFrom) -> list[str]:
    """The nsdlib modules an import statement in ``module`` names (package re-exports resolved to
    the package)."""
    is_package = MODULES[module].name == "__init__.py"
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name in MODULES]
    if node.level:
        base = module.split(".") if is_package else module.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        source = ".".join(base + ([node.module] if node.module else []))
    else:
        source = node.module or ""
    out = []
    for alias in node.names:
        if f"{source}.{alias.name}" in MODULES:
            out.append(f"{source}.{alias.name}")
        elif source in MODULES:
            out.append(source)
    return [t for t in out if t.startswith("nsdlib")]


def _imports():
    """(module, target, lineno, in_function) for every import of nsdlib's own modules."""
    rows = []
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text())
        in_function = set()
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                in_function.update(id(s) for s in ast.walk(node) if isinstance(s, (ast.Import, ast.ImportFrom)))
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for target in _targets(module, node):
                    if target != module:
                        rows.append((module, target, node.lineno, id(node) in in_function))
    return rows


IMPORTS = _imports()


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_every_module_has_a_floor():
    missing = sorted(m for m in MODULES if m != "nsdlib" and _floor(m) is None)
    assert not missing, f"modules without a floor in SPEC §4 (add them to FLOORS): {missing}"


def test_no_import_circles():
    edges = collections.defaultdict(set)
    for module, target, _, _ in IMPORTS:
        if MODULES[target].name != "__init__.py" or not module.startswith(target + "."):
            edges[module].add(target)
    assert _cycles(edges) == []


def test_cycle_finder_finds_a_circle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_nothing_imports_upward():
    upward = [f"{m}:{line} imports {t} (floor {_floor(m)} → {_floor(t)})"
              for m, t, line, _ in IMPORTS
              if m != "nsdlib" and None not in (_floor(m), _floor(t)) and _floor(t) > _floor(m)]
    assert upward == []


@pytest.mark.parametrize("module", sorted(IMPORTS_NOTHING))
def test_the_vocabulary_imports_nothing_of_nsdlib(module):
    assert [t for m, t, _, _ in IMPORTS if m == module] == []


def test_no_import_error_guards_around_nsdlib_modules():
    guards = []
    for module, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Try) and any(
                    h.type is not None and "ImportError" in ast.unparse(h.type) for h in node.handlers):
                if any(isinstance(s, (ast.Import, ast.ImportFrom)) and _targets(module, s) for s in node.body):
                    guards.append(f"{module}:{node.lineno}")
    assert guards == []


def test_in_function_imports_defer_a_heavy_dependency_and_say_so():
    deferred = [(m, line) for m, _, line, inside in IMPORTS if inside]
    assert len(set(deferred)) <= MAX_DEFERRED, f"too many in-function imports of nsdlib modules: {deferred}"
    silent = []
    for module, line in sorted(set(deferred)):
        lines = MODULES[module].read_text().splitlines()
        said = " ".join(lines[max(0, line - 2): line]).lower()
        if "defer" not in said:
            silent.append(f"{module}:{line}")
    assert silent == [], "an in-function import must say, on its line or the one above, what it defers"
