"""Accepting a message: local copies and queued forwards in ONE transaction.

Either every local mailbox and the outbound queue get the message, or none does; the caller
answers 250 only after this returns (the commit is fsync'd). Local copies carry their own
prefix (Return-Path, RFC 5321 §4.4), which a relayed copy must not have, so a message with both
local and remote recipients is stored as two bodies.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import IO

from mailroom.store import mail, sending
from mailroom.store.queue import QueueEnvelope, enqueue


@dataclass(frozen=True)
class LocalCopy:
    account_id: int
    special_use: str | None = None  # None: INBOX; "\\Junk": the account's Junk mailbox


@dataclass(frozen=True)
class Delivery:
    source: IO[bytes]
    size: int
    internal_date: int
    local: Sequence[LocalCopy] = ()
    local_prefix: bytes = b""
    remote: QueueEnvelope | None = None
    remote_prefix: bytes = b""
    submitter: int | None = None  # the authenticated account: its sending counters go up
    remote_keys: Sequence[str] = ()  # match forms of the remote recipients it wrote to


@dataclass
class DeliveryResult:
    stored: list[tuple[int, mail.StoredMessage]] = field(default_factory=list)  # (account id, where)
    queue_id: int | None = None


def deliver(conn: sqlite3.Connection, d: Delivery) -> DeliveryResult:
    result = DeliveryResult()
    placements: list[tuple[int, mail.Placement]] = []
    seen: set[int] = set()
    for copy in d.local:
        if copy.account_id in seen:  # one copy per account, however many addresses reached it
            continue
        seen.add(copy.account_id)
        box = mail.special_mailbox(conn, copy.account_id, copy.special_use) if copy.special_use else None
        box = box or mail.inbox(conn, copy.account_id)
        placements.append((copy.account_id, mail.Placement(box.id)))
    if placements:
        d.source.seek(0)
        body_id = mail.insert_body(conn, d.source, d.size, d.local_prefix)
        size = d.size + len(d.local_prefix)
        for account_id, placement in placements:
            result.stored.append(
                (account_id, mail.add_message(conn, body_id, size, placement, d.internal_date))
            )
    if d.remote is not None and d.remote.recipients:
        d.source.seek(0)
        body_id = mail.insert_body(conn, d.source, d.size, d.remote_prefix)
        result.queue_id = enqueue(conn, body_id, d.remote)
    if d.submitter is not None:
        sending.record(conn, d.submitter, d.remote_keys, d.internal_date)
    return result
