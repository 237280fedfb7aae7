"""The outbound queue: one row per message, one per recipient with its own state.

A recipient moves pending -> delivered | failed. The delivery engine (delivery/) reads due
recipients and writes results; this module only records, in the caller's transaction.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mailroom.address import normalize_domain
from mailroom.store.database import now


@dataclass(frozen=True)
class QueueRecipient:
    address: str
    orcpt: str | None = None
    notify: str | None = None  # RFC 3461 NOTIFY values, comma-separated


@dataclass(frozen=True)
class QueueEnvelope:
    sender: str
    recipients: Sequence[QueueRecipient]
    account_id: int | None = None
    envid: str | None = None
    ret: str | None = None
    body_type: str | None = None
    smtputf8: bool = False


def enqueue(conn: sqlite3.Connection, body_id: int, envelope: QueueEnvelope, due: int | None = None) -> int:
    """Queue a stored body for the given recipients; due now unless told otherwise."""
    created = now()
    queue_id = int(
        conn.execute(
            "INSERT INTO queue (body_id, sender, account_id, envid, ret, body_type, smtputf8, created) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                body_id,
                envelope.sender,
                envelope.account_id,
                envelope.envid,
                envelope.ret,
                envelope.body_type,
                int(envelope.smtputf8),
                created,
            ),
        ).lastrowid
        or 0
    )
    for rcpt in envelope.recipients:
        domain = normalize_domain(rcpt.address.rpartition("@")[2])
        conn.execute(
            "INSERT INTO queue_recipients (queue_id, address, domain, orcpt, notify, next_attempt, updated) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                queue_id,
                rcpt.address,
                domain,
                rcpt.orcpt,
                rcpt.notify,
                created if due is None else due,
                created,
            ),
        )
    return queue_id


def pending_count(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT count(*) FROM queue_recipients WHERE state = 'pending'").fetchone()[0])


# --- the queue runner's view ---------------------------------------------------------------------


@dataclass(frozen=True)
class DueRecipient:
    id: int
    address: str
    orcpt: str | None
    notify: str | None
    attempts: int
    warned: bool


@dataclass(frozen=True)
class DueBatch:
    """Recipients of one queued message at one domain: delivered in one SMTP transaction."""

    queue_id: int
    domain: str
    sender: str
    body_id: int
    size: int
    envid: str | None
    ret: str | None
    body_type: str | None
    smtputf8: bool
    created: int
    recipients: tuple[DueRecipient, ...]


def due_batches(
    conn: sqlite3.Connection, now: int, exclude: Sequence[int] = (), limit: int = 200
) -> list[DueBatch]:
    """Pending recipients whose time has come, grouped by (message, domain), oldest first."""
    rows = conn.execute(
        "SELECT r.id, r.address, r.orcpt, r.notify, r.attempts, r.warned, r.domain, q.id, q.sender, q.body_id, "
        "b.size, q.envid, q.ret, q.body_type, q.smtputf8, q.created "
        "FROM queue_recipients r JOIN queue q ON q.id = r.queue_id JOIN bodies b ON b.id = q.body_id "
        "WHERE r.state = 'pending' AND r.next_attempt <= ? ORDER BY r.next_attempt, r.id LIMIT ?",
        (now, limit),
    ).fetchall()
    groups: dict[tuple[int, str], list[Any]] = {}
    for row in rows:
        if row[7] in exclude:
            continue
        groups.setdefault((row[7], row[6]), []).append(row)
    batches = []
    for (queue_id, domain), members in groups.items():
        first = members[0]
        batches.append(
            DueBatch(
                queue_id,
                domain,
                str(first[8]),
                int(first[9]),
                int(first[10]),
                first[11],
                first[12],
                first[13],
                bool(first[14]),
                int(first[15]),
                tuple(DueRecipient(r[0], r[1], r[2], r[3], r[4], bool(r[5])) for r in members),
            )
        )
    return batches


def next_due(conn: sqlite3.Connection) -> int | None:
    row = conn.execute("SELECT min(next_attempt) FROM queue_recipients WHERE state = 'pending'").fetchone()
    return None if row is None or row[0] is None else int(row[0])


@dataclass(frozen=True)
class RecipientUpdate:
    id: int
    state: str  # pending | delivered | failed
    reply: str
    host: str | None
    next_attempt: int | None = None  # pending: when to try again
    warned: bool = False


def record_results(conn: sqlite3.Connection, updates: Sequence[RecipientUpdate], when: int) -> None:
    """Write delivery outcomes; a message whose recipients are all final leaves the queue (its body
    goes with it through the reference-count triggers)."""
    queue_ids = set()
    for u in updates:
        row = conn.execute(
            "UPDATE queue_recipients SET state = ?, attempts = attempts + 1, last_reply = ?, last_host = ?, "
            "next_attempt = coalesce(?, next_attempt), warned = max(warned, ?), updated = ? WHERE id = ? "
            "RETURNING queue_id",
            (u.state, u.reply[:1000], u.host, u.next_attempt, int(u.warned), when, u.id),
        ).fetchone()
        if row:
            queue_ids.add(int(row[0]))
    for queue_id in queue_ids:
        pending = conn.execute(
            "SELECT count(*) FROM queue_recipients WHERE queue_id = ? AND state = 'pending'", (queue_id,)
        ).fetchone()[0]
        if not pending:
            conn.execute("DELETE FROM queue WHERE id = ?", (queue_id,))


@dataclass(frozen=True)
class QueueEntry:
    queue_id: int
    sender: str
    address: str
    state: str
    attempts: int
    next_attempt: int
    last_reply: str | None


def list_queue(conn: sqlite3.Connection) -> list[QueueEntry]:
    return [
        QueueEntry(*row)
        for row in conn.execute(
            "SELECT q.id, q.sender, r.address, r.state, r.attempts, r.next_attempt, r.last_reply "
            "FROM queue_recipients r JOIN queue q ON q.id = r.queue_id ORDER BY q.id, r.id"
        )
    ]


def retry_now(conn: sqlite3.Connection, when: int, queue_id: int | None = None) -> int:
    """Make pending recipients (of one message, or all) due now; returns how many."""
    if queue_id is None:
        return conn.execute(
            "UPDATE queue_recipients SET next_attempt = ? WHERE state = 'pending'", (when,)
        ).rowcount
    return conn.execute(
        "UPDATE queue_recipients SET next_attempt = ? WHERE state = 'pending' AND queue_id = ?",
        (when, queue_id),
    ).rowcount


def delete_message(conn: sqlite3.Connection, queue_id: int) -> bool:
    """Drop a queued message without a bounce (`mailroom queue delete`); the body goes with it."""
    return conn.execute("DELETE FROM queue WHERE id = ?", (queue_id,)).rowcount > 0


def queued_headers(conn: sqlite3.Connection, queue_id: int, limit: int = 65536) -> bytes | None:
    """The header section of a queued message (`mailroom queue show`)."""
    row = conn.execute("SELECT body_id FROM queue WHERE id = ?", (queue_id,)).fetchone()
    if row is None:
        return None
    with conn.blobopen("bodies", "data", int(row[0]), readonly=True) as blob:
        head = blob.read(limit)
    return head.split(b"\r\n\r\n", 1)[0] + b"\r\n"
