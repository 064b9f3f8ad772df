"""The package's shape: layers that import one way, no import cycles (absolute and relative
imports, function-level ones included), modules of at most 400 lines, and one module that
registers the commands.

Layer order, lowest first (a module imports its own package and lower layers only):

    top level (config, errors, rundir, device)  <-  data, model  <-  eval  <-  infer  <-  train
    <-  serve  <-  cli

``data`` and ``model`` share a layer and never import each other.
"""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parent.parent / "attn_cli"
LAYERS = {"": 0, "data": 1, "model": 1, "eval": 2, "infer": 3, "train": 4, "serve": 5, "cli": 6}
MAX_LINES = 400
FACADE = {"attn_cli.infer.api", "attn_cli.infer"}  # what `import attn_cli` may reach: the Python API


def module_name(f: Path, root: Path = PKG) -> str:
    parts = list(f.with_suffix("").relative_to(root.parent).parts)
    return ".".join(parts[:-1] if f.name == "__init__.py" else parts)


def imported_modules(source: str, package: list[str]) -> set[str]:
    """The dotted names a module's source imports, at any depth, relative ones resolved against
    ``package`` (the package the module is in)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1])
                mod = f"{base}.{node.module}" if node.module else base
            else:
                mod = node.module or ""
            found.add(mod)
            found.update(f"{mod}.{a.name}" for a in node.names)  # `from pkg import module`
    return found


def import_graph(root: Path = PKG) -> dict[str, set[str]]:
    """module -> the attn_cli modules it imports."""
    sources = {module_name(f, root): f for f in root.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for mod, f in sources.items():
        package = mod.split(".") if f.name == "__init__.py" else mod.split(".")[:-1]
        deps = imported_modules(f.read_text(encoding="utf-8"), package)
        graph[mod] = {d for d in deps if d in sources} - {mod}
    return graph


def layer_of(mod: str) -> tuple[str, int]:
    """(the layer's name, its rank) of a module: its first subpackage under attn_cli, or the top
    level for modules directly in attn_cli."""
    parts = mod.split(".")
    sub = parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in LAYERS) else ""
    return sub, LAYERS[sub]


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    """Imports that point up the layer order or sideways into another package of the same rank.
    ``attn_cli.__main__`` (the entry point) may import the command line, and the package itself
    (``attn_cli/__init__.py``, the public facade) the Python API, ``attn_cli.infer.api``."""
    bad = []
    for mod, deps in graph.items():
        if mod == "attn_cli.__main__":
            continue
        if mod == "attn_cli":
            deps = deps - FACADE
        name, rank = layer_of(mod)
        for dep in deps:
            dep_name, dep_rank = layer_of(dep)
            if dep_name != name and dep_rank >= rank:
                bad.append(f"{mod} -> {dep}")
    return sorted(bad)


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


def test_graph_sees_absolute_and_relative_imports(tmp_path):
    pkg = tmp_path / "attn_cli"
    (pkg / "data").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "errors.py").write_text("")
    (pkg / "data" / "__init__.py").write_text("")
    (pkg / "data" / "spec.py").write_text("def f():\n    from attn_cli.errors import X\n")
    (pkg / "data" / "store.py").write_text("from . import spec\nfrom ..errors import Y\n")
    graph = import_graph(pkg)
    assert graph["attn_cli.data.spec"] == {"attn_cli.errors"}
    assert graph["attn_cli.data.store"] == {"attn_cli.data", "attn_cli.data.spec", "attn_cli.errors"}


def test_graph_sees_the_real_package():
    graph = import_graph()
    assert "attn_cli.cli.train" in graph["attn_cli.cli.main"]
    assert "attn_cli.cli.app" in graph["attn_cli.cli.train"]


def test_find_cycle_detects_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_layer_check_catches_upward_and_sideways_imports():
    graph = {"attn_cli.data.spec": {"attn_cli.train.trainer", "attn_cli.errors"},
             "attn_cli.model.layers": {"attn_cli.data.tokenizer"},
             "attn_cli.errors": {"attn_cli.infer.runs"},
             "attn_cli.cli.train": {"attn_cli.train.setup", "attn_cli.cli.app"}}
    graph["attn_cli"] = {"attn_cli.infer.api", "attn_cli.train.setup"}  # the facade: the API only
    assert layer_violations(graph) == ["attn_cli -> attn_cli.train.setup",
                                       "attn_cli.data.spec -> attn_cli.train.trainer",
                                       "attn_cli.errors -> attn_cli.infer.runs",
                                       "attn_cli.model.layers -> attn_cli.data.tokenizer"]


def test_no_import_cycles():
    """The facade's imports (attn_cli/__init__.py -> the API) are excepted: they run inside
    attn_cli.load and __getattr__, once attn_cli is initialised, so modules that read
    attn_cli.__version__ make no import-time cycle with them."""
    graph = import_graph()
    graph["attn_cli"] = graph["attn_cli"] - FACADE
    assert find_cycle(graph) is None


def test_imports_follow_the_layer_order():
    assert layer_violations(import_graph()) == []


def test_every_package_has_a_layer():
    subpackages = {p.name for p in PKG.iterdir() if (p / "__init__.py").exists()}
    assert subpackages == set(LAYERS) - {""}


def test_modules_fit_the_size_limit():
    long = {module_name(f): n for f in PKG.rglob("*.py")
            if (n := len(f.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert long == {}


def test_only_the_entry_points_register_commands():
    """Command modules never import the registering module (that was the cycle)."""
    graph = import_graph()
    importers = sorted(m for m, deps in graph.items() if "attn_cli.cli.main" in deps)
    assert importers == ["attn_cli.__main__"]
