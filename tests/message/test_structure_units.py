"""Focused checks of the pieces: quoting, parameters, addresses, part data."""

from __future__ import annotations

from mailroom.message.imap_structure import (
    body_structure,
    envelope,
    imap_nstring,
    imap_nstring_nolf,
    imap_string_for_humans,
)
from mailroom.message.mime import PartFlags, iter_header_lines, parse_message
from mailroom.message.rfc822 import Address, Rfc822Parser, parse_address_list, parse_params


def test_nstring() -> None:
    assert imap_nstring(None) == b"NIL"
    assert imap_nstring(b'a"b\\c') == b'"a\\"b\\\\c"'
    assert imap_nstring(b'""""') == b'"\\"\\"\\"\\""'
    assert imap_nstring(b'"""""') == b'{5}\r\n"""""'  # more than 4 escapes: a literal (Dovecot)
    assert imap_nstring("é".encode()) == b"{2}\r\n\xc3\xa9"
    assert imap_nstring_nolf(b"a\r\n b\r\nc") == b'"a b c"'


def test_string_for_humans() -> None:
    assert imap_string_for_humans(b"plain text") == b'"plain text"'
    assert imap_string_for_humans(b"  a \t b  ") == b"{3}\r\na b"
    assert imap_string_for_humans(b"   ") == b'""'
    assert imap_string_for_humans(b'say "hi"') == b'{8}\r\nsay "hi"'
    assert imap_string_for_humans(b"a\0b") == b"{3}\r\na\x80b"


def _params(value: bytes) -> list[tuple[bytes, bytes]]:
    parser = Rfc822Parser(value)
    return parse_params(parser)


def test_rfc2231_params() -> None:
    # RFC 2231 §3 continuations are joined; extended pieces keep charset'lang'%XX (Dovecot)
    assert _params(b"; a*0=x; a*1=y") == [(b"a", b"xy")]
    assert _params(b"; a*1=y; a*0*=utf-8''%41") == [(b"a*", b"utf-8''%41y")]
    assert _params(b"; a*0=x%; a*1*=%42") == [(b"a*", b"''x%25%42")]
    assert _params(b"; a*1=x; a*2=y") == [(b"a*1", b"x"), (b"a*2", b"y")]  # gap: left alone
    # after a broken parameter Dovecot skips octet by octet to the next ";" it can parse
    assert _params(b'; A="q\\"x"; broken; b=2') == [(b"A", b'q"x')]
    assert _params(b"; broken=; b=2") == [(b"broken", b""), (b"b", b"2")]


def test_addresses() -> None:
    group = parse_address_list(b"g: a@b, c@d;, x@y")
    assert group == [
        Address(mailbox=b"g"),
        Address(mailbox=b"a", domain=b"b"),
        Address(mailbox=b"c", domain=b"d"),
        Address(),
        Address(mailbox=b"x", domain=b"y"),
    ]
    assert parse_address_list(b"  ") is None
    assert parse_address_list(b"user") == [Address(mailbox=b"user", domain=b"MISSING_DOMAIN")]
    assert parse_address_list(b"<@r:a@b>") == [Address(route=b"@r", mailbox=b"a", domain=b"b")]
    assert parse_address_list(b"a@b (Real Name)") == [Address(name=b"Real Name", mailbox=b"a", domain=b"b")]


def test_header_lines() -> None:
    raw = b"A: 1\r\n  2\r\nno colon\r\nB:\t \r\n\r\nbody"
    fields = iter_header_lines(raw, 0, len(raw))
    assert [(f.name, f.value, f.has_colon) for f in fields] == [
        (b"A", b"1\n  2", True),
        (b"no colon", b"", False),
        (b"B", b" ", True),
    ]
    assert raw[fields[0].start : fields[0].end] == b"A: 1\r\n  2\r\n"


def test_part_data_and_envelope() -> None:
    raw = (
        b"Subject: one\r\nSubject: two\r\nTo: a@b\r\nTo: c@d\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: text/plain; charset=UTF-8; format=flowed\r\nContent-Disposition: inline\r\n"
        b"Content-Disposition: attachment; filename=x.txt\r\nContent-Language: en, de-CH\r\n"
        b"Content-Transfer-Encoding: QUOTED-PRINTABLE\r\n\r\nbody\r\n"
    )
    root = parse_message(raw)
    c = root.content
    assert (c.type, c.subtype, c.encoding) == (b"text", b"plain", b"QUOTED-PRINTABLE")
    assert c.params == [(b"charset", b"UTF-8"), (b"format", b"flowed")]
    assert (c.disposition, c.disposition_params) == (b"attachment", [(b"filename", b"x.txt")])
    assert c.language == [b"en", b"de-CH"]
    assert root.flags & PartFlags.TEXT
    env = envelope(root)
    assert env.startswith(b'(NIL "two" NIL NIL NIL ((NIL NIL "a" "b")(NIL NIL "c" "d"))')
    assert (
        body_structure(root, False)
        == b'("text" "plain" ("charset" "UTF-8" "format" "flowed") NIL NIL "QUOTED-PRINTABLE" 6 1)'
    )


def test_no_mime_version_ignores_content_fields() -> None:
    # without MIME-Version or Content-Type the Content-* fields do not count (Dovecot, RFC 2045 §4)
    root = parse_message(b"Content-Transfer-Encoding: base64\r\nContent-ID: <x>\r\n\r\naGk=\r\n")
    assert root.content.encoding is None and root.content.id is None
    assert body_structure(root, False) == b'("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 6 1)'


def test_offsets() -> None:
    raw = b"Content-Type: multipart/mixed; boundary=b\r\n\r\npre\r\n--b\r\nX: 1\r\n\r\none\r\n--b--\r\nepi"
    root = parse_message(raw)
    (child,) = root.children
    assert raw[child.offset : child.header_end] == b"X: 1\r\n\r\n"
    assert raw[child.body_start : child.body_end] == b"one"
    assert root.body_end == len(raw)
    assert (child.body_size, child.body_lines, root.body_lines) == (3, 0, 6)


def test_exact_boundary_beats_longer_prefix() -> None:
    # "--a--" is the end of the newer boundary "a", not a part of the older "a--" (recorded from
    # Dovecot 2.3.19.1)
    raw = (
        b'Content-Type: multipart/mixed; boundary="a--"\r\n\r\n--a--\r\n'
        b'Content-Type: multipart/mixed; boundary="a"\r\n\r\n--a\r\n\r\ninner\r\n--a--\r\n\r\nafter\r\n--a----\r\n'
    )
    assert body_structure(parse_message(raw)) == (
        b'((("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 5 0 NIL NIL NIL NIL) "mixed" ("boundary" "a")'
        b' NIL NIL NIL) "mixed" ("boundary" "a--") NIL NIL NIL)'
    )
