"""FETCH for the IMAP session (RFC 9051 §6.4.5, RFC 3516 BINARY, RFC 7162 CHANGEDSINCE).

Messages are answered in batches: one store read loads the rows and the cached structures,
header blocks and (for small messages) whole bodies a batch needs; a FETCH of a few small
messages reads them on the event loop's thread (no hop to a reader thread). Values larger than
``STREAM_MIN`` are streamed from the store chunk by chunk as literals, so a 20 MB message never
sits in memory. ``FETCH 1:* (UID FLAGS)`` is formatted in bulk from the store's mailbox index;
its kin (MODSEQ, INTERNALDATE, RFC822.SIZE) take a row path that formats bytes directly.
BINARY of a part with parts of its own is converted as Dovecot does (:func:`_binary_plan`).
"""

from __future__ import annotations

import contextlib
import functools
from bisect import bisect_left
from collections.abc import AsyncGenerator, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from mailroom.imap import flags as imap_flags
from mailroom.imap import structure
from mailroom.imap.structure import Part, PartMap
from mailroom.imap.view import MailboxView, Selection
from mailroom.net.imap_base import CommandFailed, Preformatted, internal_datetime
from mailroom.store import imap_messages as im
from mailroom.store import mail
from mailroom.wire.imap import commands as c
from mailroom.wire.imap.responses import (
    FetchResponse,
    FetchValue,
    Raw,
    ResponseCode,
    StreamedLiteral,
    format_date_time,
)

if TYPE_CHECKING:
    import sqlite3

    from mailroom.net.imap import IMAPSession

STREAM_MIN = 256 * 1024  # literal values larger than this are streamed from the store
INLINE_MAX = 256 * 1024  # messages up to this size are read whole when a body item is asked for
CHUNK = 256 * 1024
BATCH = 200
NOW_ROWS = 4  # a FETCH of this many messages at most may be read on the event loop's thread...
NOW_BYTES = 64 * 1024  # ...when none of them is larger than this (or its structure is cached)
FAST_BATCH = 20000
MAX_HEADER = 1024 * 1024
_FAST = frozenset({"UID", "FLAGS", "MODSEQ", "INTERNALDATE", "RFC822.SIZE"})
_STRUCTURE_ATTRS = frozenset({"ENVELOPE", "BODY", "BODYSTRUCTURE"})


@dataclass(frozen=True)
class _Range:
    """Octets ``start:end`` of a stored body, optionally decoded (BINARY)."""

    start: int
    end: int
    encoding: str | None = None  # a Content-Transfer-Encoding to undo
    decoded_size: int = -1
    skip: int = 0  # partial fetch of decoded data: octets to drop
    limit: int = -1  # partial fetch of decoded data: octets to keep

    @property
    def size(self) -> int:
        if self.encoding is None:
            return self.end - self.start
        total = max(self.decoded_size - self.skip, 0)
        return total if self.limit < 0 else min(total, self.limit)


@dataclass(frozen=True)
class _Header:
    """A header block to give ``Content-Transfer-Encoding: binary`` (see :func:`_binary_plan`)."""

    start: int
    end: int


@dataclass(frozen=True)
class _Converted:
    """BINARY of a multipart or message/rfc822 part, or of a whole message: the stored octets
    with every leaf body decoded and each decoded part's header saying so (see
    :func:`_binary_plan`); ``skip``/``limit`` as in :class:`_Range`."""

    pieces: tuple[bytes | _Range, ...]
    skip: int = 0
    limit: int = -1

    @property
    def size(self) -> int:
        whole = sum(len(p) if isinstance(p, bytes) else p.size for p in self.pieces)
        total = max(whole - self.skip, 0)
        return total if self.limit < 0 else min(total, self.limit)


Content = bytes | _Range | _Converted | None
_DECODED = frozenset({"base64", "quoted-printable"})


def _sets_seen(item: c.FetchItem) -> bool:
    if isinstance(item, c.FetchAttr):
        return item.name in ("RFC822", "RFC822.TEXT")
    if isinstance(item, c.FetchBody | c.FetchBinary):
        return not item.peek
    return False


def _needs_structure(item: c.FetchItem) -> bool:
    if isinstance(item, c.FetchAttr):
        return item.name in _STRUCTURE_ATTRS
    if isinstance(item, c.FetchBody):
        return bool(item.section.part)
    return isinstance(item, c.FetchBinary | c.FetchBinarySize)  # BINARY[] decodes a message's parts too


def _needs_header(item: c.FetchItem) -> bool:
    if isinstance(item, c.FetchAttr):
        return item.name in ("RFC822.HEADER", "RFC822.TEXT")
    if isinstance(item, c.FetchBody):
        return not item.section.part and item.section.text is not None
    return False


def _needs_data(item: c.FetchItem) -> bool:
    if isinstance(item, c.FetchAttr):
        return item.name in ("RFC822", "RFC822.TEXT")
    if isinstance(item, c.FetchBody):
        return item.section.text not in ("HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT") or bool(
            item.section.part
        )
    return isinstance(item, c.FetchBinary)


@dataclass
class _Loaded:
    entries: dict[int, tuple[bytes, bytes, bytes, str]]
    headers: dict[int, bytes]
    data: dict[int, bytes]
    new_entries: list[tuple[int, bytes, bytes, bytes, str]]


def _load(
    conn: sqlite3.Connection,
    structure_ids: list[int],
    header_ids: list[int],
    data_ids: list[int],
    cached_only: bool = False,
    bodies: dict[int, bytes] | None = None,
) -> _Loaded:
    """Reader thread: cached structures (parsing bodies never parsed before), header blocks,
    and whole small bodies (``bodies``: those read already). ``cached_only``: raise NotCached
    rather than parse a body."""
    data: dict[int, bytes] = {}
    for body_id in data_ids:
        data[body_id] = bodies[body_id] if bodies and body_id in bodies else mail.body_bytes(conn, body_id)
    entries = im.cache_entries(conn, structure_ids) if structure_ids else {}
    new: list[tuple[int, bytes, bytes, bytes, str]] = []
    for body_id in structure_ids:
        if body_id not in entries:
            if cached_only:
                raise im.NotCached(body_id)
            whole = data.get(body_id)
            if whole is None:
                whole = mail.body_bytes(conn, body_id)  # the MIME parser needs all of it, once
            e = structure.compute(whole)
            entries[body_id] = (e.bodystructure, e.body, e.envelope, e.parts)
            new.append((body_id, e.bodystructure, e.body, e.envelope, e.parts))
    headers: dict[int, bytes] = {}
    for body_id in header_ids:
        whole = data.get(body_id)
        prefix = whole if whole is not None else mail.read_chunk(conn, body_id, 0, im.HEADER_PREFIX)
        end = structure.header_end(prefix)
        if end is None and whole is None and len(prefix) >= im.HEADER_PREFIX:
            if cached_only:
                raise im.NotCached(body_id)
            prefix = mail.read_chunk(conn, body_id, 0, MAX_HEADER)
            end = structure.header_end(prefix)
        headers[body_id] = prefix if end is None else prefix[:end]
    return _Loaded(entries, headers, data, new)


def _batches(view: MailboxView, selection: Selection, size: int) -> Iterator[list[tuple[int, int]]]:
    """UID ranges of at most ``size`` messages each, in order."""
    out: list[tuple[int, int]] = []
    count = 0
    for a, b in selection.spans:
        i = a
        while i < b:
            j = min(b, i + size - count)
            out.append((view.uids[i], view.uids[j - 1]))
            count += j - i
            i = j
            if count >= size:
                yield out
                out, count = [], 0
    if out:
        yield out


@dataclass(frozen=True)
class _Plan:
    """What a FETCH item list needs, worked out once per distinct list (clients repeat theirs)."""

    items: tuple[c.FetchItem, ...]  # UID first (RFC 9051 §6.4.9: the UID item leads the UID FETCH answer)
    modseq: bool
    fast: bool
    sets_seen: bool
    want_structure: bool
    want_header: bool
    want_data: bool


@functools.lru_cache(maxsize=64)
def _plan(items: tuple[c.FetchItem, ...]) -> _Plan:
    ordered = tuple(sorted(items, key=lambda i: not (isinstance(i, c.FetchAttr) and i.name == "UID")))
    return _Plan(
        ordered,
        any(isinstance(i, c.FetchAttr) and i.name == "MODSEQ" for i in ordered),
        all(isinstance(i, c.FetchAttr) and i.name in _FAST for i in ordered),
        any(_sets_seen(i) for i in ordered),
        any(_needs_structure(i) for i in ordered),
        any(_needs_header(i) for i in ordered),
        any(_needs_data(i) for i in ordered),
    )


async def fetch(s: IMAPSession, cmd: c.Fetch) -> None:
    view = s._selected()
    selection = view.select(cmd.sequence, cmd.uid)
    plan = _plan(tuple(cmd.items))
    items = plan.items
    if cmd.changed_since is not None or plan.modseq:
        s.engine.enable(["CONDSTORE"])  # RFC 7162 §3.1: CONDSTORE-enabling
    if not selection:
        return
    if plan.fast:
        await _fetch_fast(s, view, selection, items, cmd.changed_since or 0)
        return
    sets_seen = not view.read_only and plan.sets_seen
    want_structure, want_header, want_data = plan.want_structure, plan.want_header, plan.want_data
    condstore = "CONDSTORE" in s.engine.enabled
    few = len(selection) <= NOW_ROWS
    for ranges in _batches(view, selection, BATCH):
        # one store read: the rows and what they need. The common case, a small message or
        # two (a client opening mail, mbsync fetching one message per command), is answered
        # without the hop to a reader thread
        args = (view.mailbox_id, ranges, cmd.changed_since, want_structure, want_header, want_data)
        if few:
            rows, loaded = await s._read_cached(_load_batch, *args)
        else:
            rows, loaded = await s.store.read(_load_batch, *args)
        seen_now: set[int] = set()
        if sets_seen and (unseen := [r.uid for r in rows if not r.flags & imap_flags.SEEN]):
            update = await s.store.write(im.set_seen, view.mailbox_id, unseen)
            s._own_change(update.before, update.after)
            if update.changed:
                s.store.publish([s._account_id()])
                seen_now = update.changed
                changed = {r.uid: r for r in update.rows}
                rows = [changed.get(r.uid, r) for r in rows]
        if loaded.new_entries:
            await s.store.write(im.save_cache, loaded.new_entries)
        for row in rows:
            seq = view.seq_of(row.uid)
            if seq is None:
                continue
            await _respond(s, view, cmd, items, row, seq, loaded, row.uid in seen_now, condstore)
        await s._flush_some()


def _load_batch(
    conn: sqlite3.Connection,
    mailbox_id: int,
    ranges: list[tuple[int, int]],
    changed_since: int | None,
    want_structure: bool,
    want_header: bool,
    want_data: bool,
    *,
    cached_only: bool = False,
) -> tuple[list[im.Row], _Loaded]:
    """Reader thread: the rows of a batch and what answering them needs. ``cached_only`` (on
    the event loop's thread): raise NotCached unless that is a few rows, bodies of at most
    NOW_BYTES and structures parsed before."""
    if cached_only and want_data and sum(hi - lo + 1 for lo, hi in ranges) <= NOW_ROWS:
        # the bodies come with the rows, in one query
        pairs = im.rows_with_bodies(conn, mailbox_id, ranges, NOW_BYTES)
        if any(data is None for _row, data in pairs):
            raise im.NotCached(mailbox_id)
        rows = [row for row, _data in pairs]
        bodies = {row.body_id: data for row, data in pairs if data is not None}
    else:
        rows = im.rows(conn, mailbox_id, ranges)
        bodies = {}
    if changed_since is not None:
        rows = [r for r in rows if r.modseq > changed_since]
    if cached_only and (
        len(rows) > NOW_ROWS or ((want_data or want_structure) and any(r.size > NOW_BYTES for r in rows))
    ):
        raise im.NotCached(mailbox_id)
    body_ids = [r.body_id for r in rows]
    small = [r.body_id for r in rows if r.size <= INLINE_MAX] if want_data else []
    return rows, _load(
        conn, body_ids if want_structure else [], body_ids if want_header else [], small, cached_only, bodies
    )


async def _fetch_fast(
    s: IMAPSession, view: MailboxView, selection: Selection, items: Sequence[c.FetchItem], changed_since: int
) -> None:
    """FETCH of UID/FLAGS/MODSEQ/INTERNALDATE/RFC822.SIZE only: bytes formatted directly."""
    names = [i.name for i in items if isinstance(i, c.FetchAttr)]
    recent = view.recent
    flag_cache: dict[tuple[int, str, bool], bytes] = {}

    def flags_of(bits: int, keywords: str, uid: int) -> bytes:
        key = (bits, keywords, uid in recent) if recent else (bits, keywords, False)
        fl = flag_cache.get(key)
        if fl is None:
            fl = flag_cache[key] = b"FLAGS " + imap_flags.flag_list_bytes(*key)
        return fl

    narrow = set(names) <= {"UID", "FLAGS"} and not changed_since
    if narrow:
        # the commonest FETCH of all (every sync client): UID and FLAGS, from the mailbox index
        index = await s._read_cached(im.mailbox_index, view.mailbox_id)
        if index is not None and _in_step(index, view):
            await _fetch_flags_indexed(s, view, selection, index, "UID" in names, "FLAGS" in names)
            return
    uids = view.uids
    n = len(uids)
    for ranges in _batches(view, selection, FAST_BATCH):
        out: list[bytes] = []
        if narrow:
            # the commonest FETCH of all (every sync client): UID and FLAGS
            rows = await s.store.read(im.uid_flags, view.mailbox_id, ranges)
            i = bisect_left(uids, rows[0][0]) if rows else 0
            with_uid = "UID" in names
            with_flags = "FLAGS" in names
            for uid, bits, keywords in rows:
                if i >= n or uids[i] != uid:
                    i = bisect_left(uids, uid)
                    if i >= n or uids[i] != uid:
                        continue
                i += 1
                if not with_flags:
                    out.append(b"* %d FETCH (UID %d)\r\n" % (i, uid))
                    continue
                key = (bits, keywords, uid in recent) if recent else (bits, keywords, False)
                fl = flag_cache.get(key)
                if fl is None:
                    fl = flag_cache[key] = b"FLAGS " + imap_flags.flag_list_bytes(*key)
                if with_uid:
                    out.append(b"* %d FETCH (UID %d %s)\r\n" % (i, uid, fl))
                else:
                    out.append(b"* %d FETCH (%s)\r\n" % (i, fl))
        else:
            full = await s.store.read(im.flag_rows, view.mailbox_id, ranges, changed_since)
            i = bisect_left(uids, full[0][0]) if full else 0
            for uid, bits, keywords, modseq, idate, tz, size in full:
                if i >= n or uids[i] != uid:
                    i = bisect_left(uids, uid)
                    if i >= n or uids[i] != uid:
                        continue
                i += 1
                parts = []
                for name in names:
                    if name == "UID":
                        parts.append(b"UID %d" % uid)
                    elif name == "FLAGS":
                        parts.append(flags_of(bits, keywords, uid))
                    elif name == "MODSEQ":
                        parts.append(b"MODSEQ (%d)" % modseq)
                    elif name == "INTERNALDATE":
                        parts.append(b"INTERNALDATE " + format_date_time(internal_datetime(idate, tz)))
                    else:
                        parts.append(b"RFC822.SIZE %d" % size)
                out.append(b"* %d FETCH (%s)\r\n" % (i, b" ".join(parts)))
        s.engine.send(Preformatted(b"".join(out)))
        await s._flush_some()


def _in_step(index: im.MailboxIndex, view: MailboxView) -> bool:
    """The index holds the view's messages at the view's sequence numbers: the client has been
    told of every expunge (messages that arrived since may follow; the client knows none yet)."""
    if index.uids is view.uids:  # the view still shares the index's array: nothing changed
        return True
    n = len(view.uids)
    if len(index.uids) < n:
        return False
    if len(index.uids) == n:
        return index.uids == view.uids
    return index.uids[:n] == view.uids


# "FLAGS (...)" by system-flag bits, without and with \Recent (messages with keywords aside)
_FLAGS_BY_BITS = [b"FLAGS " + imap_flags.flag_list_bytes(bits, "") for bits in range(256)]
_RECENT_FLAGS_BY_BITS = [b"FLAGS " + imap_flags.flag_list_bytes(bits, "", True) for bits in range(256)]


async def _fetch_flags_indexed(
    s: IMAPSession,
    view: MailboxView,
    selection: Selection,
    index: im.MailboxIndex,
    with_uid: bool,
    with_flags: bool,
) -> None:
    """``FETCH (UID FLAGS)`` formatted in bulk from the index, FAST_BATCH messages per write."""
    uids, flags, keywords, recent = index.uids, index.flags, index.keywords, view.recent
    with_keywords = sorted(keywords)
    for a, b in selection.spans:
        for lo in range(a, b, FAST_BATCH):
            hi = min(b, lo + FAST_BATCH)
            seqs = range(lo + 1, hi + 1)
            if not with_flags:
                lines = map(b"* %d FETCH (UID %d)\r\n".__mod__, zip(seqs, uids[lo:hi], strict=True))
            else:
                if recent:
                    items = [
                        (_RECENT_FLAGS_BY_BITS if uid in recent else _FLAGS_BY_BITS)[bits]
                        for uid, bits in zip(uids[lo:hi], flags[lo:hi], strict=True)
                    ]
                else:
                    items = [_FLAGS_BY_BITS[bits] for bits in flags[lo:hi]]
                for i in with_keywords[bisect_left(with_keywords, lo) : bisect_left(with_keywords, hi)]:
                    items[i - lo] = b"FLAGS " + imap_flags.flag_list_bytes(
                        flags[i], keywords[i], uids[i] in recent
                    )
                if with_uid:
                    lines = map(
                        b"* %d FETCH (UID %d %s)\r\n".__mod__, zip(seqs, uids[lo:hi], items, strict=True)
                    )
                else:
                    lines = map(b"* %d FETCH (%s)\r\n".__mod__, zip(seqs, items, strict=True))
            s.engine.send(Preformatted(b"".join(lines)))
            await s._flush_some()


async def _respond(
    s: IMAPSession,
    view: MailboxView,
    cmd: c.Fetch,
    items: Sequence[c.FetchItem],
    row: im.Row,
    seq: int,
    loaded: _Loaded,
    seen_now: bool,
    condstore: bool,
) -> None:
    fixed: list[tuple[str | bytes, FetchValue]] = []
    streams: list[tuple[bytes, _Range | _Converted, bool]] = []
    entry = loaded.entries.get(row.body_id)
    part_map = PartMap(entry[3]) if entry is not None else None
    data = loaded.data.get(row.body_id)
    header = loaded.headers.get(row.body_id)
    has_flags = False
    for item in items:
        if isinstance(item, c.FetchAttr):
            name = item.name
            if name == "UID":
                fixed.append(("UID", row.uid))
            elif name == "FLAGS":
                has_flags = True
                fixed.append(
                    ("FLAGS", imap_flags.flag_names(row.flags, row.keywords, row.uid in view.recent))
                )
            elif name == "MODSEQ":
                fixed.append(("MODSEQ", row.modseq))
            elif name == "INTERNALDATE":
                fixed.append(("INTERNALDATE", internal_datetime(row.internal_date, row.internal_tz)))
            elif name == "RFC822.SIZE":
                fixed.append(("RFC822.SIZE", row.size))
            elif name in _STRUCTURE_ATTRS:
                assert entry is not None
                value = {"BODYSTRUCTURE": entry[0], "BODY": entry[1], "ENVELOPE": entry[2]}[name]
                fixed.append((name, Raw(value)))
            elif name == "RFC822":
                await _content(s, fixed, streams, b"RFC822", _Range(0, row.size), row, data, False)
            elif name == "RFC822.HEADER":
                assert header is not None
                fixed.append(("RFC822.HEADER", header))
            elif name == "RFC822.TEXT":
                assert header is not None
                await _content(
                    s, fixed, streams, b"RFC822.TEXT", _Range(len(header), row.size), row, data, False
                )
        elif isinstance(item, c.FetchBody):
            content = await _body_section(s, item, row, header, part_map)
            content = _partial(content, item.partial)
            await _content(s, fixed, streams, _body_name(item), content, row, data, False)
        elif isinstance(item, c.FetchBinary):
            content = await _binary_section(s, item.part, row, part_map, data)
            content = _partial(content, item.partial)
            await _content(s, fixed, streams, item.response_name(), content, row, data, True)
        else:
            fixed.append((item.response_name(), await _binary_size(s, item.part, row, part_map, data)))
    if seen_now and not has_flags:
        fixed.append(("FLAGS", imap_flags.flag_names(row.flags, row.keywords, row.uid in view.recent)))
    if condstore and cmd.changed_since is not None and not any(n == "MODSEQ" for n, _ in fixed):
        fixed.append(("MODSEQ", row.modseq))
    first = True
    if not streams:
        s.engine.send(FetchResponse(seq, fixed))
        return
    for stream_name, rng, binary in streams:
        head: list[tuple[str | bytes, FetchValue]] = (
            fixed if first else ([("UID", row.uid)] if cmd.uid else [])
        )
        first = False
        s.engine.send(FetchResponse(seq, [*head, (stream_name, StreamedLiteral(rng.size, binary=binary))]))
        await _stream(s, row.body_id, rng)


@functools.lru_cache(maxsize=256)
def _body_name(item: c.FetchBody) -> bytes:
    """The response's name for a BODY item; header field names upper-cased as Dovecot does."""
    section = item.section
    if section.fields:
        section = replace(section, fields=tuple(f.upper() for f in section.fields))
    return c.FetchBody(section, item.partial, item.peek).response_name()


async def _content(
    s: IMAPSession,
    fixed: list[tuple[str | bytes, FetchValue]],
    streams: list[tuple[bytes, _Range | _Converted, bool]],
    name: bytes,
    content: Content,
    row: im.Row,
    data: bytes | None,
    binary: bool,
) -> None:
    """Put one value in the response: inline when small, else streamed after the rest."""
    if content is None or isinstance(content, bytes):
        fixed.append((name, content))
        return
    if content.size > STREAM_MIN:
        streams.append((name, content, binary))
        return
    out: list[bytes] = []
    for piece in content.pieces if isinstance(content, _Converted) else (content,):
        if isinstance(piece, bytes):
            out.append(piece)
            continue
        raw = (
            data[piece.start : piece.end]
            if data is not None
            else await s.store.read(mail.read_chunk, row.body_id, piece.start, piece.end - piece.start)
        )
        out.append(raw if piece.encoding is None else structure.decode_transfer(piece.encoding, raw))
    whole = b"".join(out)
    if content.skip or content.limit >= 0:
        whole = whole[content.skip : None if content.limit < 0 else content.skip + content.limit]
    fixed.append((name, whole))


async def _read_range(s: IMAPSession, row: im.Row, start: int, end: int) -> bytes:
    return await s.store.read(mail.read_chunk, row.body_id, start, end - start)


async def _body_section(
    s: IMAPSession, item: c.FetchBody, row: im.Row, header: bytes | None, part_map: PartMap | None
) -> Content:
    section = item.section
    if not section.part:
        if section.text is None:
            return _Range(0, row.size)
        assert header is not None
        if section.text == "HEADER":
            return header
        if section.text == "TEXT":
            return _Range(len(header), row.size)
        return structure.filter_header(header, section.fields, section.text == "HEADER.FIELDS.NOT")
    assert part_map is not None
    if section.text in (None, "MIME"):
        part = part_map.find(section.part)
        if part is None:
            return b""  # no such part: Dovecot sends an empty string (RFC 9051 leaves it open)
        if section.text == "MIME":
            return _Range(part.offset, part.header_end)
        return _Range(part.header_end, part.body_end)
    message = part_map.message_of(section.part)
    if message is None:
        return b""
    if section.text == "TEXT":
        return _Range(message.header_end, message.body_end)
    if section.text == "HEADER":
        return _Range(message.offset, message.header_end)
    block = await _read_range(s, row, message.offset, message.header_end)
    return structure.filter_header(block, section.fields, section.text == "HEADER.FIELDS.NOT")


async def _binary_section(
    s: IMAPSession, path: tuple[int, ...], row: im.Row, part_map: PartMap | None, data: bytes | None
) -> Content:
    assert part_map is not None
    part = part_map.find(path) if path else part_map.root
    if part is None:
        return b""
    if not path or part.children:
        return await _converted(s, part, not path, row, data)
    if part.encoding in structure.IDENTITY_ENCODINGS:
        return _Range(part.header_end, part.body_end)
    if part.binary_size < 0:
        raise CommandFailed("Unknown Content-Transfer-Encoding", ResponseCode.UNKNOWN_CTE)
    return _Range(part.header_end, part.body_end, part.encoding, part.binary_size)


async def _binary_size(
    s: IMAPSession, path: tuple[int, ...], row: im.Row, part_map: PartMap | None, data: bytes | None
) -> int:
    content = await _binary_section(s, path, row, part_map, data)
    if content is None:
        return 0
    if isinstance(content, bytes):
        return len(content)
    return content.size


def _binary_plan(part: Part, with_header: bool, out: list[bytes | _Range | _Header]) -> None:
    """BINARY of a part with children (RFC 9051 §6.4.5 and RFC 3516 §4.2 ask for leaf parts
    only and say nothing of others): as Dovecot (index-mail-binary.c add_binary_part), every
    leaf body in the subtree decoded, and the header of each part whose Content-Transfer-
    Encoding was base64 or quoted-printable given ``Content-Transfer-Encoding: binary`` instead;
    boundaries, preambles and other headers as stored. An encoding we cannot undo anywhere in
    the subtree is [UNKNOWN-CTE] (RFC 3516 §4.2)."""
    decoded = part.encoding in _DECODED
    if not decoded and part.encoding not in structure.IDENTITY_ENCODINGS:
        raise CommandFailed("Unknown Content-Transfer-Encoding", ResponseCode.UNKNOWN_CTE)
    if with_header:
        out.append(_Header(part.offset, part.header_end) if decoded else _Range(part.offset, part.header_end))
    if part.children:
        pos = part.header_end
        for child in part.children:
            out.append(_Range(pos, max(pos, child.offset)))
            _binary_plan(child, True, out)
            pos = max(pos, child.body_end)
        out.append(_Range(pos, max(pos, part.body_end)))
    elif part.body_size > 0:
        if not decoded:
            out.append(_Range(part.header_end, part.body_end))
        elif part.binary_size < 0:  # pragma: no cover - base64 and quoted-printable always decode
            raise CommandFailed("Unknown Content-Transfer-Encoding", ResponseCode.UNKNOWN_CTE)
        else:
            out.append(_Range(part.header_end, part.body_end, part.encoding, part.binary_size))


async def _converted(
    s: IMAPSession, part: Part, with_header: bool, row: im.Row, data: bytes | None
) -> Content:
    plan: list[bytes | _Range | _Header] = []
    _binary_plan(part, with_header, plan)
    pieces: list[bytes | _Range] = []
    for piece in plan:
        if isinstance(piece, _Header):
            block = (
                data[piece.start : piece.end]
                if data is not None
                else await _read_range(s, row, piece.start, piece.end)
            )
            piece = structure.binary_header(block)
        elif isinstance(piece, _Range) and piece.encoding is None:
            if piece.end <= piece.start:
                continue
            last = pieces[-1] if pieces else None
            if isinstance(last, _Range) and last.encoding is None and last.end == piece.start:
                pieces[-1] = _Range(last.start, piece.end)  # adjacent stored octets: one range
                continue
        pieces.append(piece)
    if len(pieces) == 1 and isinstance(pieces[0], _Range) and pieces[0].encoding is None:
        return pieces[0]  # nothing to convert: the octets as stored
    return _Converted(tuple(pieces))


def _partial(content: Content, partial: c.Partial | None) -> Content:
    """``<origin.length>`` (RFC 9051 §6.4.5): an origin past the end gives an empty string."""
    if partial is None or content is None:
        return content
    if isinstance(content, bytes):
        return content[partial.origin : partial.origin + partial.length]
    if isinstance(content, _Converted):
        return _Converted(content.pieces, content.skip + partial.origin, partial.length)
    if content.encoding is None:
        start = min(content.start + partial.origin, content.end)
        return _Range(start, min(start + partial.length, content.end))
    return _Range(
        content.start,
        content.end,
        content.encoding,
        content.decoded_size,
        content.skip + partial.origin,
        partial.length,
    )


async def _stream(s: IMAPSession, body_id: int, content: _Range | _Converted) -> None:
    """Send a literal's octets from the store, one chunk in memory at a time."""
    remaining = content.size
    skip = content.skip
    pieces = content.pieces if isinstance(content, _Converted) else (content,)
    decoded = isinstance(content, _Converted) or content.encoding is not None
    for piece in pieces:
        async with contextlib.aclosing(_chunks(s, body_id, piece)) as chunks:
            async for data in chunks:
                chunk = data
                if skip:
                    dropped = min(skip, len(chunk))
                    chunk = chunk[dropped:]
                    skip -= dropped
                chunk = chunk[:remaining]
                if chunk:
                    s.engine.send_literal_data(chunk)
                    remaining -= len(chunk)
                    await s._flush_some()
                if remaining <= 0:
                    return
    if remaining > 0:  # the announced size must be met, whatever the data did
        s.engine.send_literal_data(b"\0" * remaining if decoded else b" " * remaining)
        await s._flush_some()


async def _chunks(s: IMAPSession, body_id: int, piece: bytes | _Range) -> AsyncGenerator[bytes, None]:
    """A piece's octets in chunks: stored ones read from the store and decoded when they have
    an encoding (its skip and limit are the caller's)."""
    if isinstance(piece, bytes):
        yield piece
        return
    decoder = structure.StreamDecoder(piece.encoding) if piece.encoding is not None else None
    pos = piece.start
    while pos < piece.end:
        chunk = await s.store.read(mail.read_chunk, body_id, pos, min(CHUNK, piece.end - pos))
        if not chunk:
            return
        pos += len(chunk)
        if decoder is not None:
            chunk = decoder.feed(chunk)
            if pos >= piece.end:
                chunk += decoder.finish()
        yield chunk
