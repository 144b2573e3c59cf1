"""The packages import one way, files import without circles, and function-level imports say why.

Layers, bottom to top (``docs/architecture.md`` draws them):

0. ``federation`` itself: the shared language (identity, names, protocol, canonical form, rules,
   errors, HTTP helpers, config);
1. ``trust``: keys, trust lists, tokens, envelopes, audit logs, the auditor;
2. ``node`` and ``broker``: the two services, which never import each other;
3. ``federation.tools``: the demo, provisioning, synthetic data, evaluation, benchmarks;
4. ``federation.commands``: the ``signpost`` command line.

A module may import its own layer or any layer below. The graph is read from the source with
``ast`` (nothing is imported), so the check also sees imports that a test run never executes.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("federation", "trust", "node", "broker")


def layer(module: str) -> tuple[int, str]:
    """``(rank, name)`` of the layer a dotted module name belongs to."""
    parts = module.split(".")
    if parts[0] == "federation":
        if len(parts) > 1 and parts[1] == "commands":
            return 4, "federation.commands"
        if len(parts) > 1 and parts[1] == "tools":
            return 3, "federation.tools"
        return 0, "federation"
    if parts[0] == "trust":
        return 1, "trust"
    return 2, parts[0]


@dataclass(frozen=True)
class Import:
    source: str
    target: str
    line: int
    in_function: bool
    explained: bool


def module_name(root: Path, path: Path) -> str:
    relative = path.relative_to(root).with_suffix("")
    parts = relative.parts[:-1] if relative.name == "__init__" else relative.parts
    return ".".join(parts)


def imports(root: Path) -> Iterator[Import]:
    """Every import of a project module by a project module under ``root``."""
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            source = module_name(root, path)
            text = path.read_text(encoding="utf-8")
            lines = text.splitlines()
            tree = ast.parse(text)
            functions = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]
            inner = {id(n) for f in functions for n in ast.walk(f) if n is not f}
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    targets = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    # ``from trust import envelope`` imports the module trust.envelope
                    targets = [f"{node.module}.{a.name}" if _is_module(root, f"{node.module}.{a.name}")
                               else node.module for a in node.names]
                else:
                    continue
                in_function = id(node) in inner
                around = " ".join(lines[max(0, node.lineno - 2): node.lineno])
                explained = "#" in around
                for target in targets:
                    if target.split(".")[0] in PACKAGES or in_function:
                        yield Import(source, target, node.lineno, in_function, explained)


def _is_module(root: Path, dotted: str) -> bool:
    path = root.joinpath(*dotted.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def violations(root: Path) -> list[str]:
    """Every rule the tree at ``root`` breaks, one line each; empty when it keeps them all."""
    found: list[str] = []
    graph: dict[str, set[str]] = {}
    for imp in imports(root):
        if imp.in_function and not imp.explained:
            found.append(f"{imp.source}:{imp.line}: import of {imp.target} inside a function "
                         "without a comment saying why (only optional dependencies belong there)")
        if imp.target.split(".")[0] not in PACKAGES:
            continue
        (rank, name), (target_rank, target_name) = layer(imp.source), layer(imp.target)
        if target_rank > rank:
            found.append(f"{imp.source}:{imp.line}: imports {imp.target}, a layer up "
                         f"({name} is below {target_name})")
        elif target_rank == rank == 2 and name != target_name:
            found.append(f"{imp.source}:{imp.line}: imports {imp.target}; "
                         "node and broker talk only over HTTP")
        if imp.target != imp.source and _is_module(root, imp.target):
            graph.setdefault(imp.source, set()).add(imp.target)
    found += [f"import circle: {' -> '.join(c)}" for c in cycles(graph)]
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One circle per strongly connected component of more than one file (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_tree_keeps_its_layers() -> None:
    """No import runs up a layer, node and broker never import each other, no circles, no hidden imports."""
    expected: list[str] = []
    actual = violations(ROOT)
    assert expected == actual


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for package in PACKAGES:
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        (path.parent / "__init__.py").touch()
        path.write_text(text)
    return tmp_path


BROKEN_TREES = {
    "core imports trust": ({"federation/identity.py": "from trust import keys\n", "trust/keys.py": ""},
                           "a layer up"),
    "trust imports node": ({"trust/keys.py": "import node.store\n", "node/store.py": ""}, "a layer up"),
    "node imports the command line": ({"node/api.py": "from federation.commands import main\n",
                                       "federation/commands/main.py": ""}, "a layer up"),
    "tools import the command line": ({"federation/tools/demo.py": "from federation.commands import main\n",
                                       "federation/commands/main.py": ""}, "a layer up"),
    "broker imports node": ({"broker/api.py": "from node import store\n", "node/store.py": ""},
                            "only over HTTP"),
    "a circle between files": ({"broker/api.py": "from broker import web\n",
                                "broker/web.py": "from broker import api\n"}, "import circle"),
    "an unexplained import in a function": ({"node/api.py": "def f():\n    import json\n"},
                                            "inside a function"),
}


@pytest.mark.parametrize("files, complaint", BROKEN_TREES.values(), ids=BROKEN_TREES.keys())
def test_the_check_catches(tmp_path: Path, files: dict[str, str], complaint: str) -> None:
    """Each rule really fails a tree that breaks it."""
    found = violations(_tree(tmp_path, files))
    expected = True
    actual = any(complaint in line for line in found)
    assert expected == actual, found


def test_an_explained_optional_import_is_allowed(tmp_path: Path) -> None:
    """An import inside a function with a comment saying why (an optional dependency) passes."""
    source = "def f():\n    # optional: only for evaluation\n    import json\n"
    tree = _tree(tmp_path, {"node/api.py": source})
    expected: list[str] = []
    actual = violations(tree)
    assert expected == actual
