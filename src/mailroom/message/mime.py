"""MIME structure of a stored message: a part tree with byte offsets, parsed the way Dovecot does.

The parser is our own scanner (no ``email`` package repair heuristics): it reproduces Dovecot 2.3's
message-parser.c state machine so that part boundaries, sizes and line counts, and therefore
BODYSTRUCTURE, BODY[section] and BINARY, agree with Dovecot octet for octet.

* Input is the whole message as ``bytes`` (a ``bytearray``/``memoryview`` is materialised once);
  parts only record offsets, so section data can be served by slicing or streaming.
* Sizes are reported like Dovecot's: ``*_size`` is the physical octet count, ``*_vsize`` counts
  every bare LF as CRLF (IMAP sizes are of the CRLF form, RFC 9051 §2.3.4 / §7.5.2 body-fld-octets),
  ``*_lines`` counts LF octets.
* Running time is linear in the message size; no part is ever copied.

Part layout (absolute offsets into the message)::

    offset ........ header_end ........ body_end
    |  header (incl. blank line) | body |

``header_end - offset == header_size`` and ``body_end - header_end == body_size``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import IntFlag

from mailroom.message.rfc822 import Address, Rfc822Parser, cstr, parse_address_list, parse_params

__all__ = [
    "DEFAULT_MAX_DEPTH",
    "DEFAULT_MAX_PARTS",
    "ContentInfo",
    "EnvelopeData",
    "HeaderLine",
    "MimePart",
    "PartFlags",
    "iter_header_lines",
    "parse_message",
]

# Dovecot's MESSAGE_PARSER_DEFAULT_MAX_NESTED_MIME_PARTS / _MAX_TOTAL_MIME_PARTS
DEFAULT_MAX_DEPTH = 100
DEFAULT_MAX_PARTS = 10000
# RFC 2046 §5.1.1: boundaries are at most 70 characters; Dovecot allows 80 and truncates the rest.
_BOUNDARY_STRING_MAX_LEN = 70 + 10
_BOUNDARY_END_MAX_LEN = _BOUNDARY_STRING_MAX_LEN + 2 + 2

_LF_DASHDASH = re.compile(rb"\n--")


class PartFlags(IntFlag):
    """Dovecot's message_part flags (what the parser decided about a part)."""

    MULTIPART = 0x01
    MULTIPART_DIGEST = 0x02
    MESSAGE_RFC822 = 0x04
    TEXT = 0x08
    HAS_NULS = 0x20
    IS_MIME = 0x40  # Mime-Version or Content-Type seen, or a multipart child
    OVERFLOW = 0x80  # a nesting/count limit stopped the parser inside this part


_NO_FLAGS = PartFlags(0)


@dataclass
class ContentInfo:
    """The Content-* fields IMAP reports for a part (RFC 2045, 2183, 3066/5646, 2557, 1864).

    Values are raw header octets (IMAP returns header text undecoded, RFC 9051 §7.5.2); ``None``
    means the header was absent. RFC 2231 parameter continuations are merged as Dovecot merges them.
    """

    type: bytes | None = None
    subtype: bytes | None = None
    params: list[tuple[bytes, bytes]] = field(default_factory=list)
    id: bytes | None = None
    description: bytes | None = None
    encoding: bytes | None = None
    md5: bytes | None = None
    disposition: bytes | None = None
    disposition_params: list[tuple[bytes, bytes]] = field(default_factory=list)
    language: list[bytes] | None = None
    location: bytes | None = None


@dataclass
class EnvelopeData:
    """RFC 3501 §7.4.2 / RFC 9051 §7.5.2 ENVELOPE fields, raw (the last occurrence wins, as in Dovecot)."""

    date: bytes | None = None
    subject: bytes | None = None
    from_: list[Address] | None = None
    sender: list[Address] | None = None
    reply_to: list[Address] | None = None
    to: list[Address] | None = None
    cc: list[Address] | None = None
    bcc: list[Address] | None = None
    in_reply_to: bytes | None = None
    message_id: bytes | None = None


@dataclass(eq=False)
class MimePart:
    """One node of the MIME tree. A message/rfc822 part has exactly one child: the inner message."""

    offset: int
    parent: MimePart | None = field(default=None, repr=False)
    depth: int = 0
    flags: PartFlags = _NO_FLAGS
    header_size: int = 0
    header_vsize: int = 0
    header_lines: int = 0
    body_size: int = 0
    body_vsize: int = 0
    body_lines: int = 0
    children: list[MimePart] = field(default_factory=list)
    content: ContentInfo = field(default_factory=ContentInfo)
    envelope: EnvelopeData | None = None  # set on the root and on every message/rfc822 child

    @property
    def header_end(self) -> int:
        return self.offset + self.header_size

    @property
    def body_start(self) -> int:
        return self.offset + self.header_size

    @property
    def body_end(self) -> int:
        return self.offset + self.header_size + self.body_size

    @property
    def is_multipart(self) -> bool:
        return bool(self.flags & PartFlags.MULTIPART)

    @property
    def is_message_rfc822(self) -> bool:
        return bool(self.flags & PartFlags.MESSAGE_RFC822)

    def walk(self) -> list[MimePart]:
        """This part and all parts below it, in message order."""
        out: list[MimePart] = []
        stack = [self]
        while stack:
            part = stack.pop()
            out.append(part)
            stack.extend(reversed(part.children))
        return out


@dataclass(frozen=True)
class HeaderLine:
    """One header field as found in the message (continuation lines included).

    ``start``/``end`` are absolute offsets of the whole field including its final line break;
    ``value`` is the unfolded value the way Dovecot sees it: the first line after the colon (leading
    whitespace skipped), each continuation line appended after a bare "\\n", CRs dropped.
    ``name`` is None for a line without a colon that is not a continuation.
    """

    name: bytes
    value: bytes
    start: int
    end: int
    has_colon: bool


# ---------------------------------------------------------------------------------------------
# header scanning (Dovecot message-header-parser.c with SKIP_INITIAL_LWSP | DROP_CR)


def _line_end(data: bytes, pos: int, end: int) -> tuple[int, int]:
    """(end of the line content without [CR]LF, start of the next line)."""
    lf = data.find(b"\n", pos, end)
    if lf < 0:
        return end, end
    stop = lf - 1 if lf > pos and data[lf - 1] == 0x0D else lf
    return stop, lf + 1


def _is_eoh(data: bytes, pos: int, end: int) -> bool:
    if pos >= end:
        return False
    c = data[pos]
    return c == 0x0A or (c == 0x0D and pos + 1 < end and data[pos + 1] == 0x0A)


def iter_header_lines(data: bytes, start: int, end: int) -> list[HeaderLine]:
    """Header fields in data[start:end] (a part's header block, as the parser delimited it).

    RFC 5322 §2.2 / §2.2.3: a field is "name:" value plus continuation lines that start with WSP.
    Like Dovecot, a line without a colon counts as a field whose name is the whole line.
    """
    fields: list[HeaderLine] = []
    pos = start
    while pos < end:
        if _is_eoh(data, pos, end):
            break
        stop, nxt = _line_end(data, pos, end)
        colon = data.find(b":", pos, stop)
        line_start = pos
        if colon < 0:
            name = data[pos:stop]
            value = bytearray()
            has_colon = False
        else:
            n_end = colon
            while n_end > pos and data[n_end - 1] in b" \t":
                n_end -= 1
            name = data[pos:n_end]
            v = colon + 1
            while v < stop and data[v] in b" \t":
                v += 1
            if v == stop and colon + 1 < stop:
                v = colon + 2  # value is all whitespace: skip only one
            value = bytearray(data[v:stop])
            has_colon = True
        pos = nxt
        while pos < end and data[pos] in b" \t":
            stop, nxt = _line_end(data, pos, end)
            value += b"\n"
            value += data[pos:stop]
            pos = nxt
        fields.append(HeaderLine(bytes(name), bytes(value), line_start, pos, has_colon))
    return fields


# ---------------------------------------------------------------------------------------------
# Content-* and envelope fields (Dovecot message-part-data.c)


def _parse_content_type(info: ContentInfo, value: bytes) -> None:
    parser = Rfc822Parser(value)
    parser.skip_lwsp()
    out = bytearray()
    ret = parser.parse_content_type(out)
    text = cstr(bytes(out))
    slash = text.find(b"/")
    if slash >= 0:
        info.type, info.subtype = text[:slash], text[slash + 1 :]
    else:
        info.type = text
    if ret < 0:
        return  # broken: keep what we got, no parameters
    info.params = parse_params(parser)


def _parse_transfer_encoding(info: ContentInfo, value: bytes) -> None:
    parser = Rfc822Parser(value)
    parser.skip_lwsp()
    out = bytearray()
    if parser.parse_mime_token(out) >= 0 and parser.skip_lwsp() == 0 and out:
        info.encoding = cstr(bytes(out))


def _parse_disposition(info: ContentInfo, value: bytes) -> None:
    # RFC 2183 §2: disposition-type *(";" disposition-parm)
    parser = Rfc822Parser(value)
    parser.skip_lwsp()
    out = bytearray()
    if parser.parse_mime_token(out) < 0:
        return
    info.disposition = cstr(bytes(out))
    info.disposition_params = parse_params(parser)


def _parse_language(info: ContentInfo, value: bytes) -> None:
    # RFC 3282 §2: Content-Language = 1#Language-tag
    parser = Rfc822Parser(value)
    langs: list[bytes] = []
    parser.skip_lwsp()
    while True:
        out = bytearray()
        if parser.parse_atom(out) < 0:
            break
        langs.append(cstr(bytes(out)))
        if parser.pos >= parser.end or parser.data[parser.pos] != 0x2C:
            break
        parser.pos += 1
        parser.skip_lwsp()
    if langs:
        info.language = langs


def _content_header(info: ContentInfo, name: bytes, value: bytes) -> None:
    key = cstr(name)[8:].lower()
    if key == b"id":
        if info.id is None:
            info.id = cstr(value)
    elif key == b"md5":
        if info.md5 is None:
            info.md5 = cstr(value)
    elif key == b"type":
        if info.type is None:
            _parse_content_type(info, value)
    elif key == b"transfer-encoding":
        if info.encoding is None:
            _parse_transfer_encoding(info, value)
    elif key == b"language":
        if info.language is None:
            _parse_language(info, value)
    elif key == b"location":
        if info.location is None:
            info.location = cstr(value)
    elif key == b"description":
        if info.description is None:
            info.description = cstr(value)
    elif key == b"disposition" and not info.disposition_params:
        # Dovecot tests the parameter list, not the disposition, so a later header can win
        _parse_disposition(info, value)


_ENVELOPE_STRINGS = {
    b"date": "date",
    b"subject": "subject",
    b"in-reply-to": "in_reply_to",
    b"message-id": "message_id",
}
_ENVELOPE_ADDRESSES = {
    b"from": "from_",
    b"sender": "sender",
    b"reply-to": "reply_to",
    b"to": "to",
    b"cc": "cc",
    b"bcc": "bcc",
}


def _envelope_header(env: EnvelopeData, name: bytes, value: bytes) -> None:
    key = cstr(name).lower()
    attr = _ENVELOPE_STRINGS.get(key)
    if attr is not None:
        setattr(env, attr, cstr(value))
        return
    attr = _ENVELOPE_ADDRESSES.get(key)
    if attr is not None:
        addrs = parse_address_list(value)
        if addrs:  # repeated address fields accumulate (Dovecot appends them)
            setattr(env, attr, (getattr(env, attr) or []) + addrs)


# ---------------------------------------------------------------------------------------------
# the structure parser (Dovecot message-parser.c, blocking full-buffer variant)


@dataclass(eq=False)
class _Boundary:
    part: MimePart
    boundary: bytes
    epilogue_found: bool = False


class _Parser:
    def __init__(self, data: bytes, max_depth: int, max_parts: int) -> None:
        self.d = data
        self.n = len(data)
        self.max_depth = max(max_depth, 1)
        self.max_parts = max(max_parts, 1)
        self.total_parts = 1
        self.boundaries: list[_Boundary] = []  # innermost last
        self.last_chr = 0x0A

    # body accounting (parse_body_add_block)
    def add_body(self, part: MimePart, start: int, stop: int) -> None:
        if stop <= start:
            return
        d = self.d
        lines = d.count(b"\n", start, stop)
        with_cr = d.count(b"\r\n", start, stop)
        if d[start] == 0x0A and start > 0 and d[start - 1] == 0x0D:
            with_cr += 1  # CR of the previous block
        if d.find(b"\0", start, stop) >= 0:
            part.flags |= PartFlags.HAS_NULS
        part.body_size += stop - start
        part.body_vsize += stop - start + (lines - with_cr)
        part.body_lines += lines
        self.last_chr = d[stop - 1]

    def boundary_line_find(self, pos: int) -> _Boundary | None:
        """RFC 2046 §5.1.1: a line starting "--" + boundary (prefix match, longest wins)."""
        d, n = self.d, self.n
        if n - pos < 2 or d[pos] != 0x2D or d[pos + 1] != 0x2D:
            return None
        if not self.boundaries or self.total_parts >= self.max_parts:
            return None
        data = pos + 2
        size = n - data
        lf = d.find(b"\n", data)
        trailing_dashes = False
        if lf >= 0:
            find_size = lf - data
            if find_size > 0 and d[data + find_size - 1] == 0x0D:
                find_size -= 1
            if find_size > 2 and d[data + find_size - 1] == 0x2D and d[data + find_size - 2] == 0x2D:
                trailing_dashes = True
        else:
            find_size = min(size, _BOUNDARY_END_MAX_LEN)
        line = d[data : data + find_size]
        best: _Boundary | None = None
        for b in reversed(self.boundaries):
            blen = len(b.boundary)
            if (
                blen <= find_size
                and line.startswith(b.boundary)
                and (best is None or len(best.boundary) < blen)
            ):
                best = b
                if blen == find_size or (blen == find_size - 2 and trailing_dashes):
                    break
        if best is None:
            return None
        blen = len(best.boundary)
        best.epilogue_found = size >= blen + 2 and d[data + blen : data + blen + 2] == b"--"
        return best

    def finish_part(self, part: MimePart) -> MimePart:
        parent = part.parent
        assert parent is not None
        parent.body_size += part.header_size + part.body_size
        parent.body_vsize += part.header_vsize + part.body_vsize
        parent.body_lines += part.header_lines + part.body_lines
        return parent

    def new_child(self, parent: MimePart, pos: int) -> MimePart:
        child = MimePart(offset=pos, parent=parent, depth=parent.depth + 1)
        parent.children.append(child)
        self.total_parts += 1
        return child

    def parse(self) -> MimePart:
        root = MimePart(offset=0)
        part = root
        pos = 0
        state = "header"
        while True:
            if state == "header":
                pos, state = self.parse_headers(part, pos)
                if state == "rfc822":
                    # Dovecot places the child right after the counted header, which lags the read
                    # position by one line break when a boundary cut the header short
                    part = self.new_child(part, part.body_start)
                    state = "header"
                continue
            if state == "body_to_boundary":
                pos, found, first_line = self.body_to_boundary(part, pos)
                if found is None:
                    break
                part, pos = self.part_finish(part, found, pos, first_line)
                state = "skip_boundary_line"
                continue
            if state == "skip_boundary_line":
                lf = self.d.find(b"\n", pos)
                if lf < 0:
                    self.add_body(part, pos, self.n)
                    break
                self.add_body(part, pos, lf + 1)
                pos = lf + 1
                if not self.boundaries or self.boundaries[-1].part is not part:
                    state = "body_to_boundary" if self.boundaries else "body_to_eof"
                else:
                    part = self.new_child(part, pos)
                    part.flags |= PartFlags.IS_MIME
                    state = "header"
                continue
            # body_to_eof
            self.add_body(part, pos, self.n)
            break
        while part.parent is not None:
            part = self.finish_part(part)
        return root

    def parse_headers(self, part: MimePart, pos: int) -> tuple[int, str]:
        """Header block of ``part`` (parse_next_header); returns (body position, next state)."""
        d, n = self.d, self.n
        start = pos
        seen_content_type = False
        last_boundary: bytes | None = None
        multipart = False
        prev_newline = 0
        eoh_seen = False
        fields: list[tuple[bytes, bytes]] = []
        hsize = hvsize = hlines = 0
        while True:
            if (
                pos < n
                and _is_eoh(d, pos, n)
                and last_boundary is not None
                and part.flags & PartFlags.IS_MIME
            ):
                # RFC 2046 §5.1.1: push our boundary before the body so that "--boundary" lines
                # that also match an outer boundary's prefix resolve to us
                if part.depth + 1 >= self.max_depth:
                    part.flags &= ~PartFlags.MULTIPART
                    part.flags |= PartFlags.OVERFLOW
                else:
                    self.boundaries.append(_Boundary(part, last_boundary))
                    multipart = True
                last_boundary = None
            found = None
            if pos < n and self.boundaries:
                found = self.boundary_line_find(pos)
                if found is not None and found.part is part:
                    found = None  # our own body starts with our own boundary: not yet
            if found is not None:
                # a boundary inside the header block ends it; the previous line break belongs to
                # the boundary line, i.e. to the parent's body
                if prev_newline:
                    hlines -= 1
                    hsize -= prev_newline
                    hvsize -= 2
                    parent = part.parent
                    assert parent is not None
                    parent.body_lines += 1
                    parent.body_size += prev_newline
                    parent.body_vsize += 2
                break
            if eoh_seen or pos >= n:
                break
            # one header line (message_parse_header_next)
            lf = d.find(b"\n", pos)
            if lf < 0:
                line_end = nxt = n
                newline = 0
            else:
                nxt = lf + 1
                if lf > pos and d[lf - 1] == 0x0D:
                    line_end, newline = lf - 1, 2
                else:
                    line_end, newline = lf, 1
            hsize += nxt - pos
            if newline:
                hlines += 1
                hvsize += nxt - pos + (1 if newline == 1 else 0)
            else:
                hvsize += nxt - pos
            prev_newline = newline
            if line_end == pos:
                eoh_seen = True  # the empty line ending the header
                pos = nxt
                continue
            colon = d.find(b":", pos, line_end)
            line_start = pos
            pos = nxt
            # continuation lines (RFC 5322 §2.2.3 folding)
            value = bytearray()
            if colon >= 0:
                n_end = colon
                while n_end > line_start and d[n_end - 1] in b" \t":
                    n_end -= 1
                name = d[line_start:n_end]
                v = colon + 1
                while v < line_end and d[v] in b" \t":
                    v += 1
                if v == line_end and colon + 1 < line_end:
                    v = colon + 2
                value += d[v:line_end]
            else:
                name = d[line_start:line_end]
            while pos < n and d[pos] in b" \t":
                lf = d.find(b"\n", pos)
                if lf < 0:
                    c_end = c_next = n
                    newline = 0
                else:
                    c_next = lf + 1
                    if lf > pos and d[lf - 1] == 0x0D:
                        c_end, newline = lf - 1, 2
                    else:
                        c_end, newline = lf, 1
                hsize += c_next - pos
                if newline:
                    hlines += 1
                    hvsize += c_next - pos + (1 if newline == 1 else 0)
                else:
                    hvsize += c_next - pos
                prev_newline = newline
                value += b"\n"
                value += d[pos:c_end]
                pos = c_next
            if colon < 0:
                continue  # RFC 5322 §2.2: not a header field; Dovecot gives it no meaning
            lname = cstr(bytes(name)).lower()
            if lname == b"mime-version":
                part.flags |= PartFlags.IS_MIME
            elif lname == b"content-type":
                part.flags |= PartFlags.IS_MIME
                if not seen_content_type:
                    seen_content_type = True
                    last_boundary = self._content_type_flags(part, bytes(value))
            fields.append((bytes(name), bytes(value)))

        part.header_size, part.header_vsize, part.header_lines = hsize, hvsize, hlines
        body_pos = pos
        # end of headers
        if not part.flags & PartFlags.IS_MIME:
            part.flags = PartFlags(0)  # not MIME: forget what Content-Type said
        if not seen_content_type or not part.flags & PartFlags.IS_MIME:
            parent = part.parent
            if parent is not None and parent.flags & PartFlags.MULTIPART_DIGEST:
                part.flags |= PartFlags.MESSAGE_RFC822  # RFC 2046 §5.1.5 digest default
            else:
                part.flags |= PartFlags.TEXT  # RFC 2045 §5.2 default text/plain
        if d.find(b"\0", start, start + hsize) >= 0:
            part.flags |= PartFlags.HAS_NULS
        self._part_data(part, fields)
        self.last_chr = 0x0A
        if multipart:
            return body_pos, "body_to_boundary"
        if part.flags & PartFlags.MESSAGE_RFC822:
            if part.depth + 1 < self.max_depth and self.total_parts < self.max_parts:
                return body_pos, "rfc822"
            part.flags &= ~PartFlags.MESSAGE_RFC822
            part.flags |= PartFlags.OVERFLOW
        return body_pos, ("body_to_boundary" if self.boundaries else "body_to_eof")

    def _content_type_flags(self, part: MimePart, value: bytes) -> bytes | None:
        """RFC 2045 §5.1 / RFC 2046 §5.1.1: the parser's view of Content-Type, and the boundary."""
        parser = Rfc822Parser(value)
        parser.skip_lwsp()
        out = bytearray()
        ret = parser.parse_content_type(out)
        ctype = cstr(bytes(out)).lower()
        if ctype == b"message/rfc822":
            part.flags |= PartFlags.MESSAGE_RFC822
        elif ctype.startswith(b"text") and (len(ctype) == 4 or ctype[4] == 0x2F):
            part.flags |= PartFlags.TEXT
        elif ctype.startswith(b"multipart/"):
            part.flags |= PartFlags.MULTIPART
            if ctype[10:] == b"digest":
                part.flags |= PartFlags.MULTIPART_DIGEST
        if ret < 0 or not part.flags & PartFlags.MULTIPART:
            return None
        for key, val in parse_params(parser):
            if key.lower() == b"boundary":
                return val[:_BOUNDARY_STRING_MAX_LEN]
        return None

    def _part_data(self, part: MimePart, fields: list[tuple[bytes, bytes]]) -> None:
        parent = part.parent
        parent_rfc822 = parent is not None and bool(parent.flags & PartFlags.MESSAGE_RFC822)
        if parent_rfc822 or parent is None:
            part.envelope = EnvelopeData()
        info = part.content
        for name, value in fields:
            if name[:8].lower() == b"content-":
                _content_header(info, name, value)
            if part.envelope is not None:
                _envelope_header(part.envelope, name, value)
        if not part.flags & PartFlags.IS_MIME:
            part.content = ContentInfo()  # no Mime-Version: the Content-* fields do not count

    def body_to_boundary(self, part: MimePart, pos: int) -> tuple[int, _Boundary | None, bool]:
        """Add body data to ``part`` until a boundary line; returns (line position, boundary, first)."""
        d, n = self.d, self.n
        if pos >= n:
            return pos, None, False
        if self.last_chr == 0x0A:
            found = self.boundary_line_find(pos)
            if found is not None:
                return pos, found, True
        search = pos
        while True:
            m = _LF_DASHDASH.search(d, search)
            if m is None:
                self.add_body(part, pos, n)
                return n, None, False
            lf = m.start()
            found = self.boundary_line_find(lf + 1)
            if found is not None:
                start = lf - 1 if lf > pos and d[lf - 1] == 0x0D else lf
                self.add_body(part, pos, start)
                return start, found, False
            search = lf + 1

    def part_finish(
        self, part: MimePart, found: _Boundary, pos: int, first_line: bool
    ) -> tuple[MimePart, int]:
        """A boundary line: close parts up to its multipart and account the "--boundary[--]" octets."""
        while part is not found.part:
            part = self.finish_part(part)
        idx = next(i for i in range(len(self.boundaries) - 1, -1, -1) if self.boundaries[i] is found)
        del self.boundaries[idx + (0 if found.epilogue_found else 1) :]
        if first_line:
            line_size = 0
        elif self.d[pos] == 0x0D:
            line_size = 2
        else:
            line_size = 1
        line_size += 2 + len(found.boundary) + (2 if found.epilogue_found else 0)
        self.add_body(part, pos, pos + line_size)
        return part, pos + line_size


def parse_message(
    data: bytes | bytearray | memoryview,
    *,
    max_depth: int = DEFAULT_MAX_DEPTH,
    max_parts: int = DEFAULT_MAX_PARTS,
) -> MimePart:
    """Parse a whole message into its MIME tree. Never raises on malformed input.

    ``max_depth`` caps nesting (RFC 2046 gives no limit; Dovecot stops at 100 and treats the
    deepest container as an opaque application/octet-stream part), ``max_parts`` caps the total
    number of parts (Dovecot: 10000; later boundaries are then ignored).
    """
    raw = data if isinstance(data, bytes) else bytes(data)
    return _Parser(raw, max_depth, max_parts).parse()
