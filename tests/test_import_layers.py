"""The layout's directions, checked on the sources: matrix -> cells -> engine -> records -> analysis
-> report, the analysis reading records (specsweep/records/sources.py), never the page's code. A
module may import from the layers it builds on, never from the ones built on it (a circle makes the
layout unreadable and imports order-sensitive)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "specsweep"

# package -> packages it must not import (anywhere in its modules, lazily included)
FORBIDDEN = {
    "models": ("matrix", "run", "report", "analysis", "contrib", "probe", "tune"),
    "engine": ("matrix", "run", "report", "analysis", "contrib", "probe", "backends", "tune"),
    "backends": ("run", "report", "analysis", "contrib", "probe", "tune"),
    "records": ("run", "report", "analysis", "matrix", "tune"),
    "analysis": ("run", "engine", "report", "tune"),
    "report": ("run", "engine", "tune"),
    "synth": ("matrix", "run", "report", "analysis", "engine", "tune"),
    # `tune` sits on top: it runs matrices, probes and predicts; nothing below it knows it
    "matrix": ("tune",),
    "run": ("tune",),
    "probe": ("tune",),
    "contrib": ("tune",),
}


def imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("specsweep."):
            found.add(node.module.split(".")[1])
        elif isinstance(node, ast.ImportFrom) and node.module == "specsweep" and not node.level:
            found.update(a.name for a in node.names)  # `from specsweep import report`
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[1] for a in node.names if a.name.startswith("specsweep."))
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_a_layer_does_not_import_the_layers_built_on_it(package):
    bad = {f"{p.relative_to(PKG)} imports specsweep.{m}" for p in (PKG / package).rglob("*.py")
           for m in imports(p) & set(FORBIDDEN[package])}
    assert not bad, sorted(bad)


def report_imports(path: Path) -> set[str]:
    """The report modules a report module imports (lazily included): `from specsweep.report import x`
    and `from specsweep.report.x import ...`."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module == "specsweep.report":
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("specsweep.report."):
            found.add(node.module.split(".")[2])
    return found


def test_the_report_package_has_no_import_circle():
    """The page imports its sections and they share style.py; none imports the page or, through
    others, itself."""
    graph = {p.stem: report_imports(p) for p in (PKG / "report").glob("*.py")}
    assert "page" not in set().union(*(deps for name, deps in graph.items() if name != "command"))

    def reach(start: str) -> set[str]:
        seen, todo = set(), list(graph.get(start, ()))
        while todo:
            m = todo.pop()
            if m not in seen:
                seen.add(m)
                todo.extend(graph.get(m, ()))
        return seen

    assert [m for m in graph if m in reach(m)] == []
