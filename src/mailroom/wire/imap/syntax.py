"""IMAP string serialisation shared by the IMAP engine and the message structure code.

RFC 9051 §4.3 / RFC 3501 §4.3: a string is either quoted or a literal. Quoted strings may not
contain CR, LF or NUL; we also send a literal for 8-bit data unless the caller allows UTF-8
(RFC 9051 §6.3.1 / RFC 6855 UTF8=ACCEPT).
"""

from __future__ import annotations

# RFC 9051 §9: atom-specials = "(" / ")" / "{" / SP / CTL / list-wildcards / quoted-specials / resp-specials
_ATOM_SPECIALS = frozenset(b'(){ %*"\\]')


def _as_bytes(value: str | bytes) -> bytes:
    return value.encode("utf-8") if isinstance(value, str) else value


def literal(value: str | bytes) -> bytes:
    data = _as_bytes(value)
    return b"{%d}\r\n" % len(data) + data


def quoted(value: str | bytes, *, utf8: bool = False) -> bytes:
    """A quoted string, or a literal when the value cannot be quoted."""
    data = _as_bytes(value)
    if b"\r" in data or b"\n" in data or b"\0" in data or (not utf8 and not data.isascii()):
        return literal(data)
    return b'"' + data.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


def nstring(value: str | bytes | None, *, utf8: bool = False) -> bytes:
    return b"NIL" if value is None else quoted(value, utf8=utf8)


def is_atom(data: bytes) -> bool:
    return bool(data) and all(0x20 < c < 0x7F and c not in _ATOM_SPECIALS for c in data)


def astring(value: str | bytes, *, utf8: bool = False) -> bytes:
    data = _as_bytes(value)
    # an atom may contain "]" in astring (ASTRING-CHAR = ATOM-CHAR / resp-specials)
    if data and all(0x20 < c < 0x7F and (c not in _ATOM_SPECIALS or c == ord("]")) for c in data):
        return data
    return quoted(data, utf8=utf8)
