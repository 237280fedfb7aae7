"""The same client input, whole, split at every offset and byte by byte, gives identical results."""

from __future__ import annotations

import pytest
from smtp_dialog import b64, config, feed_pieces

from mailroom.wire.smtp.events import BodyEnd, Event, ProtocolViolation
from mailroom.wire.smtp.server import ServerConfig

PLAIN = b64(b"\0user\0secret").encode()

STREAMS: dict[str, tuple[bytes, ServerConfig]] = {
    "pipelined-data": (
        b"EHLO client.example\r\nMAIL FROM:<a@b.example> SIZE=100\r\nRCPT TO:<reject@x.example>\r\n"
        b"RCPT TO:<ok@x.example>\r\nDATA\r\n"
        b"Subject: dots\r\n\r\n.\r\n..\r\n...x\r\nend.\r\n.\r\n"
        b"MAIL FROM:<>\r\nRCPT TO:<Postmaster>\r\nDATA\r\n.\r\nQUIT\r\n",
        config(),
    ),
    "bdat": (
        b"EHLO c\r\nMAIL FROM:<a@b.example> BODY=BINARYMIME\r\nRCPT TO:<c@d.example>\r\n"
        b"BDAT 7\r\n\x00\r\n.\r\nBDAT 0\r\nBDAT 4 LAST\r\nQUITNOOP\r\n"
        b"MAIL FROM:<a@b.example>\r\nRCPT TO:<reject@d.example>\r\nBDAT 5 LAST\r\nRSET\r\nRSET\r\n",
        config(),
    ),
    "errors-and-limits": (
        b"BOGUS\r\nMAIL FROM:<a@b>\r\nHELO c\r\nNOOP " + b"x" * 80 + b"\r\nNOOP\r\n"
        b"MAIL FROM:<a@b.example> SIZE=999999\r\nMAIL FROM:<a@b.example> FOO\r\n"
        b"MAIL FROM:<a@b.example>\r\nDATA\r\nRCPT TO:<c@d.example>\r\nDATA\r\n"
        b"0123456789012345678901234567890123456789\r\n.\r\nNOOP\r\n",
        config(max_command_line=64, max_message_size=30),
    ),
    "auth": (
        b"EHLO c\r\nAUTH PLAIN\r\n*\r\nAUTH LOGIN\r\n"
        + b64(b"user").encode()
        + b"\r\n"
        + b64(b"secret").encode()
        + b"\r\nMAIL FROM:<a@b.example> AUTH=<>\r\nQUIT\r\n",
        config(tls_active=True, auth_mechanisms=("PLAIN", "LOGIN"), auth_required=True),
    ),
    "smuggling": (
        b"HELO c\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nDATA\r\n"
        b"x\n.\nMAIL FROM:<evil@x>\r\nx\r.\r\n.\r\nNOOP\r\n",
        config(),
    ),
    "too-many-errors": (b"A\r\nB\r\nC\r\nD\r\nNOOP\r\n", config(max_errors=3)),
}


@pytest.mark.parametrize("name", list(STREAMS))
def test_split_everywhere(name: str) -> None:
    data, cfg = STREAMS[name]
    whole = feed_pieces([data], cfg)
    for i in range(len(data) + 1):
        assert feed_pieces([data[:i], data[i:]], cfg) == whole, i
    assert feed_pieces([data[i : i + 1] for i in range(len(data))], cfg) == whole
    for step in (2, 3, 7):
        assert feed_pieces([data[i : i + step] for i in range(0, len(data), step)], cfg) == whole


def _kinds(events: list[Event]) -> list[str]:
    return [type(e).__name__ for e in events]


def test_streams_do_what_they_claim() -> None:
    # Guard against the split tests passing on streams that only produce errors.
    events, out = feed_pieces([STREAMS["pipelined-data"][0]], STREAMS["pipelined-data"][1])
    assert _kinds(events).count("BodyEnd") == 2
    assert out.count(b"250 2.0.0 Ok: queued") == 2
    events, out = feed_pieces([STREAMS["bdat"][0]], STREAMS["bdat"][1])
    assert BodyEnd() in events and out.count(b"503 5.5.1 No valid recipients") == 1
    events, out = feed_pieces([STREAMS["auth"][0]], STREAMS["auth"][1])
    assert b"235 2.7.0" in out and b"250 2.1.0 Ok" in out
    events, out = feed_pieces([STREAMS["smuggling"][0]], STREAMS["smuggling"][1])
    assert b"550 5.5.2" in out and not any(isinstance(e, ProtocolViolation) for e in events)
    events, out = feed_pieces([STREAMS["too-many-errors"][0]], STREAMS["too-many-errors"][1])
    assert out.endswith(b"421 4.7.0 Too many errors, closing connection\r\n")
