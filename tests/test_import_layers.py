"""The import graph of the four packages: no cycle, and every import points down the layers.

Layers, bottom to top:
  core    wbmm_mobile's own foundations: errors, backend names, the operator (core, layers), the reference
          architectures (zoo), JSON output, the progress bar;
  middle  converters (with converters.npu, the NPU compilers' drivers), delegates,
          android_harness; each may use core; among themselves the package graph must be acyclic;
  top     the rest of wbmm_mobile: the CLI, demo, compare, report.

Static analysis (ast) of every ``import`` / ``from ... import`` in the sources, at module
level and inside functions alike: a lazy import is still a dependency. Importing
``a.b.c`` also runs ``a`` and ``a.b``, so each import adds edges to the parent packages.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("wbmm_mobile", "converters", "delegates", "android_harness")
CORE = {"wbmm_mobile", "wbmm_mobile.errors", "wbmm_mobile.core", "wbmm_mobile.layers", "wbmm_mobile.zoo",
        "wbmm_mobile.json_output", "wbmm_mobile.progress", "wbmm_mobile.backends"}
MIDDLE = ("converters", "delegates", "android_harness")


def modules(root: Path = ROOT) -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _imported_names(name: str, path: Path) -> set[str]:
    is_package = path.name == "__init__.py"
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[:len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)   # 'from pkg import submodule'
    return names


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """module -> project modules it imports (and their parent packages)."""
    known = modules(root)
    graph: dict[str, set[str]] = {}
    for name, path in known.items():
        edges = set()
        for imported in _imported_names(name, path):
            while imported and imported not in known:        # 'pkg.mod.function' -> 'pkg.mod'
                imported = imported.rpartition(".")[0]
            while imported:
                if imported != name and not name.startswith(imported + "."):
                    edges.add(imported)
                imported = imported.rpartition(".")[0]
        graph[name] = edges
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component with more than one node (Tarjan), as a path."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                components.append(component)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [_cycle_path(graph, set(component)) for component in components]


def _cycle_path(graph: dict[str, set[str]], component: set[str]) -> list[str]:
    # Breadth-first from the smallest name back to itself, inside the component: the shortest cycle.
    start = min(component)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for target in sorted(graph[node] & component):
                if target == start:
                    return paths[node] + [start]
                if target not in paths:
                    paths[target] = paths[node] + [target]
                    following.append(target)
        frontier = following
    raise AssertionError(f"no cycle through {start}")


def layer(module: str) -> str:
    if module in CORE:
        return "core"
    top_package = module.split(".")[0]
    return top_package if top_package in MIDDLE else "top"


RANK = {"core": 0, "converters": 1, "delegates": 1, "android_harness": 1, "top": 2}


def layer_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """The graph between units: core, each middle package, and each top module on its own."""
    def unit(module: str) -> str:
        return module if layer(module) == "top" else layer(module)

    units: dict[str, set[str]] = {}
    for module, targets in graph.items():
        units.setdefault(unit(module), set()).update(unit(t) for t in targets if unit(t) != unit(module))
    return units


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    return sorted(f"{module} ({layer(module)}) -> {target} ({layer(target)})"
                  for module, targets in graph.items() for target in targets
                  if RANK[layer(target)] > RANK[layer(module)])


def _describe(cycles: list[list[str]]) -> str:
    return "\n".join(" -> ".join(cycle) for cycle in cycles)


def test_no_import_cycle_between_modules():
    cycles = find_cycles(import_graph())
    assert not cycles, f"import cycles:\n{_describe(cycles)}"


def test_no_import_cycle_between_packages_and_layers():
    cycles = find_cycles(layer_graph(import_graph()))
    assert not cycles, f"import cycles between packages:\n{_describe(cycles)}"


def test_imports_point_down_the_layers():
    upward = upward_imports(import_graph())
    assert not upward, "imports from a lower layer to a higher one:\n" + "\n".join(upward)


def test_the_walker_finds_and_names_a_cycle(tmp_path):
    """The analysis itself, on a made-up tree with a lazy (in-function) import closing a cycle."""
    for package in PACKAGES:
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
    (tmp_path / "android_harness" / "transport.py").write_text(
        "def open_transport():\n    from android_harness.impl import Impl\n")
    (tmp_path / "android_harness" / "impl.py").write_text("from .transport import open_transport\n")
    (tmp_path / "converters" / "a.py").write_text("from wbmm_mobile import cli\n")
    (tmp_path / "wbmm_mobile" / "cli.py").write_text("import converters.a\n")
    graph = import_graph(tmp_path)
    assert graph["android_harness.impl"] == {"android_harness.transport"}
    assert graph["converters.a"] == {"wbmm_mobile", "wbmm_mobile.cli"}
    assert find_cycles(graph) == [["android_harness.impl", "android_harness.transport", "android_harness.impl"],
                                  ["converters.a", "wbmm_mobile.cli", "converters.a"]]
    assert find_cycles(layer_graph(graph)) == [["converters", "wbmm_mobile.cli", "converters"]]
    assert upward_imports(graph) == ["converters.a (converters) -> wbmm_mobile.cli (top)"]
