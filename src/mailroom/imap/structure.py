"""The per-body MIME cache and BODY[section] / BINARY[section] addressing.

A body is parsed once (:func:`compute`): the result holds the BODYSTRUCTURE, BODY and ENVELOPE
bytes and a compact part tree with absolute offsets, so later FETCHes of sections, BINARY and
body SEARCH read only the octets they need from the store.

Section numbers follow RFC 9051 §6.4.5 and Dovecot's imap-msgpart.c: in a multipart, N picks
the N-th child; a non-multipart part (including message/rfc822) only has part 1, itself; after
a number, a message/rfc822 part is entered when more numbers follow.
"""

from __future__ import annotations

import binascii
import codecs
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass

from mailroom.message.imap_structure import body_structure, envelope
from mailroom.message.mime import MimePart, PartFlags, iter_header_lines, parse_message
from mailroom.message.sections import BinaryError, decode_transfer_encoding

__all__ = [
    "CacheEntry",
    "Part",
    "PartMap",
    "StreamDecoder",
    "UnknownEncoding",
    "binary_header",
    "charset_of",
    "compute",
    "decode_transfer",
    "filter_header",
    "header_end",
    "text_decoder",
]

_CHARSET = re.compile(rb'charset\s*=\s*"?([A-Za-z0-9_.:+-]+)', re.IGNORECASE)
IDENTITY_ENCODINGS = frozenset({"", "7bit", "8bit", "binary"})


class UnknownEncoding(ValueError):
    """RFC 3516 §4.2: BINARY of a part in an encoding we cannot decode ([UNKNOWN-CTE])."""


@dataclass(frozen=True)
class CacheEntry:
    bodystructure: bytes
    body: bytes
    envelope: bytes
    parts: str


@dataclass
class Part:
    offset: int
    header_size: int
    body_size: int
    flags: int
    encoding: str  # lower case; "" when absent
    ctype: str  # "type/subtype" lower case; "" when absent (text/plain)
    charset: str  # lower case; "" when absent
    binary_size: int  # decoded body size (BINARY.SIZE); -1 when the encoding is unknown
    children: list[Part]

    @property
    def header_end(self) -> int:
        return self.offset + self.header_size

    @property
    def body_end(self) -> int:
        return self.offset + self.header_size + self.body_size

    @property
    def is_multipart(self) -> bool:
        return bool(self.flags & PartFlags.MULTIPART)

    @property
    def is_message(self) -> bool:
        return bool(self.flags & PartFlags.MESSAGE_RFC822)

    @property
    def is_text(self) -> bool:
        return self.ctype.startswith("text/") or self.ctype == ""

    def leaves(self) -> list[Part]:
        out: list[Part] = []
        stack = [self]
        while stack:
            part = stack.pop()
            if part.children:
                stack.extend(reversed(part.children))
            else:
                out.append(part)
        return out


def _encode(part: MimePart, data: bytes) -> list[object]:
    info = part.content
    enc = (info.encoding or b"").decode("ascii", "replace").strip().lower()
    ctype = ""
    if info.type is not None:
        ctype = (info.type + b"/" + (info.subtype or b"")).decode("ascii", "replace").lower()
    charset = ""
    for name, value in info.params:
        if name.lower() == b"charset":
            charset = value.decode("ascii", "replace").strip().lower()
    binary_size = part.body_size
    if not part.children and enc not in IDENTITY_ENCODINGS:
        try:
            binary_size = len(decode_transfer(enc, data[part.body_start : part.body_end]))
        except UnknownEncoding:
            binary_size = -1
    return [
        part.offset,
        part.header_size,
        part.body_size,
        int(part.flags),
        enc,
        ctype,
        charset,
        binary_size,
        [_encode(child, data) for child in part.children],
    ]


def compute(data: bytes) -> CacheEntry:
    """Parse a whole message (the one place that holds it all) into its cache entry."""
    root = parse_message(data)
    return CacheEntry(
        body_structure(root, extended=True),
        body_structure(root, extended=False),
        envelope(root),
        json.dumps(_encode(root, data), separators=(",", ":")),
    )


def _decode(node: list[object]) -> Part:
    offset, hsize, bsize, flags, enc, ctype, charset, bin_size, children = node
    assert isinstance(children, list)
    return Part(
        int(offset),  # type: ignore[call-overload]
        int(hsize),  # type: ignore[call-overload]
        int(bsize),  # type: ignore[call-overload]
        int(flags),  # type: ignore[call-overload]
        str(enc),
        str(ctype),
        str(charset),
        int(bin_size),  # type: ignore[call-overload]
        [_decode(c) for c in children],
    )


class PartMap:
    """The part tree of one body, from its cache entry."""

    def __init__(self, parts_json: str) -> None:
        self.root = _decode(json.loads(parts_json))

    def find(self, path: Sequence[int]) -> Part | None:
        """The part a section number names (Dovecot imap_msgpart_find), or None."""
        part: Part | None = self.root
        for i, number in enumerate(path):
            assert part is not None
            if part.is_multipart:
                part = part.children[number - 1] if 0 < number <= len(part.children) else None
            elif number != 1:
                part = None
            if part is None:
                return None
            if part.is_message and i + 1 < len(path) and part.children:
                part = part.children[0]
        return part

    def message_of(self, path: Sequence[int]) -> Part | None:
        """The message whose HEADER/TEXT a section names: the root for an empty path, else
        the message inside a message/rfc822 part (None for any other part)."""
        if not path:
            return self.root
        part = self.find(path)
        if part is None or not part.is_message or not part.children:
            return None
        return part.children[0]

    def text_parts(self) -> list[Part]:
        """Leaves whose decoded text SEARCH BODY looks at: text/* (and untyped) parts."""
        return [p for p in self.root.leaves() if p.is_text and not p.is_multipart]


def header_end(prefix: bytes) -> int | None:
    """Offset just past the blank line that ends the top-level header, if it is in ``prefix``.
    RFC 5322 §2.1: the header ends at the first empty line (bare LF accepted, as Dovecot does)."""
    if prefix.startswith(b"\r\n"):
        return 2
    if prefix.startswith(b"\n"):
        return 1
    ends = []
    crlf = prefix.find(b"\n\r\n")
    if crlf >= 0:
        ends.append(crlf + 3)
    lf = prefix.find(b"\n\n", 0, crlf + 2 if crlf >= 0 else len(prefix))
    if lf >= 0:
        ends.append(lf + 2)
    return min(ends) if ends else None


def filter_header(header: bytes, names: Sequence[str], exclude: bool) -> bytes:
    """BODY[HEADER.FIELDS (...)] / HEADER.FIELDS.NOT: the matching fields as they appear, then
    the blank line (RFC 9051 §6.4.5: "the subset of the header ... and the blank line")."""
    wanted = {n.lower().encode("utf-8", "replace") for n in names}
    out = bytearray()
    for line in iter_header_lines(header, 0, len(header)):
        if not line.has_colon:
            if exclude:
                out += header[line.start : line.end]
            continue
        if (line.name.lower() in wanted) != exclude:
            out += header[line.start : line.end]
    if out and not out.endswith(b"\n"):
        out += b"\r\n"
    out += b"\r\n"
    return bytes(out)


def binary_header(header: bytes) -> bytes:
    """The header block of a part whose body BINARY sends decoded: its Content-Transfer-Encoding
    fields dropped and ``Content-Transfer-Encoding: binary`` added as the last field (as Dovecot's
    binary conversion does; RFC 2045 §6.2: "binary" is data sent as it is)."""
    out = bytearray()
    fields = iter_header_lines(header, 0, len(header))
    for line in fields:
        if not (line.has_colon and line.name.lower() == b"content-transfer-encoding"):
            out += header[line.start : line.end]
    if out and not out.endswith(b"\n"):
        out += b"\r\n"
    out += b"Content-Transfer-Encoding: binary\r\n"
    return bytes(out) + header[fields[-1].end if fields else 0 :]  # the blank line, as it was


def decode_transfer(encoding: str, data: bytes) -> bytes:
    """Undo a Content-Transfer-Encoding (RFC 2045 §6), the way mailroom.message.sections does."""
    result = decode_transfer_encoding(encoding.encode("ascii", "replace") or None, data)
    if isinstance(result, BinaryError):
        raise UnknownEncoding(encoding)
    return result


class StreamDecoder:
    """Content-Transfer-Encoding decoding of a body that arrives in chunks."""

    def __init__(self, encoding: str) -> None:
        self.encoding = encoding.lower()
        if self.encoding not in IDENTITY_ENCODINGS | {"base64", "quoted-printable"}:
            raise UnknownEncoding(encoding)
        self._pending = b""
        self._done = False

    def feed(self, data: bytes) -> bytes:
        if self.encoding in IDENTITY_ENCODINGS:
            return data
        if self.encoding == "base64":
            if self._done:
                return b""
            head, pad, _ = data.partition(b"=")
            self._done = bool(pad)  # padding ends the data; anything after it is ignored
            clean = self._pending + re.sub(rb"[^A-Za-z0-9+/]", b"", head)
            cut = len(clean) - len(clean) % 4
            self._pending = clean[cut:]
            return binascii.a2b_base64(clean[:cut]) if cut else b""
        text = self._pending + data
        cut = text.rfind(b"\n") + 1  # quoted-printable decodes line by line
        self._pending = text[cut:]
        return decode_transfer("quoted-printable", text[:cut]) if cut else b""

    def finish(self) -> bytes:
        rest, self._pending = self._pending, b""
        if not rest or self.encoding in IDENTITY_ENCODINGS:
            return rest
        return decode_transfer(self.encoding, rest)


def charset_of(header: bytes) -> str:
    m = _CHARSET.search(header)
    return m.group(1).decode("ascii").lower() if m else ""


def text_decoder(charset: str) -> codecs.IncrementalDecoder:
    try:
        factory = codecs.getincrementaldecoder(charset or "us-ascii")
    except LookupError:
        factory = codecs.getincrementaldecoder("latin-1")
    if charset in ("", "us-ascii", "ascii"):
        # 8-bit text labelled US-ASCII (or not labelled) is most often UTF-8 in practice
        factory = codecs.getincrementaldecoder("utf-8")
    return factory(errors="replace")
