"""IMAP engine and string syntax: APPEND literals (synchronizing, LITERAL+ and literal8, one or
several messages) deliver exactly their octets whatever the split, with the same events and the
same bytes sent; what we serialise as an astring or a mailbox name parses back to the same value."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from mailroom.wire.imap import commands as c
from mailroom.wire.imap.engine import IMAPServerConfig, IMAPServerEngine
from mailroom.wire.imap.events import (
    NEED_DATA,
    PAUSED,
    AppendAborted,
    AppendBegin,
    AppendChunk,
    AppendEnd,
    ConnectionClosed,
    ProtocolViolation,
)
from mailroom.wire.imap.parser import ParseError, parse_command
from mailroom.wire.imap.responses import Tagged, encode_mailbox
from mailroom.wire.imap.syntax import astring, nstring, quoted
from tests.fuzz.fuzzing import fuzz_settings, fuzzed
from tests.reliability.support import scale

pytestmark = pytest.mark.timeout(scale(300, 7200))  # soak runs take long


def drive(pieces: list[bytes], append_limit: int = 4096) -> tuple[list[object], bytes]:
    """An authenticated session that answers every command OK; returns (events, output)."""
    eng = IMAPServerEngine(
        IMAPServerConfig(tls_active=True, starttls_available=False, append_limit=append_limit)
    )
    eng.logged_in()
    events: list[object] = []
    data = bytearray()
    out = bytearray()
    for piece in [*(p for p in pieces if p), b""]:
        eng.receive_data(piece)
        while True:
            ev = eng.next_event()
            if ev is NEED_DATA or ev is PAUSED:
                break
            if isinstance(ev, AppendChunk):
                data += ev.data
                continue
            if isinstance(ev, AppendEnd | AppendAborted):
                events.append(("message", bytes(data)))
                data.clear()
            events.append(ev)
            if isinstance(ev, ConnectionClosed):
                break
            if isinstance(ev, AppendEnd) and ev.last:
                eng.send(Tagged(ev.tag, "OK", "APPEND completed"))
            elif isinstance(ev, c.Command):
                eng.send(Tagged(ev.tag, "OK", "done"))
        out += eng.data_to_send()
    return events, bytes(out)


def cut(data: bytes, points: list[int]) -> list[bytes]:
    edges = sorted({p % (len(data) + 1) for p in points})
    return [data[a:b] for a, b in itertools.pairwise([0, *edges, len(data)])]


@st.composite
def append_command(draw: st.DrawFn) -> tuple[bytes, list[bytes]]:
    """An APPEND (MULTIAPPEND when several) and the message octets it carries."""
    messages = draw(st.lists(st.binary(min_size=1, max_size=300), min_size=1, max_size=3))
    wire = b"a1 APPEND INBOX"
    for message in messages:
        flags = draw(st.sampled_from([b"", b" (\\Seen)", b' () "01-Jan-2024 10:00:00 +0000"']))
        form = draw(st.sampled_from(["sync", "plus", "binary"] if b"\0" not in message else ["binary"]))
        if form == "binary":
            head = b" ~{%d}\r\n" % len(message)
        elif form == "plus":
            head = b" {%d+}\r\n" % len(message)
        else:
            head = b" {%d}\r\n" % len(message)
        wire += flags + head + message
    return wire + b"\r\na2 NOOP\r\n", messages


@fuzz_settings(400)
@given(command=append_command(), points=st.lists(st.integers(0, 2000), max_size=8))
def test_append_literals_arrive_exactly_and_split_invariantly(
    command: tuple[bytes, list[bytes]], points: list[int]
) -> None:
    fuzzed("imap engine")
    wire, messages = command
    whole = drive([wire])
    assert drive(cut(wire, points)) == whole
    got = [e[1] for e in whole[0] if isinstance(e, tuple)]
    assert got == messages, whole
    begins = [e for e in whole[0] if isinstance(e, AppendBegin)]
    assert [b.size for b in begins] == [len(m) for m in messages]
    assert not any(isinstance(e, ProtocolViolation) for e in whole[0])
    assert b"a1 OK" in whole[1] and b"a2 OK" in whole[1]


@fuzz_settings(200)
@given(
    size=st.integers(0, 10_000),
    form=st.sampled_from([b"{%d}", b"{%d+}", b"~{%d}"]),
    tail=st.binary(max_size=200),
    points=st.lists(st.integers(0, 12_000), max_size=6),
)
def test_oversized_or_broken_appends_resynchronise(
    size: int, form: bytes, tail: bytes, points: list[int]
) -> None:
    """Over the limit (4096 here), or followed by garbage: the engine refuses or aborts, stays in
    sync with the client (later commands are answered), and any split gives the same result."""
    fuzzed("imap engine")
    wire = b"a1 APPEND INBOX " + form % size + b"\r\n" + b"x" * size + tail + b"\r\na2 NOOP\r\n"
    whole = drive([wire])
    assert drive(cut(wire, points)) == whole
    messages = [e[1] for e in whole[0] if isinstance(e, tuple)]
    assert all(len(m) <= 4096 for m in messages)


text_values = st.text(st.characters(codec="utf-8"), max_size=40)


@fuzz_settings(500)
@given(user=st.binary(max_size=40), password=st.binary(max_size=40))
def test_astring_round_trip(user: bytes, password: bytes) -> None:
    """Whatever astring() writes, the parser reads back byte for byte (atoms, quoted, literals)."""
    assume(b"\0" not in user + password)
    try:
        u, p = user.decode("utf-8"), password.decode("utf-8")
    except UnicodeDecodeError:
        assume(False)
        return
    assume(u and p)
    fuzzed("imap syntax")
    command = parse_command(b"a LOGIN " + astring(user) + b" " + astring(password) + b"\r\n", utf8=True)
    assert isinstance(command, c.Login)
    assert (command.username, command.password) == (u, p)


@fuzz_settings(500)
@given(name=text_values, utf8=st.booleans())
def test_mailbox_names_round_trip(name: str, utf8: bool) -> None:
    assume(name and not any(ch in "\r\n\0" for ch in name))
    fuzzed("imap syntax")
    command = parse_command(b"a SELECT " + encode_mailbox(name, utf8=utf8) + b"\r\n", utf8=utf8)
    assert isinstance(command, c.Select)
    assert command.mailbox == ("INBOX" if name.upper() == "INBOX" else name)


@fuzz_settings(300)
@given(value=st.one_of(st.none(), st.binary(max_size=60)), utf8=st.booleans())
def test_quoted_and_nstring_are_well_formed(value: bytes | None, utf8: bool) -> None:
    """RFC 9051 §4.3: a quoted string never holds CR, LF or NUL, and escapes only \\ and "."""
    fuzzed("imap syntax")
    out = nstring(value, utf8=utf8)
    if value is None:
        assert out == b"NIL"
        return
    assert out == quoted(value, utf8=utf8)
    if out.startswith(b"{"):
        size, _, rest = out[1:].partition(b"}\r\n")
        assert int(size) == len(value) and rest == value
        return
    inner = out[1:-1]
    assert out[:1] == out[-1:] == b'"'
    assert not any(ch in inner for ch in b"\r\n\0")
    assert inner.replace(b'\\"', b"").replace(b"\\\\", b"").count(b'"') == 0
    try:
        parsed = parse_command(b"a LOGIN x " + out + b"\r\n", utf8=True)
    except ParseError:
        assume(False)  # not UTF-8: the parser refuses it as a password, fine
        return
    assert isinstance(parsed, c.Login) and parsed.password.encode() == value
