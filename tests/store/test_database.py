from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import pytest

from mailroom.store.database import StoreError, db_path, open_database
from mailroom.store.schema import SCHEMA_VERSION


def test_migrations_from_empty(tmp_path: Path) -> None:
    conn = open_database(tmp_path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL: every commit is fsync'd
    assert conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 2  # INCREMENTAL
    assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {
        "domains",
        "accounts",
        "aliases",
        "alias_targets",
        "mailboxes",
        "bodies",
        "messages",
        "expunged",
        "queue",
        "queue_recipients",
    } <= tables
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()
    # opening again applies nothing and keeps the data
    conn = open_database(tmp_path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    conn.close()


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_newer_schema_refused_untouched(tmp_path: Path) -> None:
    conn = open_database(tmp_path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    before = _digest(db_path(tmp_path))
    with pytest.raises(StoreError, match="newer than this mailroom"):
        open_database(tmp_path)
    assert _digest(db_path(tmp_path)) == before


def test_corrupt_file_refused_untouched(tmp_path: Path) -> None:
    path = db_path(tmp_path)
    path.write_bytes(b"this is not a database at all" * 200)
    before = _digest(path)
    with pytest.raises(StoreError, match="not a usable mailroom database"):
        open_database(tmp_path)
    assert _digest(path) == before


def test_foreign_sqlite_file_refused(tmp_path: Path) -> None:
    other = sqlite3.connect(db_path(tmp_path))
    other.execute("CREATE TABLE notes (x)")
    other.commit()
    other.close()
    with pytest.raises(StoreError, match="no mailroom schema version"):
        open_database(tmp_path)
