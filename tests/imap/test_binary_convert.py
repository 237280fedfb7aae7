"""BINARY of parts that have parts of their own (multipart/*, message/rfc822) and of a whole
message. RFC 9051 §6.4.5 asks clients for leaf parts only and RFC 3516 §4.2 says nothing of
others; mailroom answers as Dovecot does: the stored octets with every leaf body in the subtree
decoded and the header of each decoded part saying ``Content-Transfer-Encoding: binary``. The
expected bytes below are what Dovecot 2.3 (../shared/peers) sends for the same message."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterator

import pytest

from mailroom.imap.structure import binary_header
from mailroom.store import directory
from mailroom.store.database import transaction
from tests.imap.raw_client import RawIMAP, fetch_items
from tests.server_fixture import PASSWORD, RunningServer, running_server

MSG = (
    b"From: a@example.org\r\nSubject: mp\r\nMIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="outer"\r\n\r\npreamble\r\n'
    b'--outer\r\nContent-Type: multipart/alternative; boundary="inner"\r\n\r\n'
    b"--inner\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\naGVsbG8gd29ybGQ=\r\n"
    b"--inner\r\nContent-Type: text/html\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n<b>h=C3=A9</b>\r\n"
    b"--inner--\r\n"
    b"--outer\r\nContent-Type: message/rfc822\r\n\r\n"
    b"Subject: inner\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\naW5uZXI=\r\n"
    b"--outer--\r\n"
)
PART1 = (
    b"--inner\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: binary\r\n\r\nhello world\r\n"
    b"--inner\r\nContent-Type: text/html\r\nContent-Transfer-Encoding: binary\r\n\r\n<b>h\xc3\xa9</b>\r\n"
    b"--inner--\r\n"
)
PART2 = b"Subject: inner\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: binary\r\n\r\ninner"
WHOLE = (
    b"From: a@example.org\r\nSubject: mp\r\nMIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="outer"\r\n\r\npreamble\r\n'
    b'--outer\r\nContent-Type: multipart/alternative; boundary="inner"\r\n\r\n'
    + PART1
    + b"--outer\r\nContent-Type: message/rfc822\r\n\r\n"
    + PART2
    + b"\r\n--outer--\r\n"
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with running_server(tmp_path_factory.mktemp("imap-binary"), services=("smtp", "imaps")) as srv:
        yield srv


def session(server: RunningServer, *messages: bytes) -> RawIMAP:
    address = f"b{uuid.uuid4().hex[:10]}@example.org"
    conn = server.db()
    try:
        with transaction(conn):
            directory.add_account(conn, address, PASSWORD)
    finally:
        conn.close()
    c = RawIMAP(server.ports["imaps"])
    c.login(address, PASSWORD)
    for message in messages:
        c.send(b"a APPEND INBOX {%d+}\r\n" % len(message) + message + b"\r\n")
        assert c.until("a")[-1].startswith(b"a OK")
    assert c.command("SELECT INBOX")[-1].startswith(b"t OK")
    return c


def fetch(c: RawIMAP, items: str, seq: int = 1) -> dict[str, bytes]:
    lines = c.command(f"FETCH {seq} ({items})")
    assert lines[-1].startswith(b"t OK"), lines[-1]
    return fetch_items(lines[0])


def octets(value: bytes) -> bytes:
    """What fetch_items gave for a string or a literal: its octets."""
    return value[1:-1] if value.startswith(b'"') else value


def test_binary_of_multipart_message_and_whole_as_dovecot(server: RunningServer) -> None:
    c = session(server, MSG)
    got = fetch(c, "BINARY.PEEK[1] BINARY.SIZE[1] BINARY.PEEK[2] BINARY.SIZE[2] BINARY.PEEK[] BINARY.SIZE[]")
    assert octets(got["BINARY[1]"]) == PART1 and got["BINARY.SIZE[1]"] == b"%d" % len(PART1) == b"179"
    assert octets(got["BINARY[2]"]) == PART2 and got["BINARY.SIZE[2]"] == b"84"
    assert octets(got["BINARY[]"]) == WHOLE and got["BINARY.SIZE[]"] == b"497"
    # leaves as before; a partial fetch counts in the converted octets
    got = fetch(c, "BINARY.PEEK[1.1] BINARY.PEEK[2.1] BINARY.PEEK[1]<40.30> BINARY.PEEK[]<480.100>")
    assert octets(got["BINARY[1.1]"]) == b"hello world" and octets(got["BINARY[2.1]"]) == b"inner"
    assert octets(got["BINARY[1]<40>"]) == PART1[40:70]
    assert octets(got["BINARY[]<480>"]) == WHOLE[480:]
    # BODY[] is untouched
    assert octets(fetch(c, "BODY.PEEK[]")["BODY[]"]) == MSG
    c.close()


def test_large_converted_part_is_streamed(server: RunningServer) -> None:
    """A converted part over the inline limit goes out in chunks, decoded across them."""
    attachment = bytes(range(256)) * 2000  # 512,000 octets, NULs included: a literal8
    encoded = base64.encodebytes(attachment).replace(b"\n", b"\r\n")
    message = (
        b'Subject: big\r\nContent-Type: multipart/mixed; boundary="b"\r\n\r\n'
        b"--b\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n"
        b"--b\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        + encoded
        + b"--b--\r\n"
    )
    c = session(server, message)
    header = b"--b\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: binary\r\n\r\n"
    head = (
        b"Subject: big\r\n" + message.split(b"Subject: big\r\n", 1)[1].split(b"--b\r\nContent-Type: app")[0]
    )
    # the CRLF before a boundary belongs to the boundary (RFC 2046 §5.1.1): it stays
    whole = head + header + attachment + b"\r\n--b--\r\n"
    got = fetch(c, "BINARY.SIZE[] BINARY.PEEK[]")
    assert got["BINARY.SIZE[]"] == b"%d" % len(whole)
    assert octets(got["BINARY[]"]) == whole
    got = fetch(c, "BINARY.PEEK[]<100.300000>")
    assert octets(got["BINARY[]<100>"]) == whole[100:300100]
    c.close()


def test_unknown_encoding_anywhere_below_is_unknown_cte(server: RunningServer) -> None:
    message = (
        b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
        b"--b\r\nContent-Type: text/plain\r\n\r\nfine\r\n"
        b"--b\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: x-uuencode\r\n\r\nbegin 644 x\r\n"
        b"--b--\r\n"
    )
    c = session(server, message)
    for item in ("BINARY.PEEK[]", "BINARY.SIZE[]", "BINARY.PEEK[2]"):
        assert c.command(f"FETCH 1 ({item})")[-1].startswith(b"t NO [UNKNOWN-CTE]"), item
    assert octets(fetch(c, "BINARY.PEEK[1]")["BINARY[1]"]) == b"fine"
    c.close()


def test_binary_header_rewrites_only_the_encoding() -> None:
    assert (
        binary_header(b"Content-Type: text/plain\r\nContent-Transfer-Encoding:\r\n base64\r\nX-A: b\r\n\r\n")
        == b"Content-Type: text/plain\r\nX-A: b\r\nContent-Transfer-Encoding: binary\r\n\r\n"
    )
    assert binary_header(b"\r\n") == b"Content-Transfer-Encoding: binary\r\n\r\n"
