"""The store as the asyncio server sees it: one writer thread, a few reader threads.

SQLite has one writer (ARCHITECTURE habit 10): every write runs on the same thread and returns
only after its COMMIT (fsync'd, ``synchronous = FULL``). Writes that arrive while the writer is
busy are **group-committed**: the next transaction runs each of them in its own SAVEPOINT (one
failing rolls back only itself) and one COMMIT makes them all durable, so ten concurrent SMTP
sessions cost one fsync, not ten. Subscribers hear about a change only after its commit.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections import defaultdict, deque
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Concatenate, Generic, ParamSpec, TypeVar

from mailroom.store.database import connect, db_path, open_database

P = ParamSpec("P")
T = TypeVar("T")
Listener = Callable[[int], None]  # called with the account id that changed
MAX_BATCH = 64  # jobs per group commit: keeps each transaction short


@dataclass
class _Job(Generic[T]):
    fn: Callable[[sqlite3.Connection], T]
    future: asyncio.Future[T]
    loop: asyncio.AbstractEventLoop


def _settle(future: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if future.done():  # the waiting session was cancelled; the work is committed regardless
        return
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)


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
        self._jobs: deque[_Job[Any]] = deque()
        self._draining = False
        self._listeners: dict[int, set[Listener]] = defaultdict(set)

    async def write(
        self, fn: Callable[Concatenate[sqlite3.Connection, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """Run ``fn(conn, ...)`` atomically on the writer thread; returns after the COMMIT."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        job = _Job(lambda conn: fn(conn, *args, **kwargs), future, loop)
        with self._lock:
            self._jobs.append(job)
            start = not self._draining
            self._draining = True
        if start:
            self._writer.submit(self._drain)
        return await future

    def _drain(self) -> None:
        """Writer thread: commit queued jobs in batches until none are left."""
        while True:
            with self._lock:
                if not self._jobs:
                    self._draining = False
                    return
                batch = [self._jobs.popleft() for _ in range(min(len(self._jobs), MAX_BATCH))]
            self._commit_batch(batch)

    def _commit_batch(self, batch: list[_Job[Any]]) -> None:
        conn = self._writer_conn
        outcomes: list[tuple[bool, Any]] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            for job in batch:
                conn.execute("SAVEPOINT job")
                try:
                    outcomes.append((True, job.fn(conn)))
                    conn.execute("RELEASE job")
                except Exception as exc:
                    if not conn.in_transaction:  # SQLite rolled it all back (SQLITE_FULL): fail the batch
                        raise
                    conn.execute("ROLLBACK TO job")
                    conn.execute("RELEASE job")
                    outcomes.append((False, exc))
            conn.execute("COMMIT")
        except Exception as exc:  # BEGIN or COMMIT failed (disk full, I/O error): nothing is durable
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            outcomes = [(False, exc)] * len(batch)
        for job, (ok, value) in zip(batch, outcomes, strict=True):
            job.loop.call_soon_threadsafe(_settle, job.future, ok, value)

    async def read(
        self, fn: Callable[Concatenate[sqlite3.Connection, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """Run ``fn(conn, ...)`` on a reader thread (WAL: readers never wait for the writer)."""
        return await asyncio.get_running_loop().run_in_executor(
            self._readers, lambda: self.read_now(fn, *args, **kwargs)
        )

    def read_now(
        self, fn: Callable[Concatenate[sqlite3.Connection, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """Run ``fn(conn, ...)`` right here, on the calling thread's own connection.

        Only for lookups that touch a handful of rows through an index (resolving a recipient):
        the hop to a reader thread and back costs more than such a query, and an SMTP session
        makes one per RCPT. WAL readers do not wait for the writer, so this does not block on it.
        """
        conn = self._reader()
        conn.execute("BEGIN")
        try:
            return fn(conn, *args, **kwargs)
        finally:
            conn.execute("COMMIT")

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
