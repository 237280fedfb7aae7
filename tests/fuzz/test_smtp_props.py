"""SMTP server engine: random command streams (pipelined, with bodies, BDAT chunks and AUTH)
give the same events and the same bytes whether they arrive whole, split at random offsets or
byte by byte; message content survives DATA dot-stuffing and BDAT exactly."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailroom.wire.smtp.events import (
    NEED_DATA,
    PAUSED,
    AuthResponse,
    AuthStart,
    BodyChunk,
    BodyEnd,
    ConnectionClosed,
    Event,
    Hello,
    MailFrom,
    RcptTo,
    StartTLS,
)
from mailroom.wire.smtp.replies import reply
from mailroom.wire.smtp.server import ServerConfig, SMTPServerEngine
from tests.fuzz.fuzzing import fuzz_settings, fuzzed
from tests.reliability.support import scale

pytestmark = pytest.mark.timeout(scale(300, 7200))  # soak runs take long

CFG = ServerConfig(
    hostname="mx.example",
    max_message_size=2000,
    tls_active=True,
    auth_mechanisms=("PLAIN", "LOGIN"),
    max_command_line=200,
    max_errors=12,
)


def drive(pieces: list[bytes], cfg: ServerConfig = CFG) -> tuple[list[object], bytes]:
    """Feed the pieces, then EOF; decide every event deterministically from its content."""
    eng = SMTPServerEngine(cfg)
    eng.greeting()
    out = bytearray(eng.data_to_send())
    events: list[object] = []
    body = bytearray()
    for piece in [*(p for p in pieces if p), b""]:
        eng.receive_data(piece)
        for _ in range(100_000):
            ev = eng.next_event()
            if ev is NEED_DATA:
                break
            assert ev is not PAUSED, "paused though STARTTLS is never accepted here"
            if isinstance(ev, ConnectionClosed):
                if not events or not isinstance(events[-1], ConnectionClosed):
                    events.append(ev)
                break
            if isinstance(ev, BodyChunk):
                body += ev.data  # chunk boundaries depend on the split: record the whole body
                continue
            if isinstance(ev, BodyEnd):
                events.append(("body", bytes(body)))
                eng.reject(reply(554, "5.7.1", "no")) if b"REJECT" in body else eng.accept()
                body.clear()
                continue
            events.append(ev)
            decide(eng, ev)
        else:
            raise AssertionError("the engine made no progress")
        out += eng.data_to_send()
    return events, bytes(out)


def decide(eng: SMTPServerEngine, ev: Event | object) -> None:
    match ev:
        case Hello(name=name) | MailFrom(address=name):
            eng.reject(reply(550, "5.7.1", "no")) if name.startswith("bad") else eng.accept()
        case RcptTo(address=address):
            eng.reject(reply(550, "5.1.1", "no")) if address.startswith("reject") else eng.accept()
        case StartTLS():
            eng.reject(reply(454, "4.7.0", "not now"))
        case AuthStart(initial=None):
            eng.auth_challenge(b"")
        case AuthStart(initial=data) | AuthResponse(data=data):
            eng.accept() if data == b"\0user\0secret" else eng.reject(reply(535, "5.7.8", "no"))
        case _:
            pass


LINES = st.sampled_from(
    [
        b"EHLO c.example\r\n",
        b"HELO bad.example\r\n",
        b"MAIL FROM:<a@b.example>\r\n",
        b"MAIL FROM:<bad@b>\r\n",
        b"MAIL FROM:<> BODY=BINARYMIME SMTPUTF8\r\n",
        b"MAIL FROM:<a@b.example> SIZE=5000\r\n",
        b"RCPT TO:<c@d.example>\r\n",
        b"RCPT TO:<reject@d.example>\r\n",
        b"RCPT TO:<Postmaster>\r\n",
        b"DATA\r\n",
        b"RSET\r\n",
        b"NOOP\r\n",
        b"VRFY x\r\n",
        b"STARTTLS\r\n",
        b"AUTH PLAIN AHVzZXIAc2VjcmV0\r\n",
        b"AUTH PLAIN\r\n",
        b"AHVzZXIAc2VjcmV0\r\n",
        b"*\r\n",
        b"AUTH LOGIN\r\n",
        b"QUIT\r\n",
        b"BOGUS\r\n",
        b"x" * 250 + b"\r\n",
        b"bare\n",
        b"\r\n",
        b".\r\n",
        b"..\r\n",
        b"REJECT\r\n",
        b"\x00\xff\r\n",
    ]
)


@st.composite
def bdat(draw: st.DrawFn) -> bytes:
    data = draw(st.binary(max_size=60))
    last = draw(st.booleans())
    return b"BDAT %d%s\r\n" % (len(data), b" LAST" if last else b"") + data


STREAMS = st.lists(st.one_of(LINES, LINES, bdat()), max_size=25).map(b"".join)


def cut(data: bytes, points: list[int]) -> list[bytes]:
    edges = sorted({p % (len(data) + 1) for p in points})
    return [data[a:b] for a, b in itertools.pairwise([0, *edges, len(data)])]


@fuzz_settings(400)
@given(data=STREAMS, points=st.lists(st.integers(0, 5000), max_size=10))
def test_split_invariance(data: bytes, points: list[int]) -> None:
    fuzzed("smtp engine")
    assert drive(cut(data, points)) == drive([data])


@fuzz_settings(100)
@given(data=STREAMS)
def test_byte_by_byte(data: bytes) -> None:
    fuzzed("smtp engine")
    assert drive([bytes([b]) for b in data]) == drive([data])


@fuzz_settings(300)
@given(
    lines=st.lists(
        st.binary(max_size=40).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"")), max_size=20
    ),
    points=st.lists(st.integers(0, 2000), max_size=6),
)
def test_data_dot_stuffing_round_trip(lines: list[bytes], points: list[int]) -> None:
    """Any CRLF text, dot-stuffed by the client (RFC 5321 §4.5.2), arrives unchanged."""
    fuzzed("smtp engine")
    message = b"".join(line + b"\r\n" for line in lines)
    stuffed = b"".join((b"." + line if line.startswith(b".") else line) + b"\r\n" for line in lines)
    wire = (
        b"EHLO c\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nDATA\r\n" + stuffed + b".\r\nQUIT\r\n"
    )
    events, out = drive(cut(wire, points), ServerConfig("mx.example", max_message_size=100_000))
    bodies = [e[1] for e in events if isinstance(e, tuple)]
    assert bodies == [message]
    assert out.endswith(b"221 2.0.0 Bye\r\n") or b"221 " in out


@fuzz_settings(300)
@given(
    chunks=st.lists(st.binary(max_size=300), min_size=1, max_size=5),
    points=st.lists(st.integers(0, 3000), max_size=8),
)
def test_bdat_content_is_exact(chunks: list[bytes], points: list[int]) -> None:
    """RFC 3030: BDAT bytes are taken as they are, whatever they contain and however they arrive."""
    fuzzed("smtp engine")
    wire = b"EHLO c\r\nMAIL FROM:<a@b.example> BODY=BINARYMIME\r\nRCPT TO:<c@d.example>\r\n"
    for i, chunk in enumerate(chunks):
        wire += b"BDAT %d%s\r\n" % (len(chunk), b" LAST" if i == len(chunks) - 1 else b"") + chunk
    events, _ = drive(cut(wire + b"QUIT\r\n", points), ServerConfig("mx.example", max_message_size=100_000))
    bodies = [e[1] for e in events if isinstance(e, tuple)]
    assert bodies == [b"".join(chunks)]
