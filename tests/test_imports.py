"""The library's import graph has no cycle (every import counted, module-level or inside a
function): the native backend takes its XLA references from the XLA side, never from the
modules that dispatch to it. And its layout: each public name listed once, in its facade, with
one re-export convention (no ``__all__``), and one home for each numerics helper."""

import ast
import importlib
import re
import types
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


# --------------------------------------------------------------------------------------------
# layout: each public name listed once, one home for each helper (issue 16, item 3)
# --------------------------------------------------------------------------------------------
# Files (relative to quasirl/, a trailing "/" for a folder) the layout rules below do not
# cover yet, while other changes to them are under way; delete an entry once it conforms.
NO_ALL_PENDING = ()
HELPERS_PENDING = ()

# The helpers that must have one home, each spelling counted together.
ONE_HOME = {
    "safe_log": {"safe_log"},
    "_float": {"_float"},
    "float_dtype": {"float_dtype", "_float_dtype"},
    "check_key": {"check_key", "_check_key"},
}
INTEGER_TYPES = {"int", "Integral", "integer"}  # int, numbers.Integral, np.integer


def _files(pending=()):
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if not any(rel == p or (p.endswith("/") and rel.startswith(p)) for p in pending):
            yield rel, path


def _is_private(rel: str) -> bool:
    parts = rel.removesuffix(".py").split("/")
    return any(p.startswith("_") and not p.startswith("__") for p in parts)


def _facades():
    """The public namespaces: public modules outside the command line (whose modules import
    for their own use, not to re-export)."""
    for rel, path in _files(NO_ALL_PENDING):
        if not _is_private(rel) and not rel.startswith("cli/") and rel != "__main__.py":
            yield rel, path


def defines_all(tree: ast.Module) -> bool:
    for node in tree.body:
        targets = (node.targets if isinstance(node, ast.Assign)
                   else [node.target] if isinstance(node, ast.AugAssign | ast.AnnAssign)
                   else [])
        if any(isinstance(t, ast.Name) and t.id == "__all__" for t in targets):
            return True
    return False


def facade_problems(tree: ast.Module, package: str) -> list[str]:
    """What breaks the one re-export convention in a facade: a star import, a name imported
    from quasirl without ``as`` the same name, a public name bound twice."""
    problems, seen = [], {}
    for node in tree.body:
        bound = []
        if isinstance(node, ast.ImportFrom):
            ours = node.level > 0 or (node.module or "").split(".")[0] == "quasirl"
            for alias in node.names:
                if alias.name == "*":
                    problems.append(f"star import from {node.module}")
                    continue
                sub = f"{package}.{node.module}.{alias.name}" if node.module else \
                    f"{package}.{alias.name}"
                is_module = ours and node.level == 1 and _exists(sub)
                if ours and not is_module and alias.asname != alias.name:
                    problems.append(f"{alias.name} imported without 'as {alias.name}'")
                bound.append(alias.asname or alias.name)
        elif isinstance(node, ast.FunctionDef | ast.ClassDef):
            bound.append(node.name)
        elif isinstance(node, ast.Assign):
            bound += [t.id for t in node.targets if isinstance(t, ast.Name)]
        for name in bound:
            if not name.startswith("_"):
                if name in seen:
                    problems.append(f"{name} bound twice (lines {seen[name]} and "
                                    f"{node.lineno})")
                seen.setdefault(name, node.lineno)
    return problems


def _isinstance_of(node):
    """(the checked expression, the type expression) of ``isinstance(x, T)`` or
    ``not isinstance(x, T)``, else None."""
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        node = node.operand
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) \
            and node.func.id == "isinstance" and len(node.args) == 2:
        return ast.dump(node.args[0]), node.args[1]
    return None


def _type_names(t) -> set[str]:
    if isinstance(t, ast.BinOp):
        return _type_names(t.left) | _type_names(t.right)
    if isinstance(t, ast.Tuple):
        return set().union(*map(_type_names, t.elts))
    if isinstance(t, ast.Attribute):
        return {t.attr}
    if isinstance(t, ast.Name):
        return {t.id}
    return {"?"}


def hand_written_int_checks(tree: ast.Module) -> list[int]:
    """Lines that test for an integer by hand: a boolean expression holding both
    ``isinstance(x, bool)`` and ``isinstance(x, <integer types only>)`` on the same x, in any
    order or negation (the job of ``_validate.is_int`` / ``check_int``)."""
    lines = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.BoolOp):
            continue
        tests = [t for t in map(_isinstance_of, node.values) if t]
        bools = {x for x, t in tests if _type_names(t) == {"bool"}}
        ints = {x for x, t in tests if _type_names(t) and _type_names(t) <= INTEGER_TYPES}
        if bools & ints:
            lines.append(node.lineno)
    return lines


LITERAL = re.compile(r"isinstance\([^,()]+,\s*bool\)\s*(\\\s*)?or\s+not\s+isinstance\(")


def test_no_module_defines_all():
    """A public name is listed once, in its facade (``from ._x import name as name``); no
    ``__all__`` beside it, in a private module or in the facade."""
    offenders = [rel for rel, path in _files(NO_ALL_PENDING)
                 if defines_all(ast.parse(path.read_text()))]
    assert not offenders, f"modules defining __all__: {offenders}"


def test_facades_import_each_public_name_once():
    facades = dict(_facades())
    assert {"__init__.py", "sequence/__init__.py", "selection.py", "plots/__init__.py",
            "semiring.py"} <= set(facades)
    problems = {}
    for rel, path in facades.items():
        package = _module(path) if path.name == "__init__.py" else _module(path).rsplit(".", 1)[0]
        found = facade_problems(ast.parse(path.read_text()), package)
        if found:
            problems[rel] = found
    assert not problems, f"facades breaking the re-export convention: {problems}"


def test_public_names_of_a_facade_are_its_imports():
    """What a facade shows (non-underscore attributes that are not modules) is what it
    imports or defines: no helper leaks into the public namespace."""
    for rel, path in _facades():
        mod = importlib.import_module(_module(path))
        tree = ast.parse(path.read_text())
        listed = {a.asname or a.name for n in tree.body if isinstance(n, ast.ImportFrom)
                  for a in n.names} | {n.name for n in tree.body
                                       if isinstance(n, ast.FunctionDef | ast.ClassDef)} \
            | {t.id for n in tree.body if isinstance(n, ast.Assign) for t in n.targets
               if isinstance(t, ast.Name)}
        public = {k for k, v in vars(mod).items() if not k.startswith("_")
                  and not isinstance(v, types.ModuleType)
                  and type(v).__module__ != "__future__"}  # (annotations)
        assert public <= listed, f"{rel}: public but not listed: {sorted(public - listed)}"


def test_each_helper_has_one_home():
    defs: dict[str, list[str]] = {k: [] for k in ONE_HOME}
    int_checks, literal = [], []
    for rel, path in _files():
        text = path.read_text()
        tree = ast.parse(text)
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef):
                for key, spellings in ONE_HOME.items():
                    if node.name in spellings:
                        defs[key].append(f"{rel}:{node.lineno}")
        pending = any(rel == p or (p.endswith("/") and rel.startswith(p))
                      for p in HELPERS_PENDING)
        if rel == "_validate.py" or pending:
            continue
        int_checks += [f"{rel}:{line}" for line in hand_written_int_checks(tree)]
        literal += [rel for _ in LITERAL.finditer(text)]
    copies = {k: v for k, v in defs.items() if len(v) > 1}
    assert not copies, f"helpers defined more than once: {copies}"
    assert [d.split(":")[0] for d in defs["safe_log"]] == ["semiring.py"]
    assert not int_checks, f"hand-written integer checks (use check_int / is_int): {int_checks}"
    assert not literal, f"'isinstance(x, bool) or not isinstance(' outside _validate: {literal}"


def test_the_layout_checks_can_fail():
    """The detectors above catch what they are for."""
    copy = ast.parse("def f(n):\n    if isinstance(n, bool) or not isinstance(n, int | np.integer):"
                     "\n        raise ValueError\n")
    flipped = ast.parse("ok = not isinstance(k, bool) and isinstance(k, numbers.Integral)\n")
    real = ast.parse("ok = not isinstance(v, bool) and isinstance(v, numbers.Real | np.integer)\n")
    assert hand_written_int_checks(copy) == [2] and hand_written_int_checks(flipped) == [1]
    assert hand_written_int_checks(real) == []  # a real-number test is not an integer check
    assert LITERAL.search("if isinstance(L, bool) or not isinstance(L, int):")
    assert defines_all(ast.parse("__all__ = ['a']\n"))
    assert facade_problems(ast.parse("from ._x import a\n"), "quasirl")
    assert facade_problems(ast.parse("from ._x import *\n"), "quasirl")
    assert facade_problems(ast.parse("from ._x import a as a\nfrom ._y import a as a\n"),
                           "quasirl")
    assert not facade_problems(ast.parse("from ._x import a as a\nfrom . import _native\n"),
                               "quasirl")
