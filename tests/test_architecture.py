"""The package's shape, read from its source with ``ast`` (see ARCHITECTURE.md).

Every ``import`` counts, including those inside functions: a circle or an upward import
that only runs late is still a circle. Run ``python tests/test_architecture.py`` to print
the graph's circles, upward imports and sizes.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path
from typing import Dict, Iterator, List, Set, Tuple

ROOT = Path(__file__).resolve().parents[1]

# Lower layers never import higher ones; a layer may import its own rank and below.
LAYERS: Dict[str, int] = {
    "contrastive.core": 0,
    "contrastive.config": 1,
    "contrastive.losses": 2, "contrastive.metrics": 2, "contrastive.clustering": 2,
    "contrastive.memory": 2, "contrastive.backbones": 2,
    "contrastive.augment": 3,
    "contrastive.data": 4,
    "contrastive.engine": 5,
    "contrastive.methods": 6,
    "contrastive.evaluation": 7,
    "contrastive.cli": 8, "contrastive.api": 8,
}
MAX_MODULE_LINES = 300
MAX_FUNCTION_LINES = 60


def package_modules() -> Dict[str, Path]:
    """Dotted module name -> source file, for the library and the built-in methods."""
    found = {}
    for base, package in ((ROOT / "contrastive", "contrastive"), (ROOT / "methods", "contrastive.methods")):
        for path in sorted(base.rglob("*.py")):
            parts = list(path.relative_to(base).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join([package, *parts])] = path
    return found


def _imported_names(path: Path, module: str) -> Iterator[str]:
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = module.split(".")[: len(module.split(".")) - node.level + (1 if is_package else 0)]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            yield name
            yield from (f"{name}.{alias.name}" for alias in node.names)


def import_graph() -> Dict[str, Set[str]]:
    """Module -> the package's modules it imports (a name resolves to its longest module prefix)."""
    modules = package_modules()
    graph: Dict[str, Set[str]] = {}
    for module, path in modules.items():
        targets = set()
        for name in _imported_names(path, module):
            parts = name.split(".")
            while parts and ".".join(parts) not in modules:
                parts.pop()
            target = ".".join(parts)
            if target and target != module and target != "contrastive":
                targets.add(target)
        graph[module] = targets
    return graph


def layer_of(module: str) -> int:
    for prefix, rank in sorted(LAYERS.items(), key=lambda kv: -len(kv[0])):
        if module == prefix or module.startswith(prefix + "."):
            return rank
    return max(LAYERS.values())  # the root package's __init__ is the public facade


def upward_imports(graph: Dict[str, Set[str]]) -> List[Tuple[str, str]]:
    return sorted((a, b) for a, targets in graph.items() for b in targets if layer_of(b) > layer_of(a))


def circles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    found: List[List[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def long_functions(limit: int = MAX_FUNCTION_LINES) -> List[Tuple[str, int]]:
    out = []
    for module, path in package_modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > limit:
                    out.append((f"{module}.{node.name}", length))
    return sorted(out, key=lambda kv: -kv[1])


def long_modules(limit: int = MAX_MODULE_LINES) -> List[Tuple[str, int]]:
    sizes = [(m, len(p.read_text().splitlines())) for m, p in package_modules().items()]
    return sorted([(m, n) for m, n in sizes if n > limit], key=lambda kv: -kv[1])


def test_no_import_circles():
    assert circles(import_graph()) == []


def test_imports_point_down_the_layers():
    assert upward_imports(import_graph()) == []


def test_every_module_has_a_layer():
    unplaced = [m for m in package_modules() if m != "contrastive" and layer_of(m) == max(LAYERS.values())
                and not any(m == p or m.startswith(p + ".") for p in LAYERS)]
    assert unplaced == []


def test_modules_and_functions_stay_small():
    assert long_modules() == []
    assert long_functions() == []


def test_the_graph_reader_sees_function_level_and_relative_imports(tmp_path):
    # The checks above can only fail if the reader sees every kind of import.
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from contrastive.engine import run\nfrom . import sibling\n")
    names = set(_imported_names(source, "contrastive.data.m"))
    assert "contrastive.engine.run" in names and "contrastive.data.sibling" in names
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert circles(graph) == [["a", "b", "c"]]
    assert upward_imports({"contrastive.core.x": {"contrastive.engine.y"}}) == [
        ("contrastive.core.x", "contrastive.engine.y")]


if __name__ == "__main__":  # a report for humans
    graph = import_graph()
    print("circles:", circles(graph) or "none")
    print("upward imports:", upward_imports(graph) or "none")
    counts: Dict[str, int] = {}
    for module, path in package_modules().items():
        package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
        counts[package] = counts.get(package, 0) + (path.name != "__init__.py")  # modules besides __init__
    print("modules per package:", dict(sorted(counts.items())))
    print("modules over", MAX_MODULE_LINES, "lines:", long_modules() or "none")
    print("functions over", MAX_FUNCTION_LINES, "lines:", long_functions() or "none")
    sizes = sorted(((len(p.read_text().splitlines()), m) for m, p in package_modules().items()), reverse=True)
    print("largest module:", sizes[0][1], sizes[0][0], "lines")
    print("largest function:", (long_functions(0) or [("-", 0)])[0])
    sys.exit(0)
