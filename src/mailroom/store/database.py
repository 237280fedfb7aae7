"""Opening the SQLite file: pragmas for durability, schema checks, migrations, transactions.

Durability contract (non-negotiable 2): WAL with ``synchronous = FULL`` means a COMMIT returns only
after the WAL has been fsync'd, so every store call that reports success survives a crash, and every
"250 OK" the SMTP server sends depends on one.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mailroom.store.schema import MIGRATIONS, SCHEMA_VERSION

DB_FILENAME = "mailroom.sqlite3"
BUSY_TIMEOUT_MS = 10_000


class StoreError(Exception):
    """A store problem to show the user as one line."""


class SchemaTooNewError(StoreError):
    pass


class NotFoundError(StoreError):
    pass


class ConflictError(StoreError):
    """The operation would break a rule (duplicate name, still referenced, ...)."""


def is_storage_full(exc: BaseException) -> bool:
    """The disk (or the user's disk quota) is full: SQLite's SQLITE_FULL ("database or disk is
    full", also when the WAL cannot grow) or ENOSPC/EDQUOT from a spool or other file write.
    The environment's fault, not ours: sessions answer it (SMTP 452 4.3.1, IMAP NO [OVERQUOTA],
    POP3 -ERR [SYS/TEMP]) and log one line, without a traceback."""
    return storage_full_error(exc) is not None


def storage_full_error(exc: BaseException) -> BaseException | None:
    """The full-disk error behind ``exc`` (itself or what it was raised while handling), if any.
    SQLite may roll a whole transaction back on SQLITE_FULL; the ROLLBACK TO of the job's
    savepoint then fails with "no such savepoint", and that is what reaches the caller."""
    seen: BaseException | None = exc
    for _ in range(4):
        if seen is None:
            return None
        if isinstance(seen, sqlite3.Error):
            code = getattr(seen, "sqlite_errorcode", None)
            if code is not None and code & 0xFF == sqlite3.SQLITE_FULL:  # an extended code's primary
                return seen
            if code is None and "database or disk is full" in str(seen):
                return seen
        elif isinstance(seen, OSError) and seen.errno in (errno.ENOSPC, errno.EDQUOT):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def db_path(data_dir: Path) -> Path:
    return data_dir / DB_FILENAME


def connect(path: Path, *, readonly: bool = False) -> sqlite3.Connection:
    """Open the database with mailroom's pragmas; the caller runs migrations separately."""
    if not readonly:
        create_private(path)
    try:
        if readonly:
            conn = sqlite3.connect(
                f"file:{path}?mode=ro", uri=True, isolation_level=None, check_same_thread=False
            )
        else:
            conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as exc:
        raise StoreError(
            f"{path}: cannot open the database ({exc}); check the directory's owner and permissions"
        ) from None
    try:
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA foreign_keys = ON")
        if not readonly:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version == 0 and _is_empty(conn):
                # must precede the first table (https://sqlite.org/pragma.html#pragma_auto_vacuum)
                conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = FULL")
    except sqlite3.OperationalError as exc:
        conn.close()
        raise StoreError(
            f"{path}: cannot use the database ({exc}); check the owner and permissions"
        ) from None
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise StoreError(f"{path}: not a usable mailroom database ({exc}); it was left untouched") from None
    return conn


def create_private(path: Path) -> None:
    """A new database file is made mode 0600 before SQLite opens it: it holds mail and password
    hashes, and SQLite gives its -wal and -shm files the database file's mode."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        pass
    except OSError as exc:
        raise StoreError(
            f"{path}: cannot create the database ({exc.strerror}); check the directory's owner and permissions"
        ) from None


def _is_empty(conn: sqlite3.Connection) -> bool:
    return int(conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]) == 0


def schema_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def check_version(conn: sqlite3.Connection, path: Path) -> int:
    version = schema_version(conn)
    if version > SCHEMA_VERSION:
        raise SchemaTooNewError(
            f"{path}: database schema version {version} is newer than this mailroom understands "
            f"({SCHEMA_VERSION}); run a newer mailroom (the file was left untouched)"
        )
    if version == 0 and not _is_empty(conn):
        raise StoreError(
            f"{path}: has tables but no mailroom schema version; not a mailroom database (left untouched)"
        )
    return version


def migrate(conn: sqlite3.Connection, path: Path) -> list[int]:
    """Apply pending migrations, each in its own transaction. Returns the numbers applied."""
    applied = []
    version = check_version(conn, path)
    for number in range(version + 1, SCHEMA_VERSION + 1):
        with transaction(conn):
            for statement in _split_sql(MIGRATIONS[number - 1]):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {number}")
        applied.append(number)
    return applied


def _split_sql(script: str) -> Iterator[str]:
    """Split a migration into statements (sqlite3.complete_statement knows about triggers)."""
    pending = ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            if pending.strip():
                yield pending
            pending = ""
    if pending.strip():
        yield pending


def open_database(data_dir: Path, *, migrate_schema: bool = True) -> sqlite3.Connection:
    """Open (creating when absent) the database in data_dir, migrated to the current schema."""
    path = db_path(data_dir)
    if not data_dir.is_dir():
        raise StoreError(f"{data_dir}: data directory does not exist")
    conn = connect(path)
    try:
        if migrate_schema:
            migrate(conn, path)
        else:
            check_version(conn, path)
            if schema_version(conn) < SCHEMA_VERSION:
                raise StoreError(f"{path}: schema is out of date; run `mailroom migrate`")
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise StoreError(f"{path}: not a usable mailroom database ({exc}); it was left untouched") from None
    except BaseException:
        conn.close()
        raise
    return conn


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE .. COMMIT: takes the write lock up front so we never deadlock on upgrade."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def now() -> int:
    return int(time.time())
