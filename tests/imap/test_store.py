"""The IMAP store layer: mailbox names, subscriptions, STATUS, snapshots, flag updates with
MODSEQ, COPY/MOVE, change feed queries and the structure cache."""

from __future__ import annotations

import io
import sqlite3
from pathlib import Path

import pytest

from mailroom.store import directory, mail
from mailroom.store import imap_messages as im
from mailroom.store import mailboxes as mb
from mailroom.store.database import open_database, transaction
from mailroom.store.mailboxes import MailboxError

MSG = b"Subject: hi\r\n\r\nbody\r\n"


def setup(conn: sqlite3.Connection) -> tuple[int, int]:
    with transaction(conn):
        directory.add_domain(conn, "example.org")
        account = directory.add_account(conn, "a@example.org", "password1")
    return account.id, mail.inbox(conn, account.id).id


def put(
    conn: sqlite3.Connection, mailbox_id: int, flags: int = 0, keywords: str = "", data: bytes = MSG
) -> int:
    with transaction(conn):
        _body, stored = mail.store_message(
            conn, io.BytesIO(data), len(data), [mail.Placement(mailbox_id, flags, keywords)], 1_700_000_000
        )
    return stored[0].uid


def write(conn: sqlite3.Connection, fn, *args):  # type: ignore[no-untyped-def]
    with transaction(conn):
        return fn(conn, *args)


def test_names_are_validated_and_canonical() -> None:
    assert mb.normalize_name("inbox") == "INBOX"
    assert mb.normalize_name("Inbox/Sub/") == "INBOX/Sub"
    for bad in ("", "/", "a//b", "/a", "a\nb", "a*", "a%b"):
        with pytest.raises(MailboxError):
            mb.normalize_name(bad)


def test_create_delete_rename(conn: sqlite3.Connection) -> None:
    account, _inbox = setup(conn)
    box = write(conn, mb.create_mailbox, account, "a/b/c", ())
    names = {b.name for b in write(conn, mb.list_entries, account)[0]}
    assert {"a", "a/b", "a/b/c"} <= names  # superior levels made too (RFC 9051 §6.3.4)
    with pytest.raises(MailboxError) as exc:
        write(conn, mb.create_mailbox, account, "a/b", ())
    assert exc.value.code == "ALREADYEXISTS"
    write(conn, mb.rename_mailbox, account, "a", "z/y")
    names = {b.name for b in write(conn, mb.list_entries, account)[0]}
    assert {"z", "z/y", "z/y/b", "z/y/b/c"} <= names and "a" not in names
    assert mail.get_mailbox_by_id(conn, box.id).name == "z/y/b/c"  # type: ignore[union-attr]
    write(conn, mb.delete_mailbox, account, "z/y/b")
    names = {b.name for b in write(conn, mb.list_entries, account)[0]}
    assert "z/y/b" not in names and "z/y/b/c" in names  # children stay
    # a name used again gets a new UIDVALIDITY (RFC 9051 §2.3.1.1)
    first = write(conn, mb.create_mailbox, account, "again", ())
    write(conn, mb.delete_mailbox, account, "again")
    second = write(conn, mb.create_mailbox, account, "again", ())
    assert second.uidvalidity != first.uidvalidity
    with pytest.raises(MailboxError):
        write(conn, mb.delete_mailbox, account, "INBOX")


def test_rename_inbox_moves_messages_and_records_expunges(conn: sqlite3.Connection) -> None:
    account, inbox = setup(conn)
    uids = [put(conn, inbox), put(conn, inbox, flags=1)]
    before = mail.get_mailbox_by_id(conn, inbox)
    assert before is not None
    write(conn, mb.rename_mailbox, account, "INBOX", "Old")
    old = mail.get_mailbox(conn, account, "Old")
    assert old is not None
    assert [m.uid for m in mail.list_messages(conn, old.id)] == uids
    assert mail.list_messages(conn, inbox) == []
    changes = im.changes_since(conn, inbox, before.highestmodseq, before.uidnext)
    assert changes is not None and sorted(changes.expunged) == uids
    assert mail.get_mailbox_by_id(conn, inbox).uidnext == before.uidnext  # type: ignore[union-attr]


def test_subscriptions_outlive_mailboxes(conn: sqlite3.Connection) -> None:
    account, _ = setup(conn)
    assert "Sent" in mb.subscriptions(conn, account)  # default mailboxes start subscribed
    write(conn, mb.create_mailbox, account, "x", ())
    assert "x" not in mb.subscriptions(conn, account)
    write(conn, mb.subscribe, account, "x")
    write(conn, mb.delete_mailbox, account, "x")
    assert "x" in mb.subscriptions(conn, account)  # RFC 9051 §6.3.7
    write(conn, mb.unsubscribe, account, "x")
    with pytest.raises(MailboxError):
        write(conn, mb.unsubscribe, account, "x")


def test_status_snapshot_and_recent(conn: sqlite3.Connection) -> None:
    _account, inbox = setup(conn)
    put(conn, inbox, flags=1)
    put(conn, inbox, keywords="$Work Later")
    put(conn, inbox, flags=8, keywords="$work")
    st = mb.mailbox_status(conn, inbox)
    assert st is not None
    assert (st.messages, st.unseen, st.deleted, st.size, st.recent, st.uidnext) == (
        3,
        2,
        1,
        3 * len(MSG),
        3,
        4,
    )
    snap = im.snapshot(conn, inbox)
    assert snap is not None and list(snap.uids) == [1, 2, 3] and snap.first_unseen_uid == 2
    assert snap.keywords == ["$Work", "Later"]
    assert write(conn, im.claim_recent, inbox, 4) == 1
    assert write(conn, im.claim_recent, inbox, 4) == 4  # the next session gets none
    assert mb.mailbox_status(conn, inbox).recent == 0  # type: ignore[union-attr]


def test_store_flags_modseq_and_unchangedsince(conn: sqlite3.Connection) -> None:
    _account, inbox = setup(conn)
    for _ in range(3):
        put(conn, inbox)
    base = mail.get_mailbox_by_id(conn, inbox).highestmodseq  # type: ignore[union-attr]
    r = write(conn, im.store_flags, inbox, [(1, 2)], "add", 4, ["$A", "$b"], None, None)
    assert (r.before, r.after, r.changed) == (base, base + 1, {1, 2})
    assert [(x.flags, x.keywords, x.modseq) for x in r.rows] == [(4, "$A $b", base + 1)] * 2
    r = write(conn, im.store_flags, inbox, [(1, 3)], "remove", 0, ["$a"], None, None)
    assert r.changed == {1, 2} and [x.keywords for x in r.rows] == ["$b", "$b", ""]
    r = write(conn, im.store_flags, inbox, [(1, 3)], "replace", 1, [], base + 1, None)
    assert r.modified == [1, 2] and r.changed == {3}
    unchanged = write(conn, im.store_flags, inbox, [(3, 3)], "add", 1, [], None, None)
    assert unchanged.before == unchanged.after and not unchanged.changed
    changes = im.changes_since(conn, inbox, base, 4)
    assert changes is not None and [c.uid for c in changes.changed] == [1, 2, 3] and not changes.new


def test_copy_move_expunge_and_feed(conn: sqlite3.Connection) -> None:
    account, inbox = setup(conn)
    archive = mail.get_mailbox(conn, account, "Archive")
    assert archive is not None
    for flags in (1, 8, 0):
        put(conn, inbox, flags=flags)
    seen = mail.get_mailbox_by_id(conn, inbox)
    assert seen is not None
    r = write(conn, im.copy_messages, inbox, [(1, 2)], archive.id, False)
    assert r.pairs == [(1, 1), (2, 2)] and r.uidvalidity == archive.uidvalidity
    r = write(conn, im.copy_messages, inbox, [(3, 3)], archive.id, True)
    assert r.pairs == [(3, 3)] and r.source_after > r.source_before
    assert [m.flags for m in mail.list_messages(conn, archive.id)] == [1, 8, 0]
    removed, before, after = write(conn, im.expunge_deleted, inbox, None)
    assert removed == [2] and after == before + 1
    changes = im.changes_since(conn, inbox, seen.highestmodseq, seen.uidnext)
    assert changes is not None and sorted(changes.expunged) == [2, 3]
    assert conn.execute("SELECT refs FROM body_refs ORDER BY body_id").fetchall() == [(2,), (1,), (1,)]


def test_cache_entries_follow_bodies(conn: sqlite3.Connection) -> None:
    _account, inbox = setup(conn)
    put(conn, inbox)
    body_id = mail.list_messages(conn, inbox)[0].body_id
    write(conn, im.save_cache, [(body_id, b"(bs)", b"(b)", b"(env)", "[]"), (999, b"", b"", b"", "[]")])
    assert im.cache_entries(conn, [body_id, 999]) == {body_id: (b"(bs)", b"(b)", b"(env)", "[]")}
    write(conn, mail.expunge, inbox, [1])
    assert conn.execute("SELECT count(*) FROM imap_cache").fetchone()[0] == 0  # gone with the body


def test_snapshot_uid_lists_follow_every_change(conn: sqlite3.Connection) -> None:
    account, inbox = setup(conn)
    put(conn, inbox)
    put(conn, inbox)
    assert list(im.snapshot(conn, inbox).uids) == [1, 2]  # type: ignore[union-attr]
    assert list(im.snapshot(conn, inbox).uids) == [1, 2]  # type: ignore[union-attr]  # (cached)
    put(conn, inbox)
    assert list(im.snapshot(conn, inbox).uids) == [1, 2, 3]  # type: ignore[union-attr]
    write(conn, mail.expunge, inbox, [2])
    assert list(im.snapshot(conn, inbox).uids) == [1, 3]  # type: ignore[union-attr]
    write(conn, mb.rename_mailbox, account, "INBOX", "Moved")
    assert list(im.snapshot(conn, inbox).uids) == []  # type: ignore[union-attr]
    moved = mail.get_mailbox(conn, account, "Moved")
    assert moved is not None and list(im.snapshot(conn, moved.id).uids) == [1, 3]  # type: ignore[union-attr]


def _table(conn: sqlite3.Connection, mailbox_id: int) -> list[tuple[int, int, str]]:
    """What the mailbox holds, straight from SQL."""
    return [
        (int(u), int(f), str(k))
        for u, f, k in conn.execute(
            "SELECT uid, flags, keywords FROM messages WHERE mailbox_id = ? ORDER BY uid", (mailbox_id,)
        )
    ]


def _indexed(
    conn: sqlite3.Connection, mailbox_id: int, cached_only: bool = False
) -> list[tuple[int, int, str]]:
    conn.execute("BEGIN")
    try:
        index = im.mailbox_index(conn, mailbox_id, cached_only=cached_only)
    finally:
        conn.execute("COMMIT")
    assert index is not None
    assert len(index.uids) == len(index.flags)
    return [(u, index.flags[i], index.keywords.get(i, "")) for i, u in enumerate(index.uids)]


def test_mailbox_index_is_kept_up_to_date_from_the_changes(
    conn: sqlite3.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The index serving FETCH FLAGS and SELECT is read whole once, then brought forward from
    the changes since its MODSEQ (RFC 7162: every change takes a new one): after each kind of
    change it equals what SQL holds, without another whole read."""
    account, inbox = setup(conn)
    for n in range(40):
        put(conn, inbox, flags=n % 3 and 1, keywords="$Label1" if n % 7 == 0 else "")
    assert _indexed(conn, inbox) == _table(conn, inbox)
    whole_reads: list[int] = []
    read_index = im._read_index
    monkeypatch.setattr(im, "_read_index", lambda *a: whole_reads.append(1) or read_index(*a))
    changes = [
        lambda: put(conn, inbox, flags=4, keywords="Work"),  # a new message with a keyword
        lambda: write(conn, im.store_flags, inbox, [(5, 9)], "add", 4, ["Urgent"]),  # flags and keywords
        lambda: write(conn, im.store_flags, inbox, [(1, 40)], "remove", 0, ["$Label1"]),  # keywords go
        lambda: write(conn, mail.expunge, inbox, [2, 3, 17, 41]),  # from the middle and the end
        lambda: put(conn, inbox),
        lambda: write(conn, im.store_flags, inbox, [(30, 42)], "replace", 2, ["A", "B"]),
        lambda: write(conn, mail.add_flags, inbox, [1, 4, 42], 8),  # POP3's \Seen / DELE path
        lambda: write(conn, mail.expunge, inbox, [1]),  # the first one
    ]
    for change in changes:
        change()
        assert _indexed(conn, inbox, cached_only=True) == _table(conn, inbox)
    assert not whole_reads
    # many changes at once: a reader thread reads it whole; the event loop's thread does not
    for _ in range(im.CACHED_CHANGES + 1):
        put(conn, inbox)
    with pytest.raises(im.NotCached):
        _indexed(conn, inbox, cached_only=True)
    assert _indexed(conn, inbox) == _table(conn, inbox) and whole_reads
    # INBOX renamed: its messages move (recorded as expunged), the index follows
    write(conn, mb.rename_mailbox, account, "INBOX", "Moved")
    assert _indexed(conn, inbox) == [] == _table(conn, inbox)


def test_mailbox_index_cache_is_per_database(tmp_path: Path) -> None:
    """Two databases with the same mailbox ids, UIDVALIDITY, UIDNEXT and MODSEQ (tests open
    many in one process) never share a cached index."""
    for name in ("one", "two"):
        (tmp_path / name).mkdir()
    conns = [open_database(tmp_path / name) for name in ("one", "two")]
    try:
        boxes = []
        for flags, c in zip((1, 4), conns, strict=True):
            _account, inbox = setup(c)
            put(c, inbox, flags=flags)
            boxes.append(inbox)
        c1, c2 = conns
        c1.execute("UPDATE mailboxes SET uidvalidity = 77")
        c2.execute("UPDATE mailboxes SET uidvalidity = 77")
        assert _indexed(c1, boxes[0]) == [(1, 1, "")]
        assert _indexed(c2, boxes[1]) == [(1, 4, "")]
        assert [list(im.snapshot(c, b).uids) for c, b in zip(conns, boxes, strict=True)] == [[1], [1]]  # type: ignore[union-attr]
    finally:
        for c in conns:
            c.close()


def test_select_snapshot_in_one_read(conn: sqlite3.Connection) -> None:
    account, inbox = setup(conn)
    put(conn, inbox, flags=1, keywords="$Label1 Work")
    put(conn, inbox, keywords="work")
    put(conn, inbox, flags=1)
    snap = im.select_snapshot(conn, account, "inbox")  # RFC 9051 §5.1: any case
    assert snap is not None and snap.mailbox_id == inbox and snap.name == "INBOX"
    assert list(snap.uids) == [1, 2, 3] and snap.first_unseen_uid == 2 and snap.uidnext == 4
    assert snap.keywords == ["$Label1", "Work"]  # each once, case-insensitively
    assert im.select_snapshot(conn, account, "Nowhere") is None
    assert im.snapshot(conn, 9999) is None
