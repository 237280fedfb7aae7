"""FETCH BODY[section] and BINARY[section] data (RFC 9051 §6.4.5, RFC 3501 §6.4.5, RFC 3516).

``parse_section`` turns the text between the brackets into a :class:`SectionSpec`; ``section_chunks``
resolves it against a parsed tree into byte ranges of the stored message (plus literal bytes for the
CRLF that ends HEADER.FIELDS), so a server can stream a big section without copying;
``section_bytes`` joins them. Partial fetches (``<origin.octets>``) are left to the caller.

Part resolution follows Dovecot (which matches RFC 9051 §6.4.5): in a non-multipart part only
number 1 exists and is the part itself; numbers after a message/rfc822 part address the
encapsulated message; a part that does not exist yields None (Dovecot sends an empty string).
"""

from __future__ import annotations

import binascii
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from mailroom.message.mime import MimePart, PartFlags, iter_header_lines

__all__ = [
    "BinaryError",
    "SectionError",
    "SectionSpec",
    "Source",
    "binary_section",
    "binary_size",
    "decode_transfer_encoding",
    "find_part",
    "parse_section",
    "section_bytes",
    "section_chunks",
    "section_size",
]

SectionText = Literal["", "HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT", "TEXT", "MIME"]
# the stored message: its bytes, or a read(offset, length) callable over it (e.g. a file)
Source = bytes | bytearray | memoryview | Callable[[int, int], bytes]
# a section as pieces: (start, end) ranges of the stored message, or literal bytes
Chunk = tuple[int, int] | bytes


class SectionError(ValueError):
    """The section text is not valid RFC 9051 §9 section-spec syntax (the server answers BAD)."""


@dataclass(frozen=True)
class BinaryError:
    """BINARY cannot be served (RFC 3516 §4.3): the server answers ``NO [UNKNOWN-CTE]``."""

    encoding: bytes
    code: str = "UNKNOWN-CTE"


@dataclass(frozen=True)
class SectionSpec:
    """RFC 9051 §9 section-spec: ``part`` numbers, then an optional text specifier.

    ``fields`` holds the HEADER.FIELDS[.NOT] names as given (matching is case-insensitive).
    """

    part: tuple[int, ...] = ()
    text: SectionText = ""
    fields: tuple[bytes, ...] = ()

    def to_imap(self) -> bytes:
        """The section as it is echoed in the FETCH response (field names upper-cased, like Dovecot)."""
        items = [b"%d" % n for n in self.part]
        if self.text:
            items.append(self.text.encode())
        out = b".".join(items)
        if self.fields:
            out += b" (" + b" ".join(f.upper() for f in self.fields) + b")"
        return out


# RFC 9051 §9: nz-number = digit-nz *DIGIT
_NZ_NUMBER = re.compile(rb"[1-9][0-9]*")
# RFC 9051 §9 astring: 1*ASTRING-CHAR / string (here: atom or quoted string)
_HEADER_LIST_ITEM = re.compile(rb'\s*(?:"((?:[^"\\\r\n]|\\["\\])*)"|([!#-\'*-~]+))')


def parse_section(spec: str | bytes) -> SectionSpec:
    """Parse the text inside ``BODY[...]`` / ``BINARY[...]``, e.g. ``1.2.HEADER.FIELDS (From To)``.

    RFC 9051 §9::

        section-spec    = section-msgtext / (section-part ["." section-text])
        section-msgtext = "HEADER" / "HEADER.FIELDS" [".NOT"] SP header-list / "TEXT"
        section-part    = nz-number *("." nz-number)
        section-text    = section-msgtext / "MIME"
        header-list     = "(" header-fld-name *(SP header-fld-name) ")"
    """
    data = spec.encode() if isinstance(spec, str) else bytes(spec)
    pos = 0
    parts: list[int] = []
    while pos < len(data) and data[pos : pos + 1].isdigit():
        m = _NZ_NUMBER.match(data, pos)
        if m is None or (m.end() < len(data) and data[m.end()] != 0x2E):
            raise SectionError(f"invalid part number in section {spec!r}")
        parts.append(int(m.group()))
        pos = m.end()
        if pos < len(data):
            pos += 1  # "."
            if pos == len(data):
                raise SectionError(f"section ends with '.': {spec!r}")
    rest = data[pos:]
    head, sep, tail = rest.partition(b" ")
    name = head.upper()
    if name in (b"", b"HEADER", b"TEXT", b"MIME"):
        if sep:
            raise SectionError(f"unexpected text after {name.decode()!r}: {spec!r}")
        if name == b"MIME" and not parts:
            raise SectionError("MIME needs a part number (RFC 9051 §6.4.5)")
        text: SectionText = (
            "" if not name else ("HEADER" if name == b"HEADER" else ("TEXT" if name == b"TEXT" else "MIME"))
        )
        return SectionSpec(tuple(parts), text)
    if name not in (b"HEADER.FIELDS", b"HEADER.FIELDS.NOT"):
        raise SectionError(f"unknown section text {head!r}")
    tail = tail.strip()
    if not sep or not tail.startswith(b"(") or not tail.endswith(b")"):
        raise SectionError(f"{name.decode()} needs a parenthesised header list")
    inner = tail[1:-1]
    fields: list[bytes] = []
    p = 0
    while p < len(inner):
        m = _HEADER_LIST_ITEM.match(inner, p)
        if m is None:
            raise SectionError(f"invalid header list in {spec!r}")
        fields.append(m.group(2) if m.group(2) is not None else re.sub(rb"\\(.)", rb"\1", m.group(1)))
        p = m.end()
        while p < len(inner) and inner[p] in b" \t":
            p += 1
    if not fields:
        raise SectionError("empty header list")
    return SectionSpec(
        tuple(parts), "HEADER.FIELDS" if name == b"HEADER.FIELDS" else "HEADER.FIELDS.NOT", tuple(fields)
    )


def find_part(root: MimePart, numbers: tuple[int, ...]) -> MimePart | None:
    """The part addressed by ``numbers`` (RFC 9051 §6.4.5 part specifier), or None."""
    part: MimePart | None = root
    for i, num in enumerate(numbers):
        assert part is not None
        more = i + 1 < len(numbers)
        if part.flags & PartFlags.MULTIPART:
            part = part.children[num - 1] if 0 < num <= len(part.children) else None
        elif num != 1 or (more and not part.flags & PartFlags.MESSAGE_RFC822):
            part = None  # RFC 9051 §6.4.5: a non-multipart part only has part 1, itself
        if part is None:
            return None
        if more and part.flags & PartFlags.MESSAGE_RFC822 and part.children:
            part = part.children[0]  # numbers after a message/rfc822 part address its message
    return part


def _read(source: Source, start: int, end: int) -> bytes:
    if end <= start:
        return b""
    if callable(source):
        return source(start, end - start)
    return bytes(source[start:end])


def _header_field_chunks(
    source: Source, msg: MimePart, names: tuple[bytes, ...], exclude: bool
) -> list[Chunk]:
    # RFC 9051 §6.4.5: HEADER.FIELDS returns the matching fields in message order, then the blank
    # line; matching is case-insensitive. A line without a colon never matches (so .NOT keeps it).
    wanted = {n.lower() for n in names}
    block = _read(source, msg.offset, msg.header_end)
    chunks: list[Chunk] = []
    lines = iter_header_lines(block, 0, len(block))
    for f in lines:
        if (f.has_colon and f.name.lower() in wanted) != exclude:
            start, end = msg.offset + f.start, msg.offset + f.end
            if chunks and isinstance(chunks[-1], tuple) and chunks[-1][1] == start:
                start = chunks.pop()[0]
            chunks.append((start, end))
    if not exclude or (lines[-1].end if lines else 0) < len(block):
        # Dovecot always ends HEADER.FIELDS with the blank line, HEADER.FIELDS.NOT only when the
        # header had one
        chunks.append(b"\r\n")
    return chunks


def section_chunks(source: Source, root: MimePart, spec: SectionSpec) -> list[Chunk] | None:
    """The section as byte ranges of the stored message and literal pieces, or None if absent.

    Only HEADER.FIELDS[.NOT] reads ``source`` (to look at the header block); everything else is one
    range, so a server can send it straight from its file or buffer.
    """
    part = find_part(root, spec.part) if spec.part else root
    if part is None:
        return None
    if spec.text == "MIME":
        return [(part.offset, part.header_end)]  # RFC 9051 §6.4.5: the part's MIME header
    if spec.text == "":
        if not spec.part:
            return [(root.offset, root.body_end)]  # BODY[]: the whole message
        return [(part.body_start, part.body_end)]
    # HEADER / HEADER.FIELDS / TEXT address a message: the root or an encapsulated message
    if spec.part:
        if not part.flags & PartFlags.MESSAGE_RFC822 or not part.children:
            return []  # not a message/rfc822 part: Dovecot returns an empty string
        part = part.children[0]
    if spec.text == "HEADER":
        return [(part.offset, part.header_end)]
    if spec.text == "TEXT":
        return [(part.body_start, part.body_end)]
    return _header_field_chunks(source, part, spec.fields, spec.text == "HEADER.FIELDS.NOT")


def _join(source: Source, chunks: list[Chunk]) -> bytes:
    return b"".join(c if isinstance(c, bytes) else _read(source, c[0], c[1]) for c in chunks)


def section_bytes(source: Source, root: MimePart, spec: SectionSpec | str | bytes) -> bytes | None:
    """BODY[section] data (before any <partial>), or None when the part does not exist."""
    if not isinstance(spec, SectionSpec):
        spec = parse_section(spec)
    chunks = section_chunks(source, root, spec)
    return None if chunks is None else _join(source, chunks)


def section_size(source: Source, root: MimePart, spec: SectionSpec) -> int | None:
    """Length of section_bytes() without materialising it (reads the header only for FIELDS)."""
    chunks = section_chunks(source, root, spec)
    if chunks is None:
        return None
    return sum(len(c) if isinstance(c, bytes) else c[1] - c[0] for c in chunks)


# ---------------------------------------------------------------------------------------------
# BINARY (RFC 3516)

_B64_ALPHABET = re.compile(rb"[^A-Za-z0-9+/]")
_QP_TRAILING_WS = re.compile(rb"[ \t]+(?=\r?\n|\Z)")
_QP_ESCAPE = re.compile(rb"=(?:([0-9A-Fa-f]{2})|\r?\n)")


def _decode_base64(data: bytes) -> bytes:
    # RFC 2045 §6.8: characters outside the alphabet are ignored; "=" ends the data. Incomplete
    # trailing groups are decoded as far as they go (Dovecot refuses them; we prefer the content).
    pad = data.find(b"=")
    if pad >= 0:
        data = data[:pad]
    clean = _B64_ALPHABET.sub(b"", data)
    usable = len(clean) - len(clean) % 4
    out = binascii.a2b_base64(clean[:usable]) if usable else b""
    rest = clean[usable:]
    if len(rest) >= 2:
        out += binascii.a2b_base64(rest + b"=" * (4 - len(rest)))
    return out


def _decode_qp(data: bytes) -> bytes:
    # RFC 2045 §6.7: trailing whitespace on a line is removed (rule 3), "=" + line break is a soft
    # line break (rule 5), "=XX" an octet (rule 1, lower-case hex tolerated); any other "=" is kept
    # as it is (the robustness note (2) of §6.7).
    data = _QP_TRAILING_WS.sub(b"", data)

    def repl(m: re.Match[bytes]) -> bytes:
        hexpair = m.group(1)
        return bytes([int(hexpair, 16)]) if hexpair is not None else b""

    return _QP_ESCAPE.sub(repl, data)


def decode_transfer_encoding(encoding: bytes | None, data: bytes) -> bytes | BinaryError:
    """Undo a Content-Transfer-Encoding (RFC 2045 §6); identity for 7bit/8bit/binary/absent."""
    enc = (encoding or b"7bit").lower()
    if enc in (b"7bit", b"8bit", b"binary"):
        return data
    if enc == b"base64":
        return _decode_base64(data)
    if enc == b"quoted-printable":
        return _decode_qp(data)
    return BinaryError(encoding or b"")


def binary_section(
    source: Source, root: MimePart, part_numbers: tuple[int, ...]
) -> bytes | BinaryError | None:
    """BINARY[section] data (RFC 3516 §4.2): the part's content with its transfer encoding undone.

    ``()`` is BINARY[]: the whole message, which is only legal unencoded (RFC 2045 §6.4 forbids
    encoding composite types). None means the part does not exist.
    """
    if not part_numbers:
        enc = root.content.encoding
        if enc is not None and enc.lower() not in (b"7bit", b"8bit", b"binary"):
            return BinaryError(enc)
        return _read(source, root.offset, root.body_end)
    part = find_part(root, part_numbers)
    if part is None:
        return None
    return decode_transfer_encoding(part.content.encoding, _read(source, part.body_start, part.body_end))


def binary_size(source: Source, root: MimePart, part_numbers: tuple[int, ...]) -> int | BinaryError | None:
    """BINARY.SIZE[section] (RFC 3516 §4.2): the length of binary_section(), without decoding when
    the part is not encoded."""
    part = find_part(root, part_numbers) if part_numbers else root
    if part is None:
        return None
    enc = (part.content.encoding or b"7bit").lower()
    if enc in (b"7bit", b"8bit", b"binary"):
        return (part.body_end - part.body_start) if part_numbers else part.body_end - part.offset
    data = binary_section(source, root, part_numbers)
    return data if data is None or isinstance(data, BinaryError) else len(data)
