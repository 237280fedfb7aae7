"""Dependencies point inward (ARCHITECTURE.md): engines are pure, only net/ owns sockets."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "mailroom"
IO_MODULES = {"asyncio", "socket", "ssl", "sqlite3", "selectors", "subprocess", "threading", "time"}
CLOCK_READS = (".now(", ".utcnow(", ".today(", "time.time(", "monotonic(")


def imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def files(package: str) -> list[Path]:
    return sorted((SRC / package).rglob("*.py"))


def test_wire_is_pure() -> None:
    for path in files("wire"):
        for name in imports(path):
            top = name.split(".")[0]
            assert top in sys.stdlib_module_names or name.startswith("mailroom.wire"), (
                f"{path}: imports {name}"
            )
            assert top not in IO_MODULES, f"{path}: wire/ must not do I/O or read clocks ({name})"
        text = path.read_text()
        assert not any(read in text for read in CLOCK_READS), f"{path}: wire/ must not read the clock"


def test_message_is_pure() -> None:
    for path in files("message"):
        for name in imports(path):
            top = name.split(".")[0]
            allowed = name.startswith(("mailroom.message", "mailroom.wire.imap.syntax"))
            assert top in sys.stdlib_module_names or allowed, f"{path}: imports {name}"
            assert top not in IO_MODULES, f"{path}: message/ must not do I/O ({name})"


def test_store_knows_no_protocols() -> None:
    for path in files("store"):
        for name in imports(path):
            assert not name.startswith(
                ("mailroom.wire", "mailroom.net", "mailroom.app", "mailroom.delivery")
            ), f"{path}: {name}"


def test_only_net_and_app_touch_sockets() -> None:
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC).as_posix()
        if rel.startswith(("net/", "delivery/", "web/", "acme/")) or rel in ("app.py", "dns.py"):
            continue
        names = imports(path)
        assert "socket" not in names, f"{rel} imports socket"
