"""The outbound queue: one row per message, one per recipient with its own state.

A recipient moves pending -> delivered | failed. The delivery engine (delivery/) reads due
recipients and writes results; this module only records, in the caller's transaction.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass

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
