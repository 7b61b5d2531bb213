"""The import graph of the product modules reads top-down: scripts -> twins -> vaecommon.

Every import counts, function-local ones included, and so does a module name given to
`importlib.import_module` as a string. No cycle; `vaecommon` never imports a twin; neither twin
imports the other. Read from the source (AST), so nothing is imported here.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("scripts", "jaxvae", "torchvae", "vaecommon", "vaecommon/commands")


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        dotted = pkg.replace("/", ".")
        for p in sorted((REPO / pkg).glob("*.py")):
            if p.name.endswith("_test.py") or p.name.startswith("test_") or p.name == "conftest.py":
                continue
            name = dotted if p.stem == "__init__" else f"{dotted}.{p.stem}"
            out[name] = p
    return out


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Product modules `name` imports (anywhere in the file; relative imports resolved)."""
    pkg = name.rpartition(".")[0] if not path.name == "__init__.py" else name
    found: set[str] = set()

    def add(target: str) -> None:
        while target and target not in known:
            target = target.rpartition(".")[0]
        if target and target != name:
            found.add(target)

    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            for a in node.names:
                add(a.name)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = f"{pkg}.{base}" if base else pkg
            for a in node.names:
                add(f"{base}.{a.name}" if f"{base}.{a.name}" in known else base)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in known:
            add(node.value)  # importlib.import_module("pkg.mod") and friends
    return found


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    known = set(mods)
    return {n: _imports(n, p, known) for n, p in mods.items()}


def test_the_graph_is_read_from_the_source(tmp_path):
    g = _graph()
    assert "jaxvae.train" in g and "vaecommon.lifecycle" in g["jaxvae.train"]
    assert "vaecommon.commands.twins" in g["vaecommon.commands.evaluate"], "local imports count"
    probe = tmp_path / "probe.py"
    probe.write_text("import importlib\n\ndef f():\n    from . import train\n"
                     "    return importlib.import_module('torchvae.api')\n")
    assert _imports("jaxvae.probe", probe, set(g)) == {"jaxvae.train", "torchvae.api"}


def test_no_import_cycle():
    g = _graph()
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> None:
        state[n] = 1
        stack.append(n)
        for m in sorted(g[n]):
            if state.get(m) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(m):] + [m]))
            if m not in state:
                visit(m)
        stack.pop()
        state[n] = 2

    for n in sorted(g):
        if n not in state:
            visit(n)


def test_layers():
    g = _graph()
    for n, deps in g.items():
        layer = n.split(".")[0]
        for d in deps:
            other = d.split(".")[0]
            if layer == "vaecommon":
                assert other == "vaecommon", f"{n} imports {d}: vaecommon names no twin"
            elif layer in ("jaxvae", "torchvae"):
                assert other in (layer, "vaecommon"), f"{n} imports {d}: a twin imports only itself and vaecommon"
