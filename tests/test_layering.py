"""Imports flow one way: daemons import moldau.clients, never the reverse or each other."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "moldau"
DAEMONS = ("moldau.broker", "moldau.jobmanager", "moldau.taskmanager")
PURE = ("moldau.clients.protocol", "moldau.clients.records")
IO_MODULES = {"socket", "asyncio", "os", "subprocess", "selectors", "ssl"}


def imports_of(path: Path) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
    return out


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    return ".".join(p for p in rel.parts if p != "__init__")


def test_import_direction() -> None:
    bad = []
    files = list(ROOT.rglob("*.py"))
    assert len(files) > 20
    for f in files:
        mod = module_name(f)
        for imp in imports_of(f):
            if mod.startswith("moldau.clients") and imp.startswith(DAEMONS):
                bad.append(f"{mod} imports daemon module {imp}")
            for d in DAEMONS:
                if mod.startswith(d) and imp.startswith(DAEMONS) and not imp.startswith(d):
                    bad.append(f"{mod} imports another daemon's module {imp}")
            if mod.startswith(PURE) and imp.split(".")[0] in IO_MODULES:
                bad.append(f"pure module {mod} imports {imp}")
    assert bad == []
