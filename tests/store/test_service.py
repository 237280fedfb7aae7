"""The async store: group commit keeps each write atomic and durable on its own."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from mailroom.store import directory
from mailroom.store.database import open_database
from mailroom.store.service import Store


def add_domain(conn: sqlite3.Connection, name: str) -> int:
    return directory.add_domain(conn, name).id


def add_then_fail(conn: sqlite3.Connection, name: str) -> None:
    directory.add_domain(conn, name)
    raise RuntimeError("this job fails after writing")


def test_concurrent_writes_commit_together_but_fail_alone(tmp_path: Path) -> None:
    store = Store(tmp_path)

    async def main() -> list[object]:
        jobs = [store.write(add_domain, f"d{i}.example") for i in range(50)]
        jobs.insert(25, store.write(add_then_fail, "bad.example"))
        jobs.append(store.write(add_domain, "d0.example"))  # a conflict: fails alone
        return await asyncio.gather(*jobs, return_exceptions=True)

    try:
        results = asyncio.run(main())
    finally:
        store.close()
    assert isinstance(results[25], RuntimeError)
    assert isinstance(results[-1], Exception) and "already exists" in str(results[-1])
    ok = [r for i, r in enumerate(results) if i not in (25, len(results) - 1)]
    assert all(isinstance(r, int) for r in ok) and len(set(ok)) == 50
    conn = open_database(tmp_path)
    names = {d.name for d in directory.list_domains(conn)}
    conn.close()
    assert names == {f"d{i}.example" for i in range(50)}  # bad.example rolled back, nothing else


def test_commit_failure_fails_every_job_in_the_batch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = Store(tmp_path)
    real = store._writer_conn
    store._writer_conn = _FailingCommit(real)  # type: ignore[assignment]

    async def main() -> list[object]:
        return await asyncio.gather(
            *(store.write(add_domain, f"x{i}.example") for i in range(5)), return_exceptions=True
        )

    try:
        results = asyncio.run(main())
    finally:
        store._writer_conn = real
        store.close()
    assert all(isinstance(r, sqlite3.OperationalError) for r in results)
    conn = open_database(tmp_path)
    assert directory.list_domains(conn) == []
    conn.close()


class _FailingCommit:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def execute(self, sql: str, *args: object) -> sqlite3.Cursor:
        if sql == "COMMIT":
            raise sqlite3.OperationalError("database or disk is full")
        return self.conn.execute(sql, *args)

    def __getattr__(self, name: str) -> object:
        return getattr(self.conn, name)
