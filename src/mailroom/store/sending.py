"""Per-account sending counters for submission (mox's first-time-recipient limit, per UTC day).

A message counts once; a remote recipient counts only the first time the account ever writes to
it, so ordinary correspondence never hits the limit while a spam run does at once.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass

from mailroom.store.database import now


def day_of(timestamp: int) -> int:
    return timestamp // 86400


@dataclass(frozen=True)
class Usage:
    messages: int
    new_recipients: int


def usage(conn: sqlite3.Connection, account_id: int, day: int) -> Usage:
    row = conn.execute(
        "SELECT messages, new_recipients FROM submission_days WHERE account_id = ? AND day = ?",
        (account_id, day),
    ).fetchone()
    return Usage(*row) if row else Usage(0, 0)


def is_known(conn: sqlite3.Connection, account_id: int, address_key: str) -> bool:
    row = conn.execute(
        "SELECT 1 FROM known_recipients WHERE account_id = ? AND address = ?", (account_id, address_key)
    ).fetchone()
    return row is not None


def record(
    conn: sqlite3.Connection, account_id: int, remote_keys: Iterable[str], timestamp: int | None = None
) -> None:
    """Count one submitted message and its first-time remote recipients (in the caller's transaction)."""
    when = now() if timestamp is None else timestamp
    new = 0
    for key in set(remote_keys):
        cur = conn.execute(
            "INSERT OR IGNORE INTO known_recipients (account_id, address, first_sent) VALUES (?, ?, ?)",
            (account_id, key, when),
        )
        new += cur.rowcount
    conn.execute(
        "INSERT INTO submission_days (account_id, day, messages, new_recipients) VALUES (?, ?, 1, ?) "
        "ON CONFLICT (account_id, day) DO UPDATE SET messages = messages + 1, new_recipients = new_recipients + ?",
        (account_id, day_of(when), new, new),
    )
