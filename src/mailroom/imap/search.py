"""SEARCH evaluation (RFC 9051 §6.4.4, RFC 3501 §6.4.4, RFC 7162 MODSEQ, RFC 5032 WITHIN).

Runs on a store reader thread over rows in UID order, reading header blocks and bodies only
for messages the cheap keys have not already decided. Strings compare case-insensitively
(Unicode case folding) against decoded text: RFC 2047 words in headers, transfer encodings
and charsets in bodies (only text parts, as Dovecot without full-text search does).
"""

from __future__ import annotations

import datetime as _dt
import email.header
import email.utils
import re
from bisect import bisect_left
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property

from mailroom.imap import structure
from mailroom.imap.structure import CacheEntry, PartMap
from mailroom.message.mime import iter_header_lines
from mailroom.wire.imap import commands as c

__all__ = ["SearchContext", "SearchOutcome", "evaluate", "needs_content", "required_text"]

Reader = Callable[[int, int, int], bytes]  # (body_id, offset, length) -> octets
MAX_HEADER = 1024 * 1024
CHUNK = 1024 * 1024
_ASCII_HOSTILE = ("utf-16", "utf-32", "utf-7", "ucs-", "unicode")

_CONTENT_TYPE = re.compile(rb"(?:^|\n)content-type[ \t]*:([^\n]*(?:\n[ \t][^\n]*)*)")
_FLAG_BITS = {"\\SEEN": 1, "\\ANSWERED": 2, "\\FLAGGED": 4, "\\DELETED": 8, "\\DRAFT": 16}


@dataclass
class SearchContext:
    uids: Sequence[int]  # the view, for sequence numbers
    recent: set[int]
    saved: list[int]
    now: float


@dataclass
class SearchOutcome:
    uids: list[int] = field(default_factory=list)
    seqs: list[int] = field(default_factory=list)
    max_modseq: int = 0  # RFC 7162 §3.1.5: the highest MODSEQ of the matches when MODSEQ was searched
    new_cache: list[tuple[int, CacheEntry]] = field(default_factory=list)


def needs_content(key: c.SearchKey) -> tuple[bool, bool]:
    """(needs header blocks, needs bodies)."""
    headers = bodies = False
    stack: list[c.SearchKey] = [key]
    while stack:
        k = stack.pop()
        if isinstance(k, c.SearchHeader) or (isinstance(k, c.SearchDate) and k.field == "SENT"):
            headers = True
        elif isinstance(k, c.SearchText):
            headers = True
            bodies = True
        elif isinstance(k, c.SearchNot):
            stack.append(k.key)
        elif isinstance(k, c.SearchOr):
            stack.extend((k.left, k.right))
        elif isinstance(k, c.SearchAnd):
            stack.extend(k.keys)
    return headers, bodies


def uses_modseq(key: c.SearchKey) -> bool:
    stack: list[c.SearchKey] = [key]
    while stack:
        k = stack.pop()
        if isinstance(k, c.SearchModSeq):
            return True
        if isinstance(k, c.SearchNot):
            stack.append(k.key)
        elif isinstance(k, c.SearchOr):
            stack.extend((k.left, k.right))
        elif isinstance(k, c.SearchAnd):
            stack.extend(k.keys)
    return False


def _fold(text: str) -> str:
    return text.casefold()


def _decode_header_value(raw: bytes) -> str:
    text = raw.replace(b"\n", b"").replace(b"\r", b"").decode("utf-8", "replace")
    if "=?" not in text:
        return text
    try:
        return str(email.header.make_header(email.header.decode_header(text)))
    except Exception:  # malformed encoded words: search the raw text
        return text


def _cost(key: c.SearchKey) -> int:
    if isinstance(key, c.SearchText):
        return 3
    if isinstance(key, c.SearchHeader) or (isinstance(key, c.SearchDate) and key.field == "SENT"):
        return 2
    if isinstance(key, c.SearchNot):
        return _cost(key.key)
    if isinstance(key, c.SearchOr):
        return max(_cost(key.left), _cost(key.right))
    if isinstance(key, c.SearchAnd):
        return max((_cost(k) for k in key.keys), default=0)
    return 0


def _order(key: c.SearchKey) -> c.SearchKey:
    """Cheap keys first in every AND, so content is read only when it can still matter."""
    if isinstance(key, c.SearchAnd):
        return c.SearchAnd(tuple(sorted((_order(k) for k in key.keys), key=_cost)))
    if isinstance(key, c.SearchOr):
        return c.SearchOr(_order(key.left), _order(key.right))
    if isinstance(key, c.SearchNot):
        return c.SearchNot(_order(key.key))
    return key


class _Message:
    """One candidate with lazily read content."""

    def __init__(
        self,
        uid: int,
        seq: int,
        flags: int,
        keywords: str,
        modseq: int,
        internal_date: int,
        internal_tz: int,
        size: int,
        body_id: int,
        data: bytes | None,
        parts: str | None,
        reader: Reader,
        outcome: SearchOutcome,
    ) -> None:
        self.uid = uid
        self.seq = seq
        self.flags = flags
        self.keywords = keywords
        self.modseq = modseq
        self.internal_date = internal_date
        self.internal_tz = internal_tz
        self.size = size
        self.body_id = body_id
        self._data = data
        self._parts = parts
        self._reader = reader
        self._outcome = outcome

    @cached_property
    def header(self) -> bytes:
        prefix = self._data if self._data is not None else self._reader(self.body_id, 0, 16 * 1024)
        end = structure.header_end(prefix)
        if end is not None:
            return prefix[:end]
        if len(prefix) >= self.size:
            return prefix
        more = self._reader(self.body_id, 0, MAX_HEADER)
        end = structure.header_end(more)
        return more if end is None else more[:end]

    @cached_property
    def header_lower(self) -> bytes:
        return self.header.lower()

    @cached_property
    def fields(self) -> list[tuple[bytes, bytes]]:
        h = self.header
        return [(f.name.lower(), f.value) for f in iter_header_lines(h, 0, len(h)) if f.has_colon]

    def field_values(self, name: str) -> list[bytes]:
        key = name.lower().encode("utf-8", "replace")
        return [v for n, v in self.fields if n == key]

    @cached_property
    def whole(self) -> bytes:
        if self._data is not None and len(self._data) >= self.size:
            return self._data
        return self._reader(self.body_id, 0, self.size)

    @cached_property
    def part_map(self) -> PartMap:
        if self._parts is not None:
            return PartMap(self._parts)
        entry = structure.compute(self.whole)
        self._outcome.new_cache.append((self.body_id, entry))
        return PartMap(entry.parts)

    def sent_date(self) -> _dt.date:
        for value in reversed(self.field_values("date")):
            try:
                parsed = email.utils.parsedate_to_datetime(value.decode("ascii", "replace").strip())
            except (TypeError, ValueError, IndexError):
                continue
            if parsed is not None:
                return parsed.date()
        return self.internal_day()

    def internal_day(self) -> _dt.date:
        return _dt.datetime.fromtimestamp(self.internal_date + self.internal_tz * 60, _dt.UTC).date()

    # --- text ---------------------------------------------------------------------------------

    def header_has(self, name: str, needle: str) -> bool:
        folded = _fold(needle)
        if (
            folded
            and folded.isascii()
            and b"=?" not in self.header
            and folded.encode() not in self.header_lower
        ):
            return False  # the common case, decided without parsing the header
        values = self.field_values(name)
        if not values:
            return False
        return not folded or any(folded in _fold(_decode_header_value(v)) for v in values)

    def header_text_has(self, folded: str) -> bool:
        if folded.isascii() and folded.encode() in self.header_lower:
            return True
        if not folded.isascii() or b"=?" in self.header:
            return any(folded in _fold(_decode_header_value(v)) for _, v in self.fields)
        return False

    def body_has(self, folded: str) -> bool:
        if not folded:
            return True
        charset = self._simple_body()
        if charset is not None:
            # one text part in an identity encoding: no MIME parse, big bodies read in chunks
            start = len(self.header)
            plain = structure.Part(0, start, self.size - start, 0, "", "text/plain", charset, -1, [])
            return self._part_has(plain, folded)
        return any(self._part_has(part, folded) for part in self.part_map.text_parts())

    def _simple_body(self) -> str | None:
        """The charset of a message that is one plain text part in an identity encoding (judged
        from its header alone), or None."""
        if self._parts is not None:
            return None
        h = self.header_lower
        if b"content-transfer-encoding" in h and (b"base64" in h or b"quoted-printable" in h):
            return None
        if b"multipart" in h or b"message/" in h:
            return None
        m = _CONTENT_TYPE.search(h)
        if m is None:
            return ""
        value = m.group(1).strip()
        if not value.startswith(b"text/"):
            return None
        return structure.charset_of(value)

    def _part_has(self, part: structure.Part, folded: str) -> bool:
        start, end = part.header_end, part.body_end
        if end - start <= CHUNK:
            raw = (
                self._data[start:end]
                if self._data is not None and len(self._data) >= end
                else self._reader(self.body_id, start, end - start)
            )
            try:
                data = structure.decode_transfer(part.encoding, raw)
            except (structure.UnknownEncoding, ValueError):
                data = raw
            return _text_has(data, part.charset, folded)
        # a large part: decode in chunks, keeping an overlap as long as the needle
        try:
            decoder = structure.StreamDecoder(part.encoding)
        except structure.UnknownEncoding:
            decoder = structure.StreamDecoder("binary")
        text_decoder = structure.text_decoder(part.charset)
        tail = ""
        pos = start
        while pos < end:
            chunk = self._reader(self.body_id, pos, min(CHUNK, end - pos))
            if not chunk:
                break
            pos += len(chunk)
            try:
                decoded = decoder.feed(chunk)
            except ValueError:
                decoded = chunk
            text = tail + _fold(text_decoder.decode(decoded))
            if folded in text:
                return True
            tail = text[-len(folded) :]
        text = tail + _fold(text_decoder.decode(decoder.finish(), final=True))
        return folded in text


def _text_has(data: bytes, charset: str, folded: str) -> bool:
    if folded.isascii() and not charset.startswith(_ASCII_HOSTILE):
        if folded.encode() in data.lower():
            return True
        if data.isascii():
            return False
    return folded in _fold(structure.text_decoder(charset).decode(data, final=True))


def _matches(key: c.SearchKey, m: _Message, ctx: SearchContext) -> bool:
    if isinstance(key, c.SearchAnd):
        return all(_matches(k, m, ctx) for k in key.keys)
    if isinstance(key, c.SearchAll):
        return True
    if isinstance(key, c.SearchFlag):
        upper = key.flag.upper()
        if upper == "\\RECENT":
            return m.uid in ctx.recent
        bit = _FLAG_BITS.get(upper)
        if bit is not None:
            return bool(m.flags & bit)
        if upper.startswith("\\"):
            return False
        return upper in m.keywords.upper().split()
    if isinstance(key, c.SearchNot):
        return not _matches(key.key, m, ctx)
    if isinstance(key, c.SearchOr):
        return _matches(key.left, m, ctx) or _matches(key.right, m, ctx)
    if isinstance(key, c.SearchUid):
        if key.sequence.saved:
            return m.uid in set(ctx.saved)
        largest = ctx.uids[-1] if ctx.uids else 0
        return key.sequence.contains(m.uid, largest)
    if isinstance(key, c.SearchSequence):
        if key.sequence.saved:
            return m.uid in set(ctx.saved)
        return key.sequence.contains(m.seq, len(ctx.uids))
    if isinstance(key, c.SearchSize):
        return m.size > key.size if key.op == "LARGER" else m.size < key.size
    if isinstance(key, c.SearchDate):
        day = m.internal_day() if key.field == "INTERNAL" else m.sent_date()
        if key.op == "BEFORE":
            return day < key.date
        if key.op == "ON":
            return day == key.date
        return day >= key.date
    if isinstance(key, c.SearchWithin):
        age = ctx.now - m.internal_date
        return age >= key.seconds if key.op == "OLDER" else age <= key.seconds
    if isinstance(key, c.SearchModSeq):
        return m.modseq >= key.modseq
    if isinstance(key, c.SearchHeader):
        return m.header_has(key.field, key.value)
    if isinstance(key, c.SearchText):
        folded = _fold(key.value)
        if key.where == "TEXT" and m.header_text_has(folded):
            return True
        return m.body_has(folded)
    raise AssertionError(f"unknown search key {key!r}")  # pragma: no cover


def required_text(key: c.SearchKey) -> tuple[bytes | None, bool]:
    """Lower-case ASCII text every match must contain somewhere in its raw octets, from a HEADER,
    BODY or TEXT key at the top level (or in a top-level AND), and whether it came from BODY/TEXT
    (then encoded bodies cannot be judged from raw octets)."""
    keys = key.keys if isinstance(key, c.SearchAnd) else (key,)
    found: tuple[bytes | None, bool] = (None, False)
    for k in keys:
        if isinstance(k, c.SearchHeader | c.SearchText):
            folded = _fold(k.value)
            if folded and folded.isascii():
                if isinstance(k, c.SearchHeader):
                    return folded.encode(), False
                found = (folded.encode(), True)
    return found


# Raw octets cannot rule a message out when one of these is present
_ENCODED_MARKERS = (b"=?", b"base64", b"quoted-printable", b"utf-16", b"utf-32", b"utf-7", b"ucs-")


def evaluate(
    rows: Iterable[tuple[int, int, str, int, int, int, int, int, bytes | None, str | None]],
    key: c.SearchKey,
    ctx: SearchContext,
    reader: Reader,
) -> SearchOutcome:
    """Rows come from ``store.imap_messages.search_rows``: (uid, flags, keywords, modseq,
    internal date, its zone, size, body id, the body or None, the cached part tree or None)."""
    outcome = SearchOutcome()
    ordered = _order(key)
    modseq = uses_modseq(key)
    uids = ctx.uids
    n = len(uids)
    required, in_body = required_text(ordered)
    i = 0
    for uid, flags, keywords, row_modseq, idate, tz, size, body_id, data, parts in rows:
        if i >= n or uids[i] != uid:
            i = bisect_left(uids, uid)
            if i >= n or uids[i] != uid:
                continue  # not announced to this session yet
        seq = i + 1
        i += 1
        if required is not None and data is not None:
            lower = data.lower()
            if required not in lower and (
                (
                    not in_body
                    and b"=?" not in data
                    and (len(data) >= size or b"\n\r\n" in data or b"\n\n" in data)
                )
                or (in_body and len(data) >= size and not any(mark in lower for mark in _ENCODED_MARKERS))
            ):
                continue  # the text is nowhere in the message, and nothing in it is encoded
        m = _Message(
            uid, seq, flags, keywords, row_modseq, idate, tz, size, body_id, data, parts, reader, outcome
        )
        if _matches(ordered, m, ctx):
            outcome.uids.append(uid)
            outcome.seqs.append(seq)
            if modseq:
                outcome.max_modseq = max(outcome.max_modseq, row_modseq)
    return outcome
