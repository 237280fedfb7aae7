"""FETCH for the IMAP session (RFC 9051 §6.4.5, RFC 3516 BINARY, RFC 7162 CHANGEDSINCE).

Messages are answered in batches: one store round trip loads the rows, another the cached
structures, header blocks and (for small messages) whole bodies a batch needs. Values larger
than ``STREAM_MIN`` are streamed from the store chunk by chunk as literals, so a 20 MB message
never sits in memory. ``FETCH 1:* (FLAGS)`` and its kin take a fast path that formats bytes
directly.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from mailroom.imap import flags as imap_flags
from mailroom.imap import structure
from mailroom.imap.structure import PartMap
from mailroom.imap.view import MailboxView, Selection
from mailroom.net.imap_base import CommandFailed, internal_datetime
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
FAST_BATCH = 20000
MAX_HEADER = 1024 * 1024
_FAST = frozenset({"UID", "FLAGS", "MODSEQ", "INTERNALDATE", "RFC822.SIZE"})
_STRUCTURE_ATTRS = frozenset({"ENVELOPE", "BODY", "BODYSTRUCTURE"})


class _Raw:
    """Pre-formatted untagged lines (the fast path)."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def to_bytes(self, *, utf8: bool = False) -> bytes:
        return self.data


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


Content = bytes | _Range | None


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
    if isinstance(item, c.FetchBinary | c.FetchBinarySize):
        return bool(item.part)
    return False


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
) -> _Loaded:
    """Reader thread: cached structures (parsing bodies never parsed before), header blocks,
    and whole small bodies."""
    data: dict[int, bytes] = {}
    for body_id in data_ids:
        data[body_id] = mail.body_bytes(conn, body_id)
    entries = im.cache_entries(conn, structure_ids)
    new: list[tuple[int, bytes, bytes, bytes, str]] = []
    for body_id in structure_ids:
        if body_id not in entries:
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


async def fetch(s: IMAPSession, cmd: c.Fetch) -> None:
    view = s._selected()
    selection = view.select(cmd.sequence, cmd.uid)
    items = sorted(cmd.items, key=lambda i: not (isinstance(i, c.FetchAttr) and i.name == "UID"))
    if cmd.changed_since is not None or any(isinstance(i, c.FetchAttr) and i.name == "MODSEQ" for i in items):
        s.engine.enable(["CONDSTORE"])  # RFC 7162 §3.1: CONDSTORE-enabling
    if not selection:
        return
    if all(isinstance(i, c.FetchAttr) and i.name in _FAST for i in items):
        await _fetch_fast(s, view, selection, items, cmd.changed_since or 0)
        return
    sets_seen = not view.read_only and any(_sets_seen(i) for i in items)
    want_structure = any(_needs_structure(i) for i in items)
    want_header = any(_needs_header(i) for i in items)
    want_data = any(_needs_data(i) for i in items)
    condstore = "CONDSTORE" in s.engine.enabled
    for ranges in _batches(view, selection, BATCH):
        # one store round trip: the rows and what they need (the common case: one small message)
        rows, loaded = await s.store.read(
            _load_batch,
            view.mailbox_id,
            ranges,
            cmd.changed_since,
            want_structure,
            want_header,
            want_data,
        )
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
) -> tuple[list[im.Row], _Loaded]:
    """Reader thread: the rows of a batch and what answering them needs."""
    rows = im.rows(conn, mailbox_id, ranges)
    if changed_since is not None:
        rows = [r for r in rows if r.modseq > changed_since]
    body_ids = [r.body_id for r in rows]
    small = [r.body_id for r in rows if r.size <= INLINE_MAX] if want_data else []
    return rows, _load(conn, body_ids if want_structure else [], body_ids if want_header else [], small)


async def _fetch_fast(
    s: IMAPSession, view: MailboxView, selection: Selection, items: list[c.FetchItem], changed_since: int
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
        s.engine.send(_Raw(b"".join(out)))
        await s._flush_some()


async def _respond(
    s: IMAPSession,
    view: MailboxView,
    cmd: c.Fetch,
    items: list[c.FetchItem],
    row: im.Row,
    seq: int,
    loaded: _Loaded,
    seen_now: bool,
    condstore: bool,
) -> None:
    fixed: list[tuple[str | bytes, FetchValue]] = []
    streams: list[tuple[bytes, _Range, bool]] = []
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
            content = _binary_section(item.part, row, part_map)
            content = _partial(content, item.partial)
            await _content(s, fixed, streams, item.response_name(), content, row, data, True)
        else:
            fixed.append((item.response_name(), _binary_size(item.part, row, part_map)))
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


def _body_name(item: c.FetchBody) -> bytes:
    """The response's name for a BODY item; header field names upper-cased as Dovecot does."""
    section = item.section
    if section.fields:
        section = replace(section, fields=tuple(f.upper() for f in section.fields))
    return c.FetchBody(section, item.partial, item.peek).response_name()


async def _content(
    s: IMAPSession,
    fixed: list[tuple[str | bytes, FetchValue]],
    streams: list[tuple[bytes, _Range, bool]],
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
    raw = (
        data[content.start : content.end]
        if data is not None
        else await s.store.read(mail.read_chunk, row.body_id, content.start, content.end - content.start)
    )
    if content.encoding is not None:
        decoded = structure.decode_transfer(content.encoding, raw)
        end = None if content.limit < 0 else content.skip + content.limit
        raw = decoded[content.skip : end]
    fixed.append((name, raw))


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


def _binary_section(path: tuple[int, ...], row: im.Row, part_map: PartMap | None) -> Content:
    if not path:
        return _Range(0, row.size)
    assert part_map is not None
    part = part_map.find(path)
    if part is None:
        return b""
    if part.children:
        return _Range(part.header_end, part.body_end)
    if part.encoding in structure.IDENTITY_ENCODINGS:
        return _Range(part.header_end, part.body_end)
    if part.binary_size < 0:
        raise CommandFailed("Unknown Content-Transfer-Encoding", ResponseCode.UNKNOWN_CTE)
    return _Range(part.header_end, part.body_end, part.encoding, part.binary_size)


def _binary_size(path: tuple[int, ...], row: im.Row, part_map: PartMap | None) -> int:
    content = _binary_section(path, row, part_map)
    if content is None:
        return 0
    if isinstance(content, bytes):
        return len(content)
    return content.size


def _partial(content: Content, partial: c.Partial | None) -> Content:
    """``<origin.length>`` (RFC 9051 §6.4.5): an origin past the end gives an empty string."""
    if partial is None or content is None:
        return content
    if isinstance(content, bytes):
        return content[partial.origin : partial.origin + partial.length]
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


async def _stream(s: IMAPSession, body_id: int, rng: _Range) -> None:
    """Send a literal's octets from the store, one chunk in memory at a time."""
    remaining = rng.size
    decoder = structure.StreamDecoder(rng.encoding) if rng.encoding is not None else None
    skip = rng.skip
    pos = rng.start
    while remaining > 0 and pos < rng.end:
        chunk = await s.store.read(mail.read_chunk, body_id, pos, min(CHUNK, rng.end - pos))
        if not chunk:
            break
        pos += len(chunk)
        if decoder is not None:
            chunk = decoder.feed(chunk)
            if pos >= rng.end:
                chunk += decoder.finish()
            if skip:
                dropped = min(skip, len(chunk))
                chunk = chunk[dropped:]
                skip -= dropped
        chunk = chunk[:remaining]
        if chunk:
            s.engine.send_literal_data(chunk)
            remaining -= len(chunk)
            await s._flush_some()
    if remaining > 0:  # the announced size must be met, whatever the data did
        s.engine.send_literal_data(b"\0" * remaining if decoder is not None else b" " * remaining)
        await s._flush_some()
