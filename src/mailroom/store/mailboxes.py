"""Mailbox names for IMAP: CREATE, DELETE, RENAME (with INBOX's special rename), subscriptions,
the data LIST needs, and STATUS counts.

Names are UTF-8 with "/" between levels; "INBOX" is always spelled in upper case (RFC 9051 §5.1).
Errors carry a short code (the RFC 5530 response code a session will answer with) and a message.
"""

from __future__ import annotations

import sqlite3
import unicodedata
from dataclasses import dataclass

from mailroom.store import mail
from mailroom.store.database import now

DELIMITER = "/"
MAX_NAME_LENGTH = 1000  # octets of UTF-8
MAX_DEPTH = 32
SPECIAL_USES = ("\\Archive", "\\Drafts", "\\Junk", "\\Sent", "\\Trash")


class MailboxError(Exception):
    """``code``: NONEXISTENT, ALREADYEXISTS, CANNOT, USEATTR, LIMIT (RFC 5530 / RFC 9051 §7.1)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class MailboxEntry:
    """What LIST shows of a mailbox."""

    id: int
    name: str
    special_use: str | None


@dataclass(frozen=True)
class MailboxStatus:
    messages: int
    unseen: int
    deleted: int
    size: int
    recent: int
    uidnext: int
    uidvalidity: int
    highestmodseq: int


def normalize_name(name: str) -> str:
    """Validate a mailbox name and put it in canonical form: INBOX in upper case, no trailing
    delimiter (RFC 9051 §6.3.4: a trailing delimiter only declares the intent to hold children)."""
    name = unicodedata.normalize("NFC", name)
    if name.endswith(DELIMITER):
        name = name.rstrip(DELIMITER)
    if not name:
        raise MailboxError("CANNOT", "Empty mailbox name")
    if len(name.encode("utf-8")) > MAX_NAME_LENGTH:
        raise MailboxError("LIMIT", "Mailbox name too long")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
        raise MailboxError("CANNOT", "Control characters are not allowed in mailbox names")
    if any(c in name for c in "*%"):
        raise MailboxError("CANNOT", "Wildcards are not allowed in mailbox names")
    levels = name.split(DELIMITER)
    if any(not level for level in levels):
        raise MailboxError("CANNOT", "Empty level in mailbox name")
    if len(levels) > MAX_DEPTH:
        raise MailboxError("LIMIT", "Mailbox hierarchy too deep")
    if levels[0].upper() == "INBOX":
        levels[0] = "INBOX"
    return DELIMITER.join(levels)


def _next_uidvalidity(conn: sqlite3.Connection, account_id: int) -> int:
    """RFC 9051 §2.3.1.1: a reused name must get a new UIDVALIDITY; never reuse one per account."""
    row = conn.execute(
        "SELECT a.uidvalidity_last, (SELECT max(uidvalidity) FROM mailboxes WHERE account_id = a.id) "
        "FROM accounts a WHERE a.id = ?",
        (account_id,),
    ).fetchone()
    last = max(int(row[0] or 0), int(row[1] or 0)) if row else 0
    value = max(now(), last + 1) % 0xFFFFFFFF or 1
    conn.execute("UPDATE accounts SET uidvalidity_last = ? WHERE id = ?", (value, account_id))
    return value


def _insert(conn: sqlite3.Connection, account_id: int, name: str, special_use: str | None) -> int:
    uidvalidity = _next_uidvalidity(conn, account_id)
    cur = conn.execute(
        "INSERT INTO mailboxes (account_id, name, uidvalidity, special_use, subscribed) VALUES (?, ?, ?, ?, 0)",
        (account_id, name, uidvalidity, special_use),
    )
    return int(cur.lastrowid or 0)


def create_mailbox(
    conn: sqlite3.Connection, account_id: int, name: str, special_use: tuple[str, ...] = ()
) -> mail.Mailbox:
    """CREATE (RFC 9051 §6.3.4), making missing superior levels too; RFC 6154 USE attributes."""
    name = normalize_name(name)
    if name == "INBOX" or mail.get_mailbox(conn, account_id, name) is not None:
        raise MailboxError("ALREADYEXISTS", "Mailbox already exists")
    use: str | None = None
    for attr in special_use:
        canon = next((s for s in SPECIAL_USES if s.upper() == attr.upper()), None)
        if canon is None:
            raise MailboxError("USEATTR", f"Special-use attribute {attr} is not supported")
        if use is not None and use != canon:
            raise MailboxError("USEATTR", "Only one special-use attribute per mailbox")
        use = canon
    levels = name.split(DELIMITER)
    for depth in range(1, len(levels)):
        parent = DELIMITER.join(levels[:depth])
        if mail.get_mailbox(conn, account_id, parent) is None:
            _insert(conn, account_id, parent, None)
    mailbox_id = _insert(conn, account_id, name, use)
    box = mail.get_mailbox_by_id(conn, mailbox_id)
    assert box is not None
    return box


def delete_mailbox(conn: sqlite3.Connection, account_id: int, name: str) -> int:
    """DELETE (RFC 9051 §6.3.5): the mailbox and its messages go; children stay (their parent
    then shows as \\NonExistent). Returns the deleted mailbox's id."""
    name = normalize_name(name)
    if name == "INBOX":
        raise MailboxError("CANNOT", "INBOX cannot be deleted")
    box = mail.get_mailbox(conn, account_id, name)
    if box is None:
        raise MailboxError("NONEXISTENT", "Mailbox does not exist")
    conn.execute("DELETE FROM messages WHERE mailbox_id = ?", (box.id,))
    conn.execute("DELETE FROM mailboxes WHERE id = ?", (box.id,))
    return box.id


def rename_mailbox(conn: sqlite3.Connection, account_id: int, old: str, new: str) -> None:
    """RENAME (RFC 9051 §6.3.6). Children move along. Renaming INBOX moves its messages to a
    new mailbox and leaves INBOX empty (its children do not move)."""
    old = normalize_name(old)
    new = normalize_name(new)
    box = mail.get_mailbox(conn, account_id, old)
    if box is None:
        raise MailboxError("NONEXISTENT", "Mailbox does not exist")
    if new == "INBOX" or mail.get_mailbox(conn, account_id, new) is not None:
        raise MailboxError("ALREADYEXISTS", "Target mailbox already exists")
    if new.startswith(old + DELIMITER) and old != "INBOX":
        raise MailboxError("CANNOT", "Cannot move a mailbox into itself")
    levels = new.split(DELIMITER)
    for depth in range(1, len(levels)):
        parent = DELIMITER.join(levels[:depth])
        if mail.get_mailbox(conn, account_id, parent) is None and not (parent + DELIMITER).startswith(
            old + DELIMITER
        ):
            _insert(conn, account_id, parent, None)
    if old == "INBOX":
        _rename_inbox(conn, account_id, box, new)
        return
    children = conn.execute(
        "SELECT id, name FROM mailboxes WHERE account_id = ? AND substr(name, 1, ?) = ?",
        (account_id, len(old) + 1, old + DELIMITER),
    ).fetchall()
    for child_id, child_name in children:
        target = new + child_name[len(old) :]
        if mail.get_mailbox(conn, account_id, target) is not None:
            raise MailboxError("ALREADYEXISTS", f"Mailbox {target} already exists")
        conn.execute("UPDATE mailboxes SET name = ? WHERE id = ?", (target, child_id))
    conn.execute("UPDATE mailboxes SET name = ? WHERE id = ?", (new, box.id))


def _rename_inbox(conn: sqlite3.Connection, account_id: int, inbox: mail.Mailbox, new: str) -> None:
    target_id = _insert(conn, account_id, new, None)
    uids = [
        int(r[0])
        for r in conn.execute("SELECT uid FROM messages WHERE mailbox_id = ? ORDER BY uid", (inbox.id,))
    ]
    if not uids:
        return
    # The new mailbox keeps the UIDs (it has a fresh UIDVALIDITY); INBOX records the expunges.
    conn.execute(
        "UPDATE mailboxes SET uidnext = ?, highestmodseq = highestmodseq + 1 WHERE id = ?",
        (inbox.uidnext, target_id),
    )
    row = conn.execute("SELECT highestmodseq FROM mailboxes WHERE id = ?", (target_id,)).fetchone()
    conn.execute(
        "UPDATE messages SET mailbox_id = ?, modseq = ? WHERE mailbox_id = ?",
        (target_id, int(row[0]), inbox.id),
    )
    modseq = mail.next_modseq(conn, inbox.id)
    conn.executemany(
        "INSERT OR REPLACE INTO expunged (mailbox_id, uid, modseq) VALUES (?, ?, ?)",
        ((inbox.id, uid, modseq) for uid in uids),
    )


# --- subscriptions --------------------------------------------------------------------------------


def subscribe(conn: sqlite3.Connection, account_id: int, name: str) -> None:
    """RFC 9051 §6.3.7: a name may be subscribed whether or not the mailbox exists."""
    conn.execute(
        "INSERT OR IGNORE INTO subscriptions (account_id, name) VALUES (?, ?)",
        (account_id, normalize_name(name)),
    )


def unsubscribe(conn: sqlite3.Connection, account_id: int, name: str) -> None:
    name = normalize_name(name)
    cur = conn.execute("DELETE FROM subscriptions WHERE account_id = ? AND name = ?", (account_id, name))
    if not cur.rowcount:
        raise MailboxError("NONEXISTENT", "Not subscribed to that mailbox")


def subscriptions(conn: sqlite3.Connection, account_id: int) -> set[str]:
    return {
        str(r[0]) for r in conn.execute("SELECT name FROM subscriptions WHERE account_id = ?", (account_id,))
    }


def list_entries(conn: sqlite3.Connection, account_id: int) -> tuple[list[MailboxEntry], set[str]]:
    """Every mailbox of the account (by name) and the subscribed names: what LIST works from."""
    boxes = [
        MailboxEntry(int(r[0]), str(r[1]), r[2])
        for r in conn.execute(
            "SELECT id, name, special_use FROM mailboxes WHERE account_id = ? ORDER BY name", (account_id,)
        )
    ]
    return boxes, subscriptions(conn, account_id)


# --- STATUS ---------------------------------------------------------------------------------------


def mailbox_status(conn: sqlite3.Connection, mailbox_id: int) -> MailboxStatus | None:
    row = conn.execute(
        "SELECT uidnext, uidvalidity, highestmodseq, recent_uid FROM mailboxes WHERE id = ?", (mailbox_id,)
    ).fetchone()
    if row is None:
        return None
    uidnext, uidvalidity, highestmodseq, recent_uid = (int(v) for v in row)
    counts = conn.execute(
        "SELECT count(*), coalesce(sum(flags & 1 = 0), 0), coalesce(sum(flags & 8 != 0), 0), "
        "coalesce(sum(size), 0), coalesce(sum(uid >= ?), 0) FROM messages WHERE mailbox_id = ?",
        (recent_uid, mailbox_id),
    ).fetchone()
    return MailboxStatus(
        int(counts[0]),
        int(counts[1]),
        int(counts[2]),
        int(counts[3]),
        int(counts[4]),
        uidnext,
        uidvalidity,
        highestmodseq,
    )


def mailbox_statuses(conn: sqlite3.Connection, mailbox_ids: list[int]) -> dict[int, MailboxStatus]:
    """STATUS of several mailboxes (LIST-STATUS, RFC 5819)."""
    out = {}
    for mailbox_id in mailbox_ids:
        status = mailbox_status(conn, mailbox_id)
        if status is not None:
            out[mailbox_id] = status
    return out
