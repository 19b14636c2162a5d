"""The library's import graph has no cycle (every import counted, module-level or inside a
function): the native backend takes its XLA references from the XLA side, never from the
modules that dispatch to it."""

import ast
from pathlib import Path

import networkx as nx

import quasirl

ROOT = Path(quasirl.__file__).resolve().parent


def _module(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _exists(name: str) -> bool:
    p = ROOT.parent / name.replace(".", "/")
    return p.with_suffix(".py").is_file() or (p / "__init__.py").is_file()


def import_graph() -> nx.DiGraph:
    G = nx.DiGraph()
    for path in ROOT.rglob("*.py"):
        mod = _module(path)
        pkg = mod if path.name == "__init__.py" else mod.rsplit(".", 1)[0]
        G.add_node(mod)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                if target.split(".")[0] != "quasirl":
                    continue
                for alias in node.names:  # "from . import x" imports the module x
                    sub = f"{target}.{alias.name}"
                    G.add_edge(mod, sub if _exists(sub) else target)
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.split(".")[0] == "quasirl":
                        G.add_edge(mod, alias.name)
    return G


def test_no_import_cycles():
    G = import_graph()
    assert G.number_of_nodes() > 40 and G.has_edge("quasirl._dynamics", "quasirl._native.pull")
    cycles = list(nx.simple_cycles(G))
    assert not cycles, f"import cycles: {cycles}"
