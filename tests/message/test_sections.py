"""BODY[section] syntax and extraction (RFC 9051 §6.4.5) and BINARY (RFC 3516)."""

from __future__ import annotations

import base64

import pytest

from mailroom.message.mime import parse_message
from mailroom.message.sections import (
    BinaryError,
    SectionError,
    SectionSpec,
    binary_section,
    binary_size,
    decode_transfer_encoding,
    parse_section,
    section_bytes,
    section_chunks,
    section_size,
)

MSG = (
    b"From: a@b\r\nSubject: s\r\n x\r\nTo: c@d\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
    b"pre\r\n--b\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
    b"h=C3=A9llo =\r\nworld=3d\r\n--b\r\nContent-Type: message/rfc822\r\n\r\n"
    b"Subject: inner\r\nContent-Type: multipart/alternative; boundary=c\r\n\r\n--c\r\n\r\nA\r\n--c\r\n"
    b"Content-Transfer-Encoding: base64\r\n\r\naGVs bG8=\r\n--c--\r\n--b\r\nContent-Transfer-Encoding: x-uuencode\r\n\r\nzzz\r\n"
    b"--b--\r\nepi\r\n"
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", SectionSpec()),
        ("HEADER", SectionSpec(text="HEADER")),
        ("text", SectionSpec(text="TEXT")),
        ("1", SectionSpec(part=(1,))),
        ("1.2.3", SectionSpec(part=(1, 2, 3))),
        ("1.2.HEADER", SectionSpec(part=(1, 2), text="HEADER")),
        ("4.MIME", SectionSpec(part=(4,), text="MIME")),
        (
            "1.2.HEADER.FIELDS (From To)",
            SectionSpec(part=(1, 2), text="HEADER.FIELDS", fields=(b"From", b"To")),
        ),
        ('HEADER.FIELDS.NOT ("X-A" b)', SectionSpec(text="HEADER.FIELDS.NOT", fields=(b"X-A", b"b"))),
        (b"header.fields (subject)", SectionSpec(text="HEADER.FIELDS", fields=(b"subject",))),
    ],
)
def test_parse_section(text: str | bytes, expected: SectionSpec) -> None:
    assert parse_section(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "0",
        "1.0",
        "01",
        "1.",
        "MIME",
        "HEADER.FIELDS",
        "HEADER.FIELDS ()",
        "HEADER.FIELDS From",
        "FOO",
        "1.FOO",
        "TEXT x",
        "1..2",
    ],
)
def test_parse_section_rejects(text: str) -> None:
    with pytest.raises(SectionError):
        parse_section(text)


def test_to_imap() -> None:
    assert parse_section("1.2.header.fields (From to)").to_imap() == b"1.2.HEADER.FIELDS (FROM TO)"
    assert parse_section("").to_imap() == b""


def _sec(spec: str) -> bytes | None:
    return section_bytes(MSG, parse_message(MSG), spec)


def test_sections() -> None:
    assert _sec("") == MSG
    assert _sec("HEADER") == MSG[: MSG.index(b"\r\n\r\n") + 4]
    assert _sec("TEXT") == MSG[MSG.index(b"\r\n\r\n") + 4 :]
    assert _sec("1") == b"h=C3=A9llo =\r\nworld=3d"
    assert (
        _sec("1.MIME") == b"Content-Type: text/plain\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
    )
    assert _sec("1.1") == _sec("1")  # a non-multipart part's part 1 is itself (RFC 9051 §6.4.5)
    assert _sec("1.2") is None
    assert _sec("1.HEADER") == b""  # HEADER needs a message/rfc822 part
    assert _sec("2.HEADER") == b"Subject: inner\r\nContent-Type: multipart/alternative; boundary=c\r\n\r\n"
    # the rest of the closing boundary line belongs to the inner multipart (as in Dovecot)
    assert (
        _sec("2.TEXT")
        == b"--c\r\n\r\nA\r\n--c\r\nContent-Transfer-Encoding: base64\r\n\r\naGVs bG8=\r\n--c--\r\n"
    )
    assert _sec("2") == _sec("2.HEADER") + _sec("2.TEXT")  # type: ignore[operator]
    assert _sec("2.MIME") == b"Content-Type: message/rfc822\r\n\r\n"
    assert _sec("2.1") == b"A"
    assert _sec("2.2.MIME") == b"Content-Transfer-Encoding: base64\r\n\r\n"
    assert _sec("9") is None


def test_header_fields() -> None:
    assert _sec("HEADER.FIELDS (subject TO nothing)") == b"Subject: s\r\n x\r\nTo: c@d\r\n\r\n"
    assert _sec("HEADER.FIELDS (nothing)") == b"\r\n"
    assert _sec("HEADER.FIELDS.NOT (subject to)") == (
        b"From: a@b\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
    )
    assert _sec("2.HEADER.FIELDS (SUBJECT)") == b"Subject: inner\r\n\r\n"
    # a header without its blank line: HEADER.FIELDS still ends with CRLF, .NOT does not (Dovecot)
    raw = b"From: x@y\r\nTo: z@w\r\n"
    tree = parse_message(raw)
    assert section_bytes(raw, tree, "HEADER.FIELDS (to)") == b"To: z@w\r\n\r\n"
    assert section_bytes(raw, tree, "HEADER.FIELDS.NOT (to)") == b"From: x@y\r\n"


def test_chunks_are_ranges_for_streaming() -> None:
    tree = parse_message(MSG)
    spec = parse_section("2")
    chunks = section_chunks(MSG, tree, spec)
    assert chunks is not None and len(chunks) == 1 and isinstance(chunks[0], tuple)
    start, end = chunks[0]
    assert MSG[start:end] == _sec("2")
    assert section_size(MSG, tree, spec) == end - start
    fields = parse_section("HEADER.FIELDS (From To)")
    assert section_size(MSG, tree, fields) == len(_sec("HEADER.FIELDS (From To)") or b"")


def test_binary() -> None:
    tree = parse_message(MSG)
    assert binary_section(MSG, tree, (1,)) == "héllo world=".encode()
    assert binary_size(MSG, tree, (1,)) == len("héllo world=".encode())
    assert binary_section(MSG, tree, (2, 2)) == b"hello"
    assert binary_section(MSG, tree, (2, 1)) == b"A"
    assert binary_size(MSG, tree, (2, 1)) == 1
    assert binary_section(MSG, tree, (3,)) == BinaryError(b"x-uuencode")
    assert binary_size(MSG, tree, (3,)) == BinaryError(b"x-uuencode")
    assert binary_section(MSG, tree, (7,)) is None
    assert binary_section(MSG, tree, ()) == MSG
    assert binary_size(MSG, tree, ()) == len(MSG)
    raw = b"MIME-Version: 1.0\r\nContent-Transfer-Encoding: base64\r\n\r\naGk=\r\n"
    assert binary_section(raw, parse_message(raw), ()) == BinaryError(b"base64")
    assert binary_section(raw, parse_message(raw), (1,)) == b"hi"


@pytest.mark.parametrize(
    ("cte", "data", "expected"),
    [
        (b"BASE64", b"aGVsbG8gd29ybGQ=\r\n", b"hello world"),
        (b"base64", b"aGVs bG8g\r\n d29y\tbGQ=\r\n", b"hello world"),
        (b"base64", b"aGVsbG8gd29ybGQ\r\n", b"hello world"),  # missing padding: decoded anyway
        (b"base64", b"aGVs*bG8=\r\n", b"hello"),  # RFC 2045 §6.8: ignore non-alphabet octets
        (b"base64", b"aGk=aGk=", b"hi"),  # data after the padding is ignored
        (b"quoted-printable", b"a=3Db=3db  \r\nsoft=\r\nbreak=20\r\n", b"a=b=b\r\nsoftbreak \r\n"),
        (b"Quoted-Printable", b"x= \r\ny=zz=", b"xy=zz="),  # invalid escapes stay as they were
        (b"7bit", b"raw=3D", b"raw=3D"),
        (b"binary", b"\xff\x00", b"\xff\x00"),
        (None, b"x", b"x"),
    ],
)
def test_decode_transfer_encoding(cte: bytes | None, data: bytes, expected: bytes) -> None:
    assert decode_transfer_encoding(cte, data) == expected


def test_decode_base64_roundtrip() -> None:
    blob = bytes(range(256)) * 3
    assert decode_transfer_encoding(b"base64", base64.encodebytes(blob)) == blob
    assert decode_transfer_encoding(b"x-unknown", b"") == BinaryError(b"x-unknown")
