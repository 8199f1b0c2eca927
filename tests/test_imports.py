"""aihf's module layering: no import cycle and no private name imported across modules.

The import graph is read from the source with ``ast`` (nothing is imported), counting imports inside
functions as well: an import hidden in a function still ties the two modules together. An edge goes
to the module a statement names (``from ..cli.args import x`` -> ``aihf.cli.args``; ``from . import
rl`` -> ``aihf.cli.rl``), not to the packages Python loads on the way.
"""

import ast
import pathlib

import pytest

import aihf

ROOT = pathlib.Path(aihf.__file__).parent



def _modules() -> dict[str, tuple[pathlib.Path, bool]]:
    """Module name -> (file, is a package's __init__)."""
    found = {}
    for path in ROOT.rglob("*.py"):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        found[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return found


def _imports(name: str, path: pathlib.Path, is_package: bool, modules) -> list[tuple[str, str | None]]:
    """``(imported module, name taken from it or None)`` for every aihf import in the file."""
    package = name if is_package else name.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, None) for alias in node.names if alias.name.split(".")[0] == "aihf"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "aihf":
                continue
            for alias in node.names:
                submodule = f"{target}.{alias.name}"
                found.append((submodule, None) if submodule in modules else (target, alias.name))
    return found


def import_graph() -> tuple[dict[str, set[str]], list[tuple[str, str, str]]]:
    """``(module -> modules it imports, [(importer, module, private name)])`` over aihf/."""
    modules = _modules()
    graph, private = {}, []
    for name, (path, is_package) in modules.items():
        edges = set()
        for target, taken in _imports(name, path, is_package, modules):
            if target != name and target in modules:
                edges.add(target)
            if taken and taken.startswith("_") and not taken.startswith("__") and target != name:
                private.append((name, target, taken))
        graph[name] = edges
    return graph, private


def cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components of more than one module (Tarjan), or with a self-loop."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1 or v in graph[v]:
                found.append(component)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_graph_sees_imports_inside_functions_and_relative_ones():
    graph, _ = import_graph()
    assert "aihf.cli.train" in graph["aihf.tasks.quickstart"]  # `from ..cli.train import train` in main()
    assert "aihf.cli.rl" in graph["aihf.cli.train"]  # `from . import rl`
    assert "aihf.errors" in graph["aihf"]
    assert len(graph) > 50


def test_cycle_finder_finds_a_cycle_and_passes_a_chain():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [{"a", "b", "c"}]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []


def test_no_import_cycle():
    found = cycles(import_graph()[0])
    assert not found, f"import cycles: {found}"


def test_no_private_name_imported_from_another_module():
    assert import_graph()[1] == []


@pytest.mark.parametrize("low", ["aihf.commandline", "aihf.methods", "aihf.errors", "aihf.losses"])
def test_the_shared_low_modules_import_no_command(low):
    """What every command shares sits below them: the control package and the benchmarks do not import aihf.cli."""
    graph, _ = import_graph()
    reached, todo = set(), [low]
    while todo:
        for w in graph[todo.pop()] - reached:
            reached.add(w)
            todo.append(w)
    assert not {m for m in reached if m.startswith(("aihf.cli", "aihf.control", "aihf.bench"))}


def test_control_does_not_import_the_llm_command_line():
    graph, _ = import_graph()
    control = {m: ws for m, ws in graph.items() if m.startswith("aihf.control")}
    assert not {(m, w) for m, ws in control.items() for w in ws if w.startswith("aihf.cli")}
