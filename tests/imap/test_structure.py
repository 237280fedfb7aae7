"""Section addressing over the cached part tree, header helpers and transfer decoding."""

from __future__ import annotations

import base64
import quopri

import pytest

from mailroom.imap.structure import (
    PartMap,
    StreamDecoder,
    UnknownEncoding,
    compute,
    decode_transfer,
    filter_header,
    header_end,
)

NESTED = (
    b"From: a@example.org\r\nSubject: outer\r\nMIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="o"\r\n\r\n'
    b"--o\r\nContent-Type: text/plain\r\n\r\nfirst\r\n"
    b"--o\r\nContent-Type: message/rfc822\r\n\r\n"
    b'Subject: inner\r\nContent-Type: multipart/alternative; boundary="i"\r\n\r\n'
    b"--i\r\nContent-Type: text/plain\r\n\r\ninner plain\r\n"
    b"--i\r\nContent-Type: text/html\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    + base64.encodebytes(b"<b>inner html</b>").replace(b"\n", b"\r\n")
    + b"--i--\r\n"
    b"--o--\r\n"
)


def part_bytes(data: bytes, pm: PartMap, path: tuple[int, ...]) -> bytes:
    part = pm.find(path)
    assert part is not None
    return data[part.header_end : part.body_end]


def test_nested_sections_follow_dovecot() -> None:
    entry = compute(NESTED)
    pm = PartMap(entry.parts)
    assert part_bytes(NESTED, pm, (1,)) == b"first"
    inner_message = part_bytes(NESTED, pm, (2,))
    assert inner_message.startswith(b"Subject: inner\r\n")  # BODY[2] is the whole inner message
    assert part_bytes(NESTED, pm, (2, 1)) == b"inner plain"  # 2.1: first part of the inner multipart
    html = pm.find((2, 2))
    assert html is not None and html.encoding == "base64" and html.binary_size == len(b"<b>inner html</b>")
    assert pm.find((3,)) is None and pm.find((1, 2)) is None and pm.find((2, 3)) is None
    assert pm.find((1, 1)) is pm.find((1,))  # a non-multipart part has only part 1: itself
    inner = pm.message_of((2,))
    assert inner is not None and NESTED[inner.offset : inner.header_end].startswith(b"Subject: inner")
    assert pm.message_of((1,)) is None and pm.message_of(()) is pm.root
    assert [p.ctype for p in pm.text_parts()] == ["text/plain", "text/plain", "text/html"]
    assert entry.envelope.startswith(b'(NIL "outer" ')
    single = PartMap(compute(b"Subject: x\r\n\r\nbody\r\n").parts)
    assert single.find((1,)) is single.root


def test_header_end_and_fields() -> None:
    assert header_end(b"A: b\r\n\r\nbody") == 8
    assert header_end(b"A: b\n\nbody") == 6
    assert header_end(b"\r\nbody") == 2
    assert header_end(b"A: b\r\nB: c\r\n") is None  # not in this prefix (or no body at all)
    header = b"From: a\r\nSubject: one\r\n two\r\nTo: z\r\nsubject: again\r\n\r\n"
    assert filter_header(header, ["SUBJECT"], False) == b"Subject: one\r\n two\r\nsubject: again\r\n\r\n"
    assert filter_header(header, ["subject", "to"], True) == b"From: a\r\n\r\n"
    assert filter_header(header, ["X-None"], False) == b"\r\n"


def test_transfer_decoding_whole_and_streamed() -> None:
    payload = bytes(range(256)) * 50
    b64 = base64.encodebytes(payload).replace(b"\n", b"\r\n")
    assert decode_transfer("BASE64", b64) == payload
    assert decode_transfer("base64", b"QUJD\r\nRA=\r\n= trailing garbage") == b"ABCD"
    assert decode_transfer("base64", b"QUJDR") == b"ABC"  # a dangling sixth of a byte is dropped
    text = ("na\u00efve caf\u00e9 " * 300).encode()
    qp = quopri.encodestring(text).replace(b"\n", b"\r\n")
    assert decode_transfer("quoted-printable", qp) == text
    for encoded, enc, want in ((b64, "base64", payload), (qp, "quoted-printable", text)):
        for step in (1, 7, 76, 1000):
            d = StreamDecoder(enc)
            out = b"".join(d.feed(encoded[i : i + step]) for i in range(0, len(encoded), step)) + d.finish()
            assert out == want, (enc, step)
    assert decode_transfer("8bit", b"raw") == b"raw"
    with pytest.raises(UnknownEncoding):
        decode_transfer("x-uuencode", b"")
    with pytest.raises(UnknownEncoding):
        StreamDecoder("x-uuencode")
