from __future__ import annotations

import io
import sqlite3
from pathlib import Path

import pytest

from mailroom.store import directory as d
from mailroom.store import mail
from mailroom.store.database import db_path, open_database, transaction


def _setup(conn: sqlite3.Connection) -> tuple[int, int]:
    with transaction(conn):
        d.add_domain(conn, "example.org")
        a = d.add_account(conn, "a@example.org", "password1")
        b = d.add_account(conn, "b@example.org", "password1")
    return mail.inbox(conn, a.id).id, mail.inbox(conn, b.id).id


def test_body_shared_uids_and_expunge(conn: sqlite3.Connection) -> None:
    box_a, box_b = _setup(conn)
    data = b"Subject: hi\r\n\r\n" + b"x" * 1_000_000 + b"\r\n"
    with transaction(conn):
        body_id, stored = mail.store_message(
            conn, io.BytesIO(data), len(data), [mail.Placement(box_a), mail.Placement(box_b)], 1_700_000_000
        )
    assert [s.uid for s in stored] == [1, 1]
    assert conn.execute(
        "SELECT count(*), body_refs.refs FROM bodies JOIN body_refs ON body_id = id"
    ).fetchone() == (1, 2)
    chunks = list(mail.read_body(conn, body_id, chunk=65536))
    assert len(chunks) > 10 and b"".join(chunks) == data
    assert b"".join(mail.read_body(conn, body_id, offset=5, length=7)) == data[5:12]
    with transaction(conn):
        _, more = mail.store_message(
            conn,
            io.BytesIO(b"m2\r\n"),
            4,
            [mail.Placement(box_a, flags=mail.FLAG_BITS["\\Seen"])],
            1_700_000_001,
        )
    assert more[0].uid == 2 and more[0].modseq > stored[0].modseq
    with transaction(conn):
        removed, modseq = mail.expunge(conn, box_a, [1, 99])
    assert removed == [1]
    assert (
        conn.execute("SELECT count(*) FROM bodies WHERE id = ?", (body_id,)).fetchone()[0] == 1
    )  # still in b's INBOX
    assert (
        conn.execute("SELECT modseq FROM expunged WHERE mailbox_id = ? AND uid = 1", (box_a,)).fetchone()[0]
        == modseq
    )
    with transaction(conn):
        mail.expunge(conn, box_b, [1])
    assert conn.execute("SELECT count(*) FROM bodies WHERE id = ?", (body_id,)).fetchone()[0] == 0
    # UIDs are never reused
    with transaction(conn):
        _, again = mail.store_message(conn, io.BytesIO(b"m3\r\n"), 4, [mail.Placement(box_a)], 1_700_000_002)
    assert again[0].uid == 3
    assert mail.mailbox_totals(conn, box_a) == (2, 8)


def test_removing_account_drops_its_bodies(conn: sqlite3.Connection) -> None:
    box_a, _ = _setup(conn)
    with transaction(conn):
        mail.store_message(conn, io.BytesIO(b"hello\r\n"), 7, [mail.Placement(box_a)], 1)
        d.remove_account(conn, "a@example.org")
    assert conn.execute("SELECT count(*) FROM bodies").fetchone()[0] == 0
    assert conn.execute("SELECT count(*) FROM messages").fetchone()[0] == 0
    assert conn.execute("PRAGMA foreign_key_check").fetchall() == []


def test_failed_transaction_leaves_nothing(conn: sqlite3.Connection) -> None:
    box_a, _ = _setup(conn)
    try:
        with transaction(conn):
            mail.store_message(conn, io.BytesIO(b"short"), 100, [mail.Placement(box_a)], 1)
    except ValueError:
        pass
    assert conn.execute("SELECT count(*) FROM bodies").fetchone()[0] == 0
    assert mail.inbox(conn, d.find_account(conn, "a@example.org").id).uidnext == 1  # type: ignore[union-attr]


def test_storing_a_body_writes_it_once(tmp_path: Path) -> None:
    """Reference counts live outside the bodies row (migration 5): SQLite rewrites a whole record
    to change one column, and a counter beside the blob used to write every body twice."""
    conn = open_database(tmp_path)
    conn.execute("PRAGMA wal_autocheckpoint = 0")  # keep every frame of the transaction in the WAL
    box_a, box_b = _setup(conn)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = b"x" * (4 << 20)
    with transaction(conn):
        mail.store_message(
            conn, io.BytesIO(data), len(data), [mail.Placement(box_a), mail.Placement(box_b)], 1_700_000_000
        )
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    _busy, frames, _done = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    assert frames * page_size < len(data) * 1.1, f"{frames} WAL frames for a {len(data)}-byte body"


def test_migration_5_moves_reference_counts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mailroom.store import database

    monkeypatch.setattr(database, "SCHEMA_VERSION", 4)  # a database made before migration 5
    conn = open_database(tmp_path)
    box_a, box_b = _setup(conn)
    with transaction(conn):
        body_id, _ = mail.store_message(
            conn, io.BytesIO(b"hi\r\n"), 4, [mail.Placement(box_a), mail.Placement(box_b)], 1_700_000_000
        )
    assert conn.execute("SELECT refs FROM bodies").fetchone() == (2,)  # counted the old way
    monkeypatch.undo()
    assert database.migrate(conn, db_path(tmp_path)) == [5]
    assert conn.execute("SELECT body_id, refs FROM body_refs").fetchall() == [(body_id, 2)]
    with transaction(conn):
        conn.execute("DELETE FROM messages WHERE mailbox_id = ?", (box_a,))
    assert conn.execute("SELECT count(*) FROM bodies").fetchone() == (1,)
    with transaction(conn):
        conn.execute("DELETE FROM messages WHERE mailbox_id = ?", (box_b,))
    assert conn.execute("SELECT count(*) FROM bodies").fetchone() == (0,)
    assert conn.execute("SELECT count(*) FROM body_refs").fetchone() == (0,)
    assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
