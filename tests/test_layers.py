"""The harness's imports point one way (docs/architecture.md): no cycles, no upward imports.

Imports are read from the source with :mod:`ast`.  *Module-level* imports are
the statements executed when a module is first imported (top level, and inside
top-level ``try``/``if`` blocks other than ``if TYPE_CHECKING:``); imports
inside functions are lazy and only count for the layer rules, which hold for
every import wherever it is written.
"""

from __future__ import annotations

import ast
from pathlib import Path


import fgbench

ROOT = Path(fgbench.__file__).resolve().parent
PACKAGE = "fgbench"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _resolve(module: str, name: str | None) -> str | None:
    """The fgbench module that ``from module import name`` (or ``import module``) loads, if any."""
    if name and f"{module}.{name}" in MODULES:
        return f"{module}.{name}"
    return module if module in MODULES else None


def _imports(tree: ast.AST, current: str, module_level: bool) -> set[str]:
    found: set[str] = set()

    def visit(node: ast.AST, top: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                if not module_level:
                    visit(child, False)
                continue
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue
            if isinstance(child, ast.ClassDef):
                visit(child, top)
                continue
            if isinstance(child, ast.Import):
                for alias in child.names:
                    if alias.name.split(".")[0] == PACKAGE and (target := _resolve(alias.name, None)):
                        found.add(target)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    pkg = current if MODULES[current].name == "__init__.py" else current.rsplit(".", 1)[0]
                    for _ in range(child.level - 1):
                        pkg = pkg.rsplit(".", 1)[0]
                    base = f"{pkg}.{base}" if base else pkg
                if base.split(".")[0] != PACKAGE:
                    continue
                for alias in child.names:
                    if target := _resolve(base, alias.name):
                        found.add(target)
            else:
                visit(child, top)

    visit(tree, True)
    found.discard(current)
    return found


def import_graph(module_level: bool) -> dict[str, set[str]]:
    """``module -> fgbench modules it imports`` for every module of the package."""
    return {name: _imports(ast.parse(path.read_text(encoding="utf-8")), name, module_level)
            for name, path in MODULES.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` as a list of modules (first == last), or None."""
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    stack: list[str] = []

    def dfs(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := dfs(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := dfs(node)):
            return cycle
    return None


def test_no_import_cycle_among_module_level_imports() -> None:
    cycle = find_cycle(import_graph(module_level=True))
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_cycle_finder_finds_a_planted_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def _importers(prefix: str, targets: tuple[str, ...]) -> list[str]:
    graph = import_graph(module_level=False)
    return sorted(f"{m} imports {t}" for m, deps in graph.items() if m == prefix or m.startswith(prefix + ".")
                  for t in deps if any(t == x or t.startswith(x + ".") for x in targets))


def test_engine_never_imports_the_cli() -> None:
    assert _importers("fgbench.engine", ("fgbench.cli",)) == []


#: The layers of docs/architecture.md, bottom up; a module may import only from its own layer or below.
#: Within layer 2 the packages are siblings that may use each other's modules only as listed in SIBLINGS.
LAYERS: list[tuple[str, ...]] = [
    ("fgbench.errors", "fgbench._names", "fgbench._atomic", "fgbench._faults", "fgbench._version", "fgbench._values"),
    ("fgbench.protocol", "fgbench.methods", "fgbench.backbones", "fgbench.records", "fgbench.data.base",
     "fgbench.metrics.base", "fgbench.hookspecs"),
    ("fgbench.blocks", "fgbench.data", "fgbench.data.valsplit", "fgbench.metrics", "fgbench.results"),
    ("fgbench.builtins", "fgbench._plugins"),
    ("fgbench.engine", "fgbench.engine.sampling"),
    ("fgbench.testing", "fgbench._scaffold"),
    ("fgbench.cli", "fgbench.__main__"),
]
#: modules whose subject is the facade itself (the API reference renders ``fgbench.__all__``)
FACADE_READERS = {"fgbench.cli._api_reference"}
#: layer-2 packages that another layer-2 package may import (data path: data -> metrics -> results)
SIBLINGS = {"fgbench.results": {"fgbench.metrics"}}


def _owner(module: str) -> tuple[int, str]:
    """(layer index, the most specific layer entry) of ``module``."""
    best: tuple[int, str] | None = None
    for index, entries in enumerate(LAYERS):
        for entry in entries:
            if module == entry or module.startswith(entry + "."):
                if best is None or len(entry) > len(best[1]):
                    best = (index, entry)
    assert best is not None, f"{module} is in no layer of LAYERS: add it (and to docs/architecture.md)"
    return best


def test_every_module_has_a_layer() -> None:
    for module in MODULES:
        if module != PACKAGE:
            _owner(module)


def test_imports_point_down_the_layers() -> None:
    """Every import (module-level or lazy) goes to the same layer or below; siblings only as allowed."""
    wrong = []
    for module, deps in import_graph(module_level=False).items():
        if module == PACKAGE:
            continue  # the public facade re-exports from every layer it documents
        layer, entry = _owner(module)
        for dep in deps:
            if dep == PACKAGE:
                if module not in FACADE_READERS:
                    wrong.append(f"{module} imports the package facade fgbench (import the defining module instead)")
                continue
            dep_layer, dep_entry = _owner(dep)
            if dep_layer > layer:
                wrong.append(f"{module} (layer {layer}) imports {dep} (layer {dep_layer})")
            elif dep_layer == layer == 2 and dep_entry != entry and dep_entry not in SIBLINGS.get(entry, set()) \
                    and not dep.startswith(entry):
                wrong.append(f"{module} ({entry}) imports sibling {dep} ({dep_entry})")
    assert wrong == []


def test_engine_never_imports_results() -> None:
    assert _importers("fgbench.engine", ("fgbench.results",)) == []


def test_data_and_metrics_never_import_the_plugin_machinery() -> None:
    assert _importers("fgbench.data", ("fgbench.hookspecs", "fgbench._plugins")) == []
    assert _importers("fgbench.metrics", ("fgbench.hookspecs", "fgbench._plugins")) == []
