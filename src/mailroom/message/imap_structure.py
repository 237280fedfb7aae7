"""IMAP BODY, BODYSTRUCTURE and ENVELOPE for a parsed message, byte-identical to Dovecot 2.3.

RFC 3501 §7.4.2 / RFC 9051 §7.5.2 define the three FETCH items; where the RFCs leave room (string
form, defaults for broken headers, what a truncated part looks like) we do what Dovecot does
(lib-imap/imap-bodystructure.c, imap-envelope.c, imap-quote.c), because clients are tuned to it.

All functions return wire bytes ready to follow ``BODYSTRUCTURE``/``BODY``/``ENVELOPE`` in a FETCH
response, including the outer parentheses. Strings that cannot be quoted come out as literals
(``{n}\\r\\n...``), exactly where Dovecot would send one.
"""

from __future__ import annotations

from mailroom.message.mime import ContentInfo, EnvelopeData, MimePart, PartFlags
from mailroom.message.rfc822 import Address

__all__ = [
    "body_structure",
    "envelope",
    "imap_nstring",
    "imap_nstring_nolf",
    "imap_string_for_humans",
]

# RFC 2045 §5.2: default Content-Type is text/plain; charset=us-ascii
_DEFAULT_CHARSET = b'"charset" "us-ascii"'
_EMPTY_BODY = b'("text" "plain" (' + _DEFAULT_CHARSET + b') NIL NIL "7bit" 0 0)'
_EMPTY_BODYSTRUCTURE = b'("text" "plain" (' + _DEFAULT_CHARSET + b') NIL NIL "7bit" 0 0 NIL NIL NIL NIL)'
_EMPTY_ENVELOPE = b"NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL"
# Dovecot sends a literal rather than a quoted string with more than 4 quoted-specials.
_QUOTED_MAX_ESCAPE_CHARS = 4


def _literal(value: bytes) -> bytes:
    # RFC 9051 §4.3 literal = "{" number "}" CRLF *CHAR8
    return b"{%d}\r\n" % len(value) + value


def imap_nstring(value: bytes | None) -> bytes:
    """RFC 9051 §4.3/§4.5 nstring: NIL, a quoted string, or a literal (8-bit, CR/LF, many escapes)."""
    if value is None:
        return b"NIL"
    escapes = 0
    for c in value:
        if c == 0x22 or c == 0x5C:
            escapes += 1
            if escapes > _QUOTED_MAX_ESCAPE_CHARS:
                return _literal(value)
        elif c == 0x0D or c == 0x0A or c >= 0x80:
            return _literal(value)
    return b'"' + value.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


def imap_nstring_nolf(value: bytes | None) -> bytes:
    """nstring of a header value with its line breaks removed (a space kept between folded words)."""
    if value is None or (b"\r" not in value and b"\n" not in value):
        return imap_nstring(value)
    out = bytearray()
    n = len(value)
    for i, c in enumerate(value):
        if c != 0x0D and c != 0x0A:
            out.append(c)
        elif i + 1 < n and value[i + 1] not in b" \t\r\n":
            out.append(0x20)
    return imap_nstring(bytes(out))


def imap_string_for_humans(value: bytes) -> bytes:
    """Dovecot's string for display text (ENVELOPE subject and display names).

    Whitespace runs (SP, TAB, CR, LF) collapse to one space, leading and trailing whitespace is
    dropped, NUL becomes 0x80. Anything that needed changing, or that has quoted-specials or
    8-bit octets, is sent as a literal.
    """
    size = len(value)
    remove = 0
    last_lwsp = True
    whitespace_prefix = True
    modify = False
    for c in value:
        if c == 0:
            last_lwsp = False
            modify = True
        elif c in b"\r\n\t ":
            if c != 0x20:
                modify = True
            if last_lwsp:
                modify = True
                remove += 1
            last_lwsp = True
        elif c == 0x22 or c == 0x5C:
            modify = True
            last_lwsp = False
        else:
            if c & 0x80:
                modify = True
            last_lwsp = False
        if not last_lwsp:
            whitespace_prefix = False
    if last_lwsp and size > 0 and not whitespace_prefix:
        modify = True
        remove += 1
    if not modify:
        return b'"' + value + b'"'
    if size == remove:
        return b'""'
    out = bytearray()
    last_lwsp = True
    whitespace_prefix = True
    for c in value:
        if c == 0:
            out.append(0x80)
            last_lwsp = False
        elif c in b"\r\n\t ":
            if not last_lwsp:
                out.append(0x20)
            last_lwsp = True
        else:
            last_lwsp = False
            out.append(c)
        if not last_lwsp:
            whitespace_prefix = False
    if last_lwsp and size > 0 and not whitespace_prefix:
        del out[-1]
    return _literal(bytes(out))


# ---------------------------------------------------------------------------------------------
# BODY / BODYSTRUCTURE (RFC 3501 §7.4.2, RFC 9051 §7.5.2 body, body-type-1part, body-type-mpart)


def _params(params: list[tuple[bytes, bytes]], default_charset: bool) -> bytes:
    # RFC 9051 §9 body-fld-param = "(" string SP string *(SP string SP string) ")" / nil
    if not default_charset and not params:
        return b"NIL"
    items: list[bytes] = []
    seen_charset = False
    for name, value in params:
        if default_charset and name.lower() == b"charset":
            seen_charset = True
        items.append(imap_nstring(name) + b" " + imap_nstring(value))
    if default_charset and not seen_charset:
        items.append(_DEFAULT_CHARSET)
    return b"(" + b" ".join(items) + b")"


def _extension_common(info: ContentInfo) -> bytes:
    # RFC 9051 §9 body-fld-dsp SP body-fld-lang SP body-fld-loc (RFC 2183, RFC 3282, RFC 2557)
    if info.disposition is None:
        dsp = b"NIL"
    else:
        dsp = b"(" + imap_nstring(info.disposition) + b" " + _params(info.disposition_params, False) + b")"
    if info.language is None:
        lang = b"NIL"
    else:
        lang = b"(" + b" ".join(imap_nstring(tag) for tag in info.language) + b")"
    return b" " + dsp + b" " + lang + b" " + imap_nstring_nolf(info.location)


def _is_truncated(part: MimePart) -> bool:
    """A container Dovecot's part limits stopped it from parsing: shown as application/octet-stream."""
    info = part.content
    if info.type is not None:
        t = info.type.lower()
        return (t == b"message" and (info.subtype or b"").lower() == b"rfc822") or t == b"multipart"
    parent = part.parent
    return parent is not None and bool(parent.flags & PartFlags.MULTIPART_DIGEST)


def _write_multipart(part: MimePart, out: bytearray, extended: bool) -> None:
    info = part.content
    if part.children:
        for child in part.children:
            out += b"("
            _write_part(child, out, extended)
            out += b")"
    else:
        # a multipart without parts is not allowed (RFC 2046 §5.1.1): one empty text/plain part
        out += _EMPTY_BODYSTRUCTURE if extended else _EMPTY_BODY
    out += b" " + imap_nstring(info.subtype or b"")
    if extended:
        out += b" " + _params(info.params, False)
        out += _extension_common(info)


def _write_single(part: MimePart, out: bytearray, extended: bool) -> None:
    info = part.content
    if part.flags & PartFlags.MESSAGE_RFC822:
        out += b'"message" "rfc822"'
        text = False
    elif _is_truncated(part):
        out += b'"application" "octet-stream"'
        text = False
    elif info.type is None:
        out += b'"text" "plain"'
        text = True
    else:
        text = info.type.lower() == b"text"
        out += imap_nstring(info.type) + b" " + imap_nstring(info.subtype or b"")
    out += b" " + _params(info.params, text)
    out += b" " + imap_nstring_nolf(info.id)
    out += b" " + imap_nstring_nolf(info.description)
    out += b" " + (imap_nstring(info.encoding) if info.encoding is not None else b'"7bit"')
    out += b" %d" % part.body_vsize  # RFC 9051 §9 body-fld-octets: size in the CRLF form
    if text:
        out += b" %d" % part.body_lines  # body-fld-lines
    elif part.flags & PartFlags.MESSAGE_RFC822 and part.children:
        # RFC 9051 §9 body-type-msg = media-message SP body-fields SP envelope SP body SP body-fld-lines
        child = part.children[0]
        out += b" (" + _envelope_fields(child.envelope) + b") ("
        _write_part(child, out, extended)
        out += b") %d" % part.body_lines
    if extended:
        out += b" " + imap_nstring_nolf(info.md5)  # RFC 9051 §9 body-ext-1part: body-fld-md5
        out += _extension_common(info)


def _write_part(part: MimePart, out: bytearray, extended: bool) -> None:
    if part.flags & PartFlags.MULTIPART:
        _write_multipart(part, out, extended)
    else:
        _write_single(part, out, extended)


def body_structure(part: MimePart, extended: bool = True) -> bytes:
    """``BODYSTRUCTURE`` (extended=True) or ``BODY`` (extended=False) of ``part``, parenthesised.

    Pass the root for FETCH BODYSTRUCTURE; a message/rfc822 part's child for the inner message.
    """
    out = bytearray(b"(")
    _write_part(part, out, extended)
    out += b")"
    return bytes(out)


# ---------------------------------------------------------------------------------------------
# ENVELOPE (RFC 3501 §7.4.2 / RFC 9051 §7.5.2)


def _addresses(addrs: list[Address] | None) -> bytes:
    # RFC 9051 §9 address = "(" addr-name SP addr-adl SP addr-mailbox SP addr-host ")"
    # RFC 3501 §7.4.2: a group is (NIL NIL group-name NIL) ... (NIL NIL NIL NIL)
    if addrs is None:
        return b"NIL"
    out = bytearray(b"(")
    for a in addrs:
        out += b"("
        out += b"NIL" if a.name is None else imap_string_for_humans(a.name)
        out += b" " + imap_nstring(a.route) + b" " + imap_nstring(a.mailbox) + b" " + imap_nstring(a.domain)
        out += b")"
    out += b")"
    return bytes(out)


def _envelope_fields(env: EnvelopeData | None) -> bytes:
    if env is None:
        return _EMPTY_ENVELOPE
    subject = b"NIL" if env.subject is None else imap_string_for_humans(env.subject)
    from_ = env.from_
    # RFC 3501 §7.4.2: if Sender or Reply-To is absent, the server uses From
    return b" ".join(
        (
            imap_nstring_nolf(env.date),
            subject,
            _addresses(from_),
            _addresses(env.sender if env.sender is not None else from_),
            _addresses(env.reply_to if env.reply_to is not None else from_),
            _addresses(env.to),
            _addresses(env.cc),
            _addresses(env.bcc),
            imap_nstring_nolf(env.in_reply_to),
            imap_nstring_nolf(env.message_id),
        )
    )


def envelope(part: MimePart) -> bytes:
    """``ENVELOPE`` of a message (the root, or the child of a message/rfc822 part), parenthesised."""
    return b"(" + _envelope_fields(part.envelope) + b")"
