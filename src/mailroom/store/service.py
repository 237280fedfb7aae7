"""The store as the asyncio server sees it: one writer thread, a few reader threads.

SQLite has one writer (ARCHITECTURE habit 10): every write runs on the same thread, inside
``BEGIN IMMEDIATE .. COMMIT``, and returns only after the commit (fsync'd, ``synchronous = FULL``).
Subscribers hear about a change only after its commit, never from inside a transaction.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections import defaultdict
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Concatenate, ParamSpec, TypeVar

from mailroom.store.database import connect, db_path, open_database, transaction

P = ParamSpec("P")
T = TypeVar("T")
Listener = Callable[[int], None]  # called with the account id that changed


class Store:
    def __init__(self, data_dir: Path, readers: int = 4) -> None:
        self.data_dir = data_dir
        self.path = db_path(data_dir)
        self._writer_conn = open_database(data_dir)  # runs pending migrations
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store-writer")
        self._readers = ThreadPoolExecutor(max_workers=readers, thread_name_prefix="store-reader")
        self._local = threading.local()
        self._reader_conns: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._listeners: dict[int, set[Listener]] = defaultdict(set)

    async def write(
        self, fn: Callable[Concatenate[sqlite3.Connection, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """Run ``fn(conn, ...)`` in one transaction on the writer thread; returns after COMMIT."""

        def run() -> T:
            with transaction(self._writer_conn):
                return fn(self._writer_conn, *args, **kwargs)

        return await asyncio.get_running_loop().run_in_executor(self._writer, run)

    async def read(
        self, fn: Callable[Concatenate[sqlite3.Connection, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """Run ``fn(conn, ...)`` on a reader thread (WAL: readers never wait for the writer)."""

        def run() -> T:
            conn = self._reader()
            conn.execute("BEGIN")
            try:
                return fn(conn, *args, **kwargs)
            finally:
                conn.execute("COMMIT")

        return await asyncio.get_running_loop().run_in_executor(self._readers, run)

    def _reader(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = connect(self.path)
            self._local.conn = conn
            with self._lock:
                self._reader_conns.append(conn)
        return conn

    # --- change feed ---------------------------------------------------------------------------

    def subscribe(self, account_id: int, listener: Listener) -> None:
        self._listeners[account_id].add(listener)

    def unsubscribe(self, account_id: int, listener: Listener) -> None:
        self._listeners[account_id].discard(listener)
        if not self._listeners[account_id]:
            del self._listeners[account_id]

    def publish(self, account_ids: Iterable[int]) -> None:
        """Announce committed changes (call from the event loop, after ``write`` returned)."""
        for account_id in set(account_ids):
            for listener in list(self._listeners.get(account_id, ())):
                listener(account_id)

    def close(self) -> None:
        self._writer.shutdown(wait=True)
        self._readers.shutdown(wait=True)
        with self._lock:
            for conn in self._reader_conns:
                conn.close()
            self._reader_conns.clear()
        self._writer_conn.close()
