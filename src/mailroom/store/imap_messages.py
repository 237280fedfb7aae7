"""Messages as the IMAP server needs them: SELECT snapshots, changes since a MODSEQ, flag
updates with MODSEQ (RFC 7162), COPY/MOVE with UID maps (RFC 4315, RFC 6851), APPEND from
spool files, rows and body ranges for FETCH and SEARCH, and the per-body structure cache.

Every function runs inside the caller's transaction (``Store.read`` / ``Store.write``). UIDs
are handled as inclusive ranges so a 100,000-message mailbox is a handful of range queries.
"""

from __future__ import annotations

import json
import operator
import sqlite3
import threading
from array import array
from bisect import bisect_left
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import islice
from typing import IO, Any, BinaryIO, cast

from mailroom.store import mail
from mailroom.store.database import NotFoundError

_ROW_SQL = (
    "SELECT uid, flags, keywords, modseq, internal_date, internal_tz, size, body_id FROM messages "
    "WHERE mailbox_id = ? AND uid BETWEEN ? AND ? ORDER BY uid"
)
HEADER_PREFIX = 16 * 1024  # enough for nearly every header block; longer ones are read on demand
INLINE_BODY = 256 * 1024  # SEARCH reads bodies up to this size in one go, larger ones in pieces


@dataclass(frozen=True, slots=True)
class Row:
    uid: int
    flags: int
    keywords: str
    modseq: int
    internal_date: int
    internal_tz: int
    size: int
    body_id: int


@dataclass(frozen=True)
class Snapshot:
    """A mailbox at SELECT time."""

    mailbox_id: int
    name: str
    uidvalidity: int
    uidnext: int
    highestmodseq: int
    recent_uid: int
    uids: array[int]
    first_unseen_uid: int | None
    keywords: list[str]


@dataclass
class Changes:
    """What changed in a mailbox since a session last looked (None from :func:`changes_since`
    when the mailbox is gone)."""

    uidvalidity: int
    highestmodseq: int
    recent_uid: int
    expunged: list[int] = field(default_factory=list)
    new: list[Row] = field(default_factory=list)
    changed: list[Row] = field(default_factory=list)


@dataclass(frozen=True)
class FlagUpdate:
    """Result of STORE: rows after the change, the UIDs UNCHANGEDSINCE refused, and the mailbox
    MODSEQ before and after (equal when nothing changed)."""

    rows: list[Row]
    modified: list[int]
    before: int
    after: int
    changed: set[int]


@dataclass(frozen=True)
class CopyResult:
    uidvalidity: int
    pairs: list[tuple[int, int]]  # (source UID, destination UID)
    source_before: int = 0  # source MODSEQ around a MOVE's expunge
    source_after: int = 0


@dataclass(frozen=True)
class AppendItem:
    source: IO[bytes]
    size: int
    flags: int
    keywords: str
    internal_date: int
    internal_tz: int


# --- SELECT ---------------------------------------------------------------------------------------


# The database file names the cache entries: a process may open more than one (tests do)
_DB_FILE = "(SELECT file FROM pragma_database_list WHERE name = 'main')"
# The mailbox row, its first unseen UID and the keywords in use, in one statement (each is an
# indexed lookup: mailboxes by (account_id, name) or id, messages_unseen, messages_keywords)
_SNAPSHOT_SQL = (
    f"SELECT mb.id, mb.name, mb.uidvalidity, mb.uidnext, mb.highestmodseq, mb.recent_uid, {_DB_FILE}, "
    "(SELECT min(uid) FROM messages WHERE mailbox_id = mb.id AND flags & 1 = 0), "
    "(SELECT json_group_array(DISTINCT keywords) FROM messages WHERE mailbox_id = mb.id AND keywords != '') "
    "FROM mailboxes mb WHERE "
)


def snapshot(conn: sqlite3.Connection, mailbox_id: int, *, cached_only: bool = False) -> Snapshot | None:
    row = conn.execute(_SNAPSHOT_SQL + "mb.id = ?", (mailbox_id,)).fetchone()
    return None if row is None else _snapshot(conn, row, cached_only)


def select_snapshot(
    conn: sqlite3.Connection, account_id: int, name: str, *, cached_only: bool = False
) -> Snapshot | None:
    """SELECT's whole read in one store round trip: :func:`snapshot` of a mailbox by name.
    ``cached_only``: raise :class:`NotCached` rather than read a mailbox index whole (see
    :func:`mailbox_index`)."""
    if name.upper() == "INBOX":  # RFC 9051 §5.1: INBOX is case-insensitive (as mail.get_mailbox)
        name = "INBOX"
    row = conn.execute(_SNAPSHOT_SQL + "mb.account_id = ? AND mb.name = ?", (account_id, name)).fetchone()
    return None if row is None else _snapshot(conn, row, cached_only)


def _snapshot(conn: sqlite3.Connection, row: tuple[Any, ...], cached_only: bool) -> Snapshot:
    mailbox_id, name, uidvalidity, uidnext, highestmodseq, recent_uid, db, unseen, in_use = row
    key = (int(uidvalidity), int(uidnext), int(highestmodseq))
    uids = _index(conn, str(db), int(mailbox_id), key, cached_only).uids
    keywords: dict[str, str] = {}
    for text in json.loads(in_use) if in_use else ():
        for kw in str(text).split():
            keywords.setdefault(kw.upper(), kw)
    return Snapshot(
        int(mailbox_id),
        str(name),
        *key,
        int(recent_uid),
        uids,
        None if unseen is None else int(unseen),
        sorted(keywords.values(), key=str.upper),
    )


class NotCached(Exception):
    """The answer needs more than a few rows read (``cached_only``): ask again on a reader thread."""


@dataclass(frozen=True, slots=True)
class MailboxIndex:
    """Every message of a mailbox in UID order with its flags, as of ``key`` = (UIDVALIDITY,
    UIDNEXT, HIGHESTMODSEQ). Every message added, removed or changed moves the key (each change
    takes a new MODSEQ, RFC 7162 §3.1), so an index whose key matches is exact. Shared by the
    sessions of this process: never changed in place (callers copy before changing)."""

    key: tuple[int, int, int]
    uids: array[int]
    flags: array[int]  # system-flag bits by index (typecode "B": only the low five bits mean anything)
    keywords: dict[int, str]  # index -> keywords, for the messages that have any


_INDEX_CACHE: OrderedDict[tuple[str, int], MailboxIndex] = OrderedDict()  # by (database file, mailbox id)
_INDEX_CACHE_LOCK = threading.Lock()
_INDEX_CACHE_SIZE = 32
_FLAG_MASK = 0xFF
CACHED_CHANGES = 256  # changes a cached_only read still applies to a cached index


def mailbox_index(
    conn: sqlite3.Connection, mailbox_id: int, *, cached_only: bool = False
) -> MailboxIndex | None:
    """The mailbox's :class:`MailboxIndex` (None: no such mailbox): the cached one when nothing
    changed, else the cached one brought up to date from the changes since its MODSEQ, else read
    whole. ``cached_only``: a cheap call, for the event loop's thread: raise :class:`NotCached`
    instead of reading the index whole or applying more than ``CACHED_CHANGES`` changes."""
    box = conn.execute(
        f"SELECT uidvalidity, uidnext, highestmodseq, {_DB_FILE} FROM mailboxes WHERE id = ?", (mailbox_id,)
    ).fetchone()
    if box is None:
        return None
    return _index(conn, str(box[3]), mailbox_id, (int(box[0]), int(box[1]), int(box[2])), cached_only)


def _index(
    conn: sqlite3.Connection, db: str, mailbox_id: int, key: tuple[int, int, int], cached_only: bool
) -> MailboxIndex:
    if not db:  # an in-memory database has no name to file its entries under
        if cached_only:
            raise NotCached(mailbox_id)
        return _read_index(conn, mailbox_id, key)
    slot = (db, mailbox_id)
    with _INDEX_CACHE_LOCK:
        old = _INDEX_CACHE.get(slot)
        if old is not None and old.key == key:
            _INDEX_CACHE.move_to_end(slot)
            return old
    limit = CACHED_CHANGES if cached_only else None
    index = _advance(conn, mailbox_id, old, key, limit) if old is not None else None
    if index is None:
        if cached_only:
            raise NotCached(mailbox_id)
        index = _read_index(conn, mailbox_id, key)
    with _INDEX_CACHE_LOCK:
        current = _INDEX_CACHE.get(slot)
        if current is None or current.key[0] != key[0] or current.key[2] <= key[2]:
            _INDEX_CACHE[slot] = index
        _INDEX_CACHE.move_to_end(slot)
        while len(_INDEX_CACHE) > _INDEX_CACHE_SIZE:
            _INDEX_CACHE.popitem(last=False)
    return index


def _read_index(conn: sqlite3.Connection, mailbox_id: int, key: tuple[int, int, int]) -> MailboxIndex:
    # two text values instead of a row per message, parsed as JSON arrays (in C): a
    # 100,000-message mailbox in a third of the time
    uid_text, flag_text = conn.execute(
        "SELECT group_concat(uid), group_concat(flags) FROM "
        "(SELECT uid, flags FROM messages WHERE mailbox_id = ? ORDER BY uid)",
        (mailbox_id,),
    ).fetchone()
    uids = array("L", json.loads(f"[{uid_text}]")) if uid_text else array("L")
    bits: list[int] = json.loads(f"[{flag_text}]") if flag_text else []
    try:
        flags = array("B", bits)
    except OverflowError:  # pragma: no cover - bits no flag uses
        flags = array("B", (b & _FLAG_MASK for b in bits))
    if not all(map(operator.lt, uids, islice(uids, 1, None))):  # pragma: no cover - cheap insurance
        pairs = sorted(zip(uids, flags, strict=True))
        uids, flags = array("L", (u for u, _ in pairs)), array("B", (f for _, f in pairs))
    keywords: dict[int, str] = {}
    for uid, text in conn.execute(
        "SELECT uid, keywords FROM messages INDEXED BY messages_keywords "
        "WHERE mailbox_id = ? AND keywords != ''",
        (mailbox_id,),
    ):
        keywords[bisect_left(uids, uid)] = str(text)
    return MailboxIndex(key, uids, flags, keywords)


def _advance(
    conn: sqlite3.Connection,
    mailbox_id: int,
    old: MailboxIndex,
    key: tuple[int, int, int],
    limit: int | None = None,
) -> MailboxIndex | None:
    """``old`` brought up to ``key`` from what changed after its MODSEQ: expunged UIDs (the
    ``expunged`` table), changed and new messages (MODSEQ above it). None: read it whole (more
    than ``limit`` changes, or than reading it whole would cost)."""
    if old.key[0] != key[0] or old.key[2] > key[2]:
        return None  # another mailbox under a reused id, or older than the cached one
    since = old.key[2]
    most = len(old.uids) // 8 + 64 if limit is None else limit
    gone = sorted(
        int(r[0])
        for r in conn.execute(
            "SELECT uid FROM expunged WHERE mailbox_id = ? AND modseq > ? LIMIT ?",
            (mailbox_id, since, most + 1),
        )
    )
    changed = conn.execute(
        "SELECT uid, flags, keywords FROM messages WHERE mailbox_id = ? AND modseq > ? ORDER BY uid LIMIT ?",
        (mailbox_id, since, most + 1),
    ).fetchall()
    if len(gone) + len(changed) > most:
        return None  # reading it whole is cheaper
    uids, flags, keywords = old.uids, old.flags, dict(old.keywords)
    gone_set = set(gone)
    cut = sorted({i for i in (bisect_left(uids, u) for u in gone) if i < len(uids) and uids[i] in gone_set})
    if cut:
        new_uids, new_flags = array("L"), array("B")
        start = 0
        for i in [*cut, len(uids)]:
            new_uids.extend(uids[start:i])
            new_flags.extend(flags[start:i])
            start = i + 1
        keywords = {i - bisect_left(cut, i): kw for i, kw in keywords.items() if uids[i] not in gone_set}
        uids, flags = new_uids, new_flags
    else:
        flags = flags[:]  # never change the shared one
    last = uids[-1] if uids else 0
    added_uids, added_flags = array("L"), array("B")
    for uid, bits, text in changed:
        if uid > last:
            added_uids.append(uid)
            added_flags.append(bits & _FLAG_MASK)
            if text:
                keywords[len(uids) + len(added_uids) - 1] = str(text)
            continue
        i = bisect_left(uids, uid)
        if i >= len(uids) or uids[i] != uid:
            return None  # pragma: no cover - a message the index never had, below its last UID
        flags[i] = bits & _FLAG_MASK
        if text:
            keywords[i] = str(text)
        else:
            keywords.pop(i, None)
    if added_uids:
        if cut:
            uids.extend(added_uids)  # already a new array
        else:
            uids = uids + added_uids  # a new array: the shared one stays as it was
        flags.extend(added_flags)
    return MailboxIndex(key, uids, flags, keywords)


def claim_recent(conn: sqlite3.Connection, mailbox_id: int, upto: int) -> int:
    """Take \\Recent for UIDs below ``upto`` (RFC 3501 §2.3.2: only one session sees a message
    as recent). Returns the first UID this session claimed: UIDs in [result, upto) are its own."""
    row = conn.execute("SELECT recent_uid FROM mailboxes WHERE id = ?", (mailbox_id,)).fetchone()
    if row is None:
        return upto
    first = int(row[0])
    if first < upto:
        conn.execute("UPDATE mailboxes SET recent_uid = ? WHERE id = ?", (upto, mailbox_id))
    return min(first, upto)


def claim_all_recent(conn: sqlite3.Connection, mailbox_id: int) -> tuple[int, int]:
    """Take \\Recent for every UID below the mailbox's UIDNEXT: (first UID claimed, UIDNEXT).
    Runs beside the SELECT snapshot, so UIDs in that range may also be newer than the snapshot."""
    row = conn.execute("SELECT recent_uid, uidnext FROM mailboxes WHERE id = ?", (mailbox_id,)).fetchone()
    if row is None:
        return 0, 0
    first, upto = int(row[0]), int(row[1])
    if first < upto:
        conn.execute("UPDATE mailboxes SET recent_uid = ? WHERE id = ?", (upto, mailbox_id))
    return min(first, upto), upto


def keywords_in_use(conn: sqlite3.Connection, mailbox_id: int) -> list[str]:
    found: dict[str, str] = {}
    for (text,) in conn.execute(
        "SELECT DISTINCT keywords FROM messages WHERE mailbox_id = ? AND keywords != ''", (mailbox_id,)
    ):
        for kw in str(text).split():
            found.setdefault(kw.upper(), kw)
    return sorted(found.values(), key=str.upper)


def changes_since(conn: sqlite3.Connection, mailbox_id: int, modseq: int, uidnext: int) -> Changes | None:
    box = conn.execute(
        "SELECT uidvalidity, highestmodseq, recent_uid FROM mailboxes WHERE id = ?", (mailbox_id,)
    ).fetchone()
    if box is None:
        return None
    changes = Changes(int(box[0]), int(box[1]), int(box[2]))
    if changes.highestmodseq <= modseq:
        return changes
    changes.expunged = [
        int(r[0])
        for r in conn.execute(
            "SELECT uid FROM expunged WHERE mailbox_id = ? AND modseq > ? AND uid < ?",
            (mailbox_id, modseq, uidnext),
        )
    ]
    base = "SELECT uid, flags, keywords, modseq, internal_date, internal_tz, size, body_id FROM messages "
    changes.new = [
        Row(*r)
        for r in conn.execute(base + "WHERE mailbox_id = ? AND uid >= ? ORDER BY uid", (mailbox_id, uidnext))
    ]
    changes.changed = [
        Row(*r)
        for r in conn.execute(
            base + "WHERE mailbox_id = ? AND modseq > ? AND uid < ? ORDER BY uid",
            (mailbox_id, modseq, uidnext),
        )
    ]
    return changes


# --- FETCH ----------------------------------------------------------------------------------------


def rows(conn: sqlite3.Connection, mailbox_id: int, ranges: Sequence[tuple[int, int]]) -> list[Row]:
    out: list[Row] = []
    for lo, hi in ranges:
        out.extend(Row(*r) for r in conn.execute(_ROW_SQL, (mailbox_id, lo, hi)))
    return out


def rows_with_bodies(
    conn: sqlite3.Connection, mailbox_id: int, ranges: Sequence[tuple[int, int]], max_size: int
) -> list[tuple[Row, bytes | None]]:
    """Rows with the octets of the messages of at most ``max_size`` (None for larger ones): one
    query for a FETCH of small messages' bodies, no blob handle per message."""
    sql = (
        "SELECT m.uid, m.flags, m.keywords, m.modseq, m.internal_date, m.internal_tz, m.size, m.body_id, "
        "CASE WHEN m.size <= ? THEN b.data END FROM messages m JOIN bodies b ON b.id = m.body_id "
        "WHERE m.mailbox_id = ? AND m.uid BETWEEN ? AND ? ORDER BY m.uid"
    )
    out: list[tuple[Row, bytes | None]] = []
    for lo, hi in ranges:
        out.extend((Row(*r[:8]), r[8]) for r in conn.execute(sql, (max_size, mailbox_id, lo, hi)))
    return out


def flag_rows(
    conn: sqlite3.Connection, mailbox_id: int, ranges: Sequence[tuple[int, int]], changed_since: int = 0
) -> list[tuple[int, int, str, int, int, int, int]]:
    """(uid, flags, keywords, modseq, internal_date, internal_tz, size) without building objects:
    the fast path for ``FETCH 1:* (FLAGS INTERNALDATE ...)``."""
    sql = (
        "SELECT uid, flags, keywords, modseq, internal_date, internal_tz, size FROM messages "
        "WHERE mailbox_id = ? AND uid BETWEEN ? AND ? AND modseq > ? ORDER BY uid"
    )
    out: list[tuple[int, int, str, int, int, int, int]] = []
    for lo, hi in ranges:
        out.extend(conn.execute(sql, (mailbox_id, lo, hi, changed_since)))
    return out


def uid_flags(
    conn: sqlite3.Connection, mailbox_id: int, ranges: Sequence[tuple[int, int]]
) -> list[tuple[int, int, str]]:
    """(uid, flags, keywords): the narrowest query, for ``UID FETCH 1:* (FLAGS)``."""
    sql = (
        "SELECT uid, flags, keywords FROM messages WHERE mailbox_id = ? AND uid BETWEEN ? AND ? ORDER BY uid"
    )
    out: list[tuple[int, int, str]] = []
    for lo, hi in ranges:
        out.extend(conn.execute(sql, (mailbox_id, lo, hi)))
    return out


def header_prefixes(conn: sqlite3.Connection, body_ids: Iterable[int]) -> dict[int, bytes]:
    """The first octets of each body (header lookups without reading whole messages)."""
    out: dict[int, bytes] = {}
    for body_id in set(body_ids):
        out[body_id] = mail.read_chunk(conn, body_id, 0, HEADER_PREFIX)
    return out


def body_size(conn: sqlite3.Connection, body_id: int) -> int:
    row = conn.execute("SELECT size FROM bodies WHERE id = ?", (body_id,)).fetchone()
    if row is None:
        raise NotFoundError(f"no body {body_id}")
    return int(row[0])


def cache_entries(
    conn: sqlite3.Connection, body_ids: Iterable[int]
) -> dict[int, tuple[bytes, bytes, bytes, str]]:
    """Cached (bodystructure, body, envelope, parts) by body id; bodies never parsed are absent."""
    out: dict[int, tuple[bytes, bytes, bytes, str]] = {}
    ids = sorted(set(body_ids))
    for i in range(0, len(ids), 500):
        chunk = ids[i : i + 500]
        marks = ",".join("?" * len(chunk))
        for r in conn.execute(
            f"SELECT body_id, bodystructure, body, envelope, parts FROM imap_cache WHERE body_id IN ({marks})",
            chunk,
        ):
            out[int(r[0])] = (bytes(r[1]), bytes(r[2]), bytes(r[3]), str(r[4]))
    return out


def save_cache(conn: sqlite3.Connection, entries: Iterable[tuple[int, bytes, bytes, bytes, str]]) -> None:
    """Store parsed structures (body id, bodystructure, body, envelope, parts); bodies deleted
    meanwhile are skipped."""
    for body_id, bs, body, env, parts in entries:
        conn.execute(
            "INSERT OR IGNORE INTO imap_cache (body_id, bodystructure, body, envelope, parts) "
            "SELECT id, ?, ?, ?, ? FROM bodies WHERE id = ?",
            (bs, body, env, parts, body_id),
        )


# --- SEARCH ---------------------------------------------------------------------------------------


SearchRow = tuple[int, int, str, int, int, int, int, int, bytes | None, str | None]
"""(uid, flags, keywords, modseq, internal_date, internal_tz, size, body_id, octets, parts)"""


def _like(text: bytes) -> str:
    escaped = text.decode("ascii").replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


# Raw octets cannot rule a message out when they hold encoded words ("=?"), or for body text,
# transfer-encoded parts or a charset that is not ASCII-compatible. (LIKE stops at a NUL octet:
# text after one is not looked at; RFC 5322 messages hold none.)
_UNDECIDED = "CAST(b.data AS TEXT) LIKE '%=?%'"
_UNDECIDED_BODY = _UNDECIDED + "".join(
    f" OR CAST(b.data AS TEXT) LIKE '%{word}%'"
    for word in ("base64", "quoted-printable", "utf-16", "utf-32", "utf-7", "ucs-")
)


def search_rows(
    conn: sqlite3.Connection,
    mailbox_id: int,
    ranges: Sequence[tuple[int, int]],
    with_headers: bool,
    with_bodies: bool,
    required: bytes | None = None,
    required_in_body: bool = False,
) -> Iterator[SearchRow]:
    """Rows for SEARCH, in UID order, with on request the body itself (when it is at most
    ``INLINE_BODY`` octets; larger ones are read in pieces by the caller) and, for body
    searches, the cached part tree.

    ``required``: lower-case ASCII text every match contains (SQLite's LIKE is ASCII
    case-insensitive): rows whose raw octets lack it, and hold nothing encoded, are left out
    inside SQLite, so most of a big mailbox never reaches Python."""
    data = f"CASE WHEN b.size <= {INLINE_BODY} THEN b.data ELSE NULL END"
    params: tuple[object, ...] = ()
    where = "m.mailbox_id = ? AND m.uid BETWEEN ? AND ?"
    if required is not None and (with_headers or with_bodies):
        undecided = _UNDECIDED_BODY if required_in_body else _UNDECIDED
        where += f" AND (b.size > {INLINE_BODY} OR CAST(b.data AS TEXT) LIKE ? ESCAPE '\\' OR {undecided})"
        params = (_like(required),)
    if with_bodies:
        sql = (
            f"SELECT m.uid, m.flags, m.keywords, m.modseq, m.internal_date, m.internal_tz, m.size, m.body_id, {data}, "
            "c.parts FROM messages m JOIN bodies b ON b.id = m.body_id LEFT JOIN imap_cache c ON c.body_id = m.body_id "
            f"WHERE {where} ORDER BY m.uid"
        )
    elif with_headers:
        sql = (
            f"SELECT m.uid, m.flags, m.keywords, m.modseq, m.internal_date, m.internal_tz, m.size, m.body_id, {data}, "
            f"NULL FROM messages m JOIN bodies b ON b.id = m.body_id WHERE {where} ORDER BY m.uid"
        )
    else:
        sql = (
            "SELECT uid, flags, keywords, modseq, internal_date, internal_tz, size, body_id, NULL, NULL "
            "FROM messages WHERE mailbox_id = ? AND uid BETWEEN ? AND ? ORDER BY uid"
        )
    for lo, hi in ranges:
        cur = conn.execute(sql, (mailbox_id, lo, hi, *params))
        while batch := cur.fetchmany(500):
            yield from batch


# --- STORE ----------------------------------------------------------------------------------------


def store_flags(
    conn: sqlite3.Connection,
    mailbox_id: int,
    ranges: Sequence[tuple[int, int]],
    mode: str,
    bits: int,
    keywords: Sequence[str],
    unchanged_since: int | None = None,
    only: set[int] | None = None,
) -> FlagUpdate:
    """+FLAGS / -FLAGS / FLAGS on the messages in ``ranges`` (restricted to ``only`` when given).
    Changed messages share one new MODSEQ (RFC 7162 §3.1.3); UNCHANGEDSINCE refuses messages
    changed after it (reported as MODIFIED)."""
    before = _highest(conn, mailbox_id)
    current = [r for r in rows(conn, mailbox_id, ranges) if only is None or r.uid in only]
    modseq = before + 1
    out: list[Row] = []
    modified: list[int] = []
    changed: set[int] = set()
    updates: list[tuple[int, str, int, int, int]] = []
    change_upper = [k for k in keywords]
    for r in current:
        if unchanged_since is not None and r.modseq > unchanged_since:
            modified.append(r.uid)
            out.append(r)
            continue
        if mode == "add":
            new_bits = r.flags | bits
        elif mode == "remove":
            new_bits = r.flags & ~bits
        else:
            new_bits = bits
        new_kw = _merge_keywords(r.keywords, change_upper, mode)
        if new_bits == r.flags and new_kw == r.keywords:
            if unchanged_since is not None:
                # RFC 7162 §3.1.3: a no-op STORE with UNCHANGEDSINCE still counts as done
                pass
            out.append(r)
            continue
        updates.append((new_bits, new_kw, modseq, mailbox_id, r.uid))
        changed.add(r.uid)
        out.append(Row(r.uid, new_bits, new_kw, modseq, r.internal_date, r.internal_tz, r.size, r.body_id))
    if updates:
        conn.execute("UPDATE mailboxes SET highestmodseq = ? WHERE id = ?", (modseq, mailbox_id))
        conn.executemany(
            "UPDATE messages SET flags = ?, keywords = ?, modseq = ? WHERE mailbox_id = ? AND uid = ?",
            updates,
        )
    return FlagUpdate(out, modified, before, modseq if updates else before, changed)


def _merge_keywords(current: str, change: Sequence[str], mode: str) -> str:
    if mode == "replace":
        return " ".join(change)
    words = current.split() if current else []
    if mode == "add":
        have = {w.upper() for w in words}
        for k in change:
            if k.upper() not in have:
                have.add(k.upper())
                words.append(k)
        return " ".join(words)
    drop = {k.upper() for k in change}
    return " ".join(w for w in words if w.upper() not in drop)


def _highest(conn: sqlite3.Connection, mailbox_id: int) -> int:
    row = conn.execute("SELECT highestmodseq FROM mailboxes WHERE id = ?", (mailbox_id,)).fetchone()
    if row is None:
        raise NotFoundError(f"no mailbox {mailbox_id}")
    return int(row[0])


def set_seen(conn: sqlite3.Connection, mailbox_id: int, uids: Sequence[int]) -> FlagUpdate:
    """\\Seen set by a FETCH of a body section (RFC 9051 §6.4.5)."""
    spans = _ranges(uids)
    return store_flags(conn, mailbox_id, spans, "add", 1, (), only=set(uids))


def _ranges(uids: Iterable[int]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for uid in sorted(set(uids)):
        if out and uid == out[-1][1] + 1:
            out[-1] = (out[-1][0], uid)
        else:
            out.append((uid, uid))
    return out


# --- EXPUNGE --------------------------------------------------------------------------------------


def expunge_deleted(
    conn: sqlite3.Connection, mailbox_id: int, ranges: Sequence[tuple[int, int]] | None = None
) -> tuple[list[int], int, int]:
    """Remove \\Deleted messages (all, or within UID ranges for UID EXPUNGE, RFC 4315).
    Returns (UIDs removed, MODSEQ before, MODSEQ after)."""
    before = _highest(conn, mailbox_id)
    if ranges is None:
        ranges = [(1, 0xFFFFFFFF)]
    uids: list[int] = []
    for lo, hi in ranges:
        uids.extend(
            int(r[0])
            for r in conn.execute(
                "SELECT uid FROM messages WHERE mailbox_id = ? AND uid BETWEEN ? AND ? AND flags & 8 != 0",
                (mailbox_id, lo, hi),
            )
        )
    removed, modseq = mail.expunge(conn, mailbox_id, uids)
    return removed, before, modseq if removed else before


# --- COPY / MOVE / APPEND -------------------------------------------------------------------------


def copy_messages(
    conn: sqlite3.Connection, source_id: int, ranges: Sequence[tuple[int, int]], dest_id: int, move: bool
) -> CopyResult:
    """COPY (RFC 9051 §6.4.7) or MOVE (RFC 6851): the same bodies, flags and dates under new UIDs."""
    dest = mail.get_mailbox_by_id(conn, dest_id)
    if dest is None:
        raise NotFoundError(f"no mailbox {dest_id}")
    pairs: list[tuple[int, int]] = []
    for r in rows(conn, source_id, ranges):
        stored = mail.add_message(
            conn,
            r.body_id,
            r.size,
            mail.Placement(dest_id, r.flags, r.keywords),
            r.internal_date,
            r.internal_tz,
        )
        pairs.append((r.uid, stored.uid))
    if not move:
        return CopyResult(dest.uidvalidity, pairs)
    before = _highest(conn, source_id)
    _removed, after = mail.expunge(conn, source_id, [s for s, _ in pairs])
    return CopyResult(dest.uidvalidity, pairs, before, after if pairs else before)


def append_messages(conn: sqlite3.Connection, mailbox_id: int, items: Sequence[AppendItem]) -> CopyResult:
    """APPEND (RFC 9051 §6.3.12; all messages of a MULTIAPPEND or none, RFC 3502)."""
    box = mail.get_mailbox_by_id(conn, mailbox_id)
    if box is None:
        raise NotFoundError(f"no mailbox {mailbox_id}")
    uids: list[tuple[int, int]] = []
    for item in items:
        _body, stored = mail.store_message(
            conn,
            cast(BinaryIO, item.source),
            item.size,
            [mail.Placement(mailbox_id, item.flags, item.keywords)],
            item.internal_date,
            item.internal_tz,
        )
        uids.append((0, stored[0].uid))
    return CopyResult(box.uidvalidity, uids)


def mailbox_id_by_name(conn: sqlite3.Connection, account_id: int, name: str) -> int | None:
    box = mail.get_mailbox(conn, account_id, name)
    return None if box is None else box.id
