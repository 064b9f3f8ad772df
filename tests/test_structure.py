"""The package's shape: no import cycles between attn_cli modules (function-level imports
included), and the command line registers every command from one place."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parent.parent / "attn_cli"


def import_graph() -> dict[str, set[str]]:
    """module -> the attn_cli modules it imports (relative imports, at any depth in the file)."""
    graph: dict[str, set[str]] = {}
    for f in PKG.rglob("*.py"):
        parts = list(f.with_suffix("").relative_to(PKG.parent).parts)
        package = parts[:-1]  # the package the file is in
        mod = ".".join(parts[:-1] if f.name == "__init__.py" else parts)
        deps = set()
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level:
                base = package[: len(package) - node.level + 1]
                if node.module:
                    deps.add(".".join([*base, node.module]))
                else:
                    deps.update(".".join([*base, a.name]) for a in node.names)
        graph[mod] = deps - {mod}
    return {m: {d for d in deps if d in graph} for m, deps in graph.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a path, or None (iterative three-colour depth-first search)."""
    colour = dict.fromkeys(graph, 0)  # 0 new, 1 on the stack, 2 done
    for root in graph:
        if colour[root]:
            continue
        stack = [(root, iter(sorted(graph[root])))]
        colour[root] = 1
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                colour[node] = 2
                stack.pop()
            elif colour[child] == 1:
                path = [n for n, _ in stack]
                return path[path.index(child):] + [child]
            elif colour[child] == 0:
                colour[child] = 1
                stack.append((child, iter(sorted(graph[child]))))
    return None


def test_graph_sees_imports():
    graph = import_graph()
    assert "attn_cli.cli_train" in graph["attn_cli.cli"]
    assert "attn_cli.cli_app" in graph["attn_cli.cli_train"]


def test_find_cycle_detects_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycles():
    assert find_cycle(import_graph()) is None


def test_only_cli_registers_commands():
    """Command modules never import the registering module (that was the cycle)."""
    graph = import_graph()
    importers = sorted(m for m, deps in graph.items() if "attn_cli.cli" in deps)
    assert importers == ["attn_cli.__main__"]
