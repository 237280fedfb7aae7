"""mailauth sees DNS only through its resolver interface (ARCHITECTURE.md)."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "mailroom" / "mailauth"


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_mailauth_sees_dns_only_through_the_resolver_interface() -> None:
    files = sorted(SRC.rglob("*.py"))
    assert len(files) >= 8
    for path in files:
        for name in _imports(path):
            top = name.split(".")[0]
            assert top not in ("dns", "socket", "sqlite3"), f"{path.name} imports {name}"
            assert not name.startswith(("mailroom.net", "mailroom.store", "mailroom.app", "mailroom.cli")), (
                f"{path.name} imports {name}"
            )
            if name == "mailroom.dns":
                assert path.name == "resolver.py", f"{path.name}: use mailauth.resolver, not mailroom.dns"
