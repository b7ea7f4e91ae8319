"""The layers of ARCHITECTURE.md hold: every import (function-local ones
included) of every .py under weightspace/ and zoo/ goes to its own layer or
below, no library module imports zoo or the CLI, and the package graph has no
circle. Failures name the file:line of each offending import."""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ARCHITECTURE = ROOT / "ARCHITECTURE.md"


def _layers() -> dict[str, int]:
    """``package -> layer`` from the table in ARCHITECTURE.md (rows ``| n | `pkg`, ... | ... |``)."""
    out: dict[str, int] = {}
    for line in ARCHITECTURE.read_text().splitlines():
        m = re.match(r"\|\s*(\d+)\s*\|([^|]*)\|", line)
        if m:
            for pkg in re.findall(r"`([\w.]+)`", m.group(2)):
                out[pkg] = int(m.group(1))
    return out


LAYERS = _layers()
CLI_LAYER = max(LAYERS.values())


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _package(module: str) -> str | None:
    """The unit of the layer table: ``weightspace.<first part>``, ``weightspace`` or ``zoo``."""
    parts = module.split(".")
    if parts[0] == "zoo":
        return "zoo"
    if parts[0] != "weightspace":
        return None
    return "weightspace" if len(parts) == 1 else f"weightspace.{parts[1]}"


def _imports():
    """``(file, line, importing module, imported module)`` for every internal import."""
    files = sorted([*ROOT.glob("weightspace/**/*.py"), *ROOT.glob("zoo/**/*.py")])
    known = {_module_name(f) for f in files}
    for f in files:
        mod = _module_name(f)
        is_pkg = f.name == "__init__.py"
        for node in ast.walk(ast.parse(f.read_text(), str(f))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    here = mod.split(".") if is_pkg else mod.split(".")[:-1]
                    here = here[: len(here) - (node.level - 1)]
                    base = ".".join(here + ([base] if base else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
            else:
                continue
            for t in targets:
                if _package(t) is not None:
                    yield f.relative_to(ROOT), node.lineno, mod, t


IMPORTS = list(_imports())


def _where(rows) -> str:
    return "\n".join(f"  {f}:{line}: {src} imports {dst}" for f, line, src, dst in sorted(rows, key=lambda r: (str(r[0]), r[1])))


def test_the_layer_table_is_read():
    assert LAYERS.get("weightspace.arch") == 1 and LAYERS.get("zoo", -1) > LAYERS["weightspace.generate"]
    assert all(LAYERS[p] == CLI_LAYER for p in ("weightspace.cli", "weightspace.quickstart"))


def test_every_package_has_a_layer():
    missing = sorted({_package(m) for _, _, m, _ in IMPORTS} | {_package(t) for *_, t in IMPORTS})
    missing = [p for p in missing if p not in LAYERS]
    assert not missing, f"packages missing from the table in ARCHITECTURE.md: {missing}"


def zoo_from_library(rows):
    """(a) imports of zoo from weightspace modules below the CLI layer."""
    return [r for r in rows if _package(r[3]) == "zoo" and _package(r[2]) != "zoo"
            and LAYERS.get(_package(r[2])) != CLI_LAYER]


def cli_from_below(rows):
    """(b) imports of the CLI layer from anything below it."""
    return [r for r in rows if LAYERS.get(_package(r[3])) == CLI_LAYER and LAYERS.get(_package(r[2])) != CLI_LAYER]


def upward(rows):
    """(c) imports of a higher layer."""
    return [r for r in rows if _package(r[2]) in LAYERS and _package(r[3]) in LAYERS
            and LAYERS[_package(r[3])] > LAYERS[_package(r[2])]]


def circle(rows):
    """(c) one circle of the package graph as the imports that make it, or ``[]``."""
    edges: dict[str, dict[str, tuple]] = defaultdict(dict)
    for r in rows:
        a, b = _package(r[2]), _package(r[3])
        if a != b:
            edges[a].setdefault(b, r)
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(p: str) -> list[str] | None:
        state[p] = 1
        stack.append(p)
        for q in sorted(edges.get(p, {})):
            if state.get(q) == 1:
                return stack[stack.index(q):] + [q]
            if q not in state:
                found = visit(q)
                if found:
                    return found
        stack.pop()
        state[p] = 2
        return None

    for p in sorted(edges):
        if p not in state:
            found = visit(p)
            if found:
                return [edges[a][b] for a, b in zip(found, found[1:])]
    return []


@pytest.mark.parametrize("check, problem", [
    (zoo_from_library, "library modules import zoo (only the CLI layer may)"),
    (cli_from_below, "modules below the CLI import it"),
    (upward, "imports of a higher layer (see ARCHITECTURE.md)"),
    (circle, "circle between packages"),
], ids=["no-library-module-imports-zoo", "nothing-below-imports-the-cli",
        "imports-go-to-the-same-layer-or-below", "the-package-graph-has-no-circle"])
def test_layering(check, problem):
    bad = check(IMPORTS)
    assert not bad, f"{problem}:\n" + _where(bad)


def test_the_checks_find_what_they_should():
    """Not vacuous: a zoo import, a CLI import, an upward import and a circle
    are each reported with their file:line."""
    z = ("weightspace/merge/x.py", 2, "weightspace.merge.x", "zoo.store")
    c = ("zoo/x.py", 3, "zoo.x", "weightspace.cli.common")
    u = ("weightspace/arch/x.py", 1, "weightspace.arch.x", "weightspace.core")
    n = ("weightspace/nn/x.py", 4, "weightspace.nn.x", "weightspace.predict.data")
    p = ("weightspace/predict/x.py", 5, "weightspace.predict.x", "weightspace.nn")
    assert zoo_from_library([z, c, u]) == [z]
    assert cli_from_below([z, c, u]) == [c]
    assert upward([z, c, u, n, p]) == [z, c, u]
    assert sorted(circle([n, p])) == [n, p] and circle([p]) == []
    assert "weightspace/merge/x.py:2: weightspace.merge.x imports zoo.store" in _where([z])
